"""`CDTMTrainingArguments`: `transformers.TrainingArguments` with the fields of the CDTM paper's fine-tuning modes
(Sec. II-B) and its hyperparameters as defaults (Sec. III-E), every field checked once, on construction.

`cdtm_hf.training.stages.stage_plan` turns a mode into its stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import TrainingArguments

from ..core.configuration_cdtm import FieldError
from .feature_cache import CACHE_DTYPES
from .stages import FINETUNE_MODES


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise FieldError(field, message)


def _parse_norm_eval(value: Any) -> str | bool:
    """`backbone_norm_eval` from Python or a command line / grid file: "auto", a bool, or "true"/"false"."""
    text = value if isinstance(value, bool) else str(value).strip().lower()
    if isinstance(text, bool) or text in ("auto", "true", "false", "1", "0", "yes", "no"):
        return text if text in (True, False, "auto") else text in ("true", "1", "yes")
    raise FieldError(
        "backbone_norm_eval", f"backbone_norm_eval {value!r} is not one of: auto, True, False; use auto (fixed BatchNorm statistics after "
        "a frozen stage), True (always while the backbone trains) or False (never)"
    )


def _check_lora_fields(args: Any) -> None:
    """The issue-20 fields: stage2_method and the LoRA hyperparameters."""
    _require(args.stage2_method in ("full", "lora"), "stage2_method",
             f"stage2_method {args.stage2_method!r} is not one of: full, lora")
    if args.stage2_method != "lora":
        return
    _require(args.finetune_mode == "sft", "stage2_method",
             f"stage2_method lora adapts SFT's stage 2; finetune_mode={args.finetune_mode!r} has no stage 2 (use "
             "--finetune_mode sft, or --stage2_method full)")
    _require(args.lora_r >= 1, "lora_r", f"lora_r must be >= 1, got {args.lora_r}")
    _require(args.lora_alpha > 0, "lora_alpha", f"lora_alpha must be > 0, got {args.lora_alpha}")
    _require(0 <= args.lora_dropout < 1, "lora_dropout", f"lora_dropout must be in [0, 1), got {args.lora_dropout}")
    import importlib.util

    _require(importlib.util.find_spec("peft") is not None, "stage2_method",
             "stage2_method lora needs peft: pip install 'cdtm_hf[lora]' (or pip install peft)")


@dataclass
class CDTMTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the fine-tuning fields of the CDTM paper; defaults follow Sec. III-E."""

    finetune_mode: str = field(default="sft", metadata={"help": f"one of {', '.join(FINETUNE_MODES)}"})
    stage1_epochs: float = field(default=25, metadata={"help": "SFT stage 1 (frozen backbone) epochs"})
    stage2_epochs: float = field(default=50, metadata={"help": "SFT stage 2 (everything) epochs"})
    stage2_learning_rate: float | None = field(
        default=None, metadata={"help": "SFT stage 2 learning rate; default learning_rate / 10 (official code)"}
    )
    backbone_lr_multiplier: float = field(
        default=1.0, metadata={"help": "the backbone's learning rate relative to CDTM/head when it trains"}
    )
    warmup_epochs: float = field(default=5, metadata={"help": "linear warmup at the start of each stage"})
    stage2_from_best: bool = field(
        default=True, metadata={"help": "start stage 2 from stage 1's best-on-validation weights"}
    )
    backbone_norm_eval: Literal["auto", True, False] = field(
        default="auto",
        metadata={"help": "keep the backbone's BatchNorm running statistics fixed while it trains. auto: only in a "
                  "stage that follows a frozen stage (SFT stage 2), where CDTM and the head were trained on "
                  "features computed with those statistics; True: whenever the backbone trains; False: never"},
    )
    augment: bool = field(default=False, metadata={"help": "random training augmentation (timm's train transform)"})
    feature_cache: bool = field(
        default=True,
        metadata={"help": "cache frozen-backbone tokens on disk and reuse them on later frozen epochs "
                  "(used only without random augmentation, and only where the free disk can hold it)"},
    )
    feature_cache_dir: str | None = field(default=None, metadata={"help": "default: <output_dir>/feature_cache"})
    feature_cache_dtype: Literal["float16", "float32"] = field(
        default="float16", metadata={"help": "storage dtype of the feature cache (float16: half the disk)"}
    )

    # Defaults of the paper (Sec. III-E) and of a sensible run.
    learning_rate: float = 1e-4
    weight_decay: float = 1e-3
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 16
    num_train_epochs: float = 75
    lr_scheduler_type: str = "cosine"
    # One fused kernel per step: the CCA bases alone are n*p*p parameters (11.5 M for ViT-B/16), and the per-tensor
    # AdamW loop over them costs more than their forward pass (benchmarks/stage_step.py).
    optim: str = "adamw_torch_fused"
    eval_strategy: str = "epoch"
    save_strategy: str = "epoch"
    logging_strategy: str = "steps"
    logging_steps: float = 10
    load_best_model_at_end: bool = True
    metric_for_best_model: str | None = "f1"
    greater_is_better: bool | None = None
    save_total_limit: int | None = 2
    report_to: None | str | list[str] = "tensorboard"
    remove_unused_columns: bool = False
    label_names: list[str] | None = field(default_factory=lambda: ["labels"])

    # issue 20: a parameter-efficient SFT stage 2 (cdtm_hf.training.lora)
    stage2_method: Literal["full", "lora"] = field(
        default="full", metadata={"help": "SFT stage 2: full (every backbone weight trains) or lora (LoRA adapters on "
                                  "the backbone's linear layers through peft; CDTM and the head train fully)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank of stage 2 (--stage2_method lora)"})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA scaling alpha (the update is alpha / r * BA)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch"})
    lora_target_modules: str | None = field(
        default=None, metadata={"help": "comma-separated leaf names of the backbone's Linear layers to adapt; "
                                "default per family: timm qkv,proj,fc1,fc2; transformers query,key,value,dense"})

    def __post_init__(self):
        """Refuse a run that would fail, train nothing or diverge by construction, naming the field and the remedy;
        then `TrainingArguments`' own checks."""
        _require(self.finetune_mode in FINETUNE_MODES, "finetune_mode",
                 f"finetune_mode {self.finetune_mode!r} is not one of: {', '.join(FINETUNE_MODES)}")
        sft = self.finetune_mode == "sft"
        if sft:
            _require(bool(self.stage1_epochs) and self.stage1_epochs > 0, "stage1_epochs",
                     f"sft needs stage1_epochs > 0, got {self.stage1_epochs}")
            _require(bool(self.stage2_epochs) and self.stage2_epochs > 0, "stage2_epochs",
                     f"sft needs stage2_epochs > 0, got {self.stage2_epochs}; use finetune_mode='lp' for a frozen "
                     "backbone only")
            _require(not (self.max_steps and self.max_steps > 0), "max_steps",
                     f"max_steps={self.max_steps} would cut both SFT stages at the same step count; set "
                     "--stage1_epochs and --stage2_epochs instead")
        else:
            _require(self.max_steps > 0 or self.num_train_epochs > 0, "num_train_epochs",
                     f"num_train_epochs must be > 0 for finetune_mode={self.finetune_mode!r}, got "
                     f"{self.num_train_epochs}; a run that trains nothing would save and card an untrained model "
                     "(use --do_train False to evaluate a saved model)")
        _require(self.learning_rate > 0, "learning_rate",
                 f"learning_rate must be > 0, got {self.learning_rate} (the paper uses 1e-4)")
        _require(self.stage2_learning_rate is None or self.stage2_learning_rate > 0, "stage2_learning_rate",
                 f"stage2_learning_rate must be > 0, got {self.stage2_learning_rate}; leave it out for "
                 "learning_rate / 10")
        _require(self.weight_decay >= 0, "weight_decay",
                 f"weight_decay must be >= 0, got {self.weight_decay} (the paper uses 1e-3)")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            _require(getattr(self, name) >= 1, name, f"{name} must be >= 1, got {getattr(self, name)}")
        _require(self.warmup_epochs >= 0, "warmup_epochs", f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        _require(self.backbone_lr_multiplier > 0, "backbone_lr_multiplier",
                 f"backbone_lr_multiplier must be > 0, got {self.backbone_lr_multiplier}")
        self.backbone_norm_eval = _parse_norm_eval(self.backbone_norm_eval)
        _require(self.feature_cache_dtype in CACHE_DTYPES, "feature_cache_dtype",
                 f"feature_cache_dtype {self.feature_cache_dtype!r} is not one of: {', '.join(CACHE_DTYPES)}")
        _require(not (sft and self.stage2_from_best and not self.load_best_model_at_end), "stage2_from_best",
                 "stage2_from_best needs load_best_model_at_end=True (stage 1's best weights seed stage 2); pass "
                 "--stage2_from_best False to start stage 2 from stage 1's last weights")
        _check_lora_fields(self)
        if self.dataloader_pin_memory and (self.use_cpu or not torch.cuda.is_available()):
            self.dataloader_pin_memory = False  # pinned memory only speeds up host-to-CUDA copies
        super().__post_init__()


__all__ = ["CDTMTrainingArguments"]
