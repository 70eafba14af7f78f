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


#: the spellings of a boolean a tri-state field takes besides its own choices (those of a plain bool option, and YAML's)
_BOOL_SPELLINGS = {"true": True, "yes": True, "1": True, "t": True, "y": True, "on": True,
                   "false": False, "no": False, "0": False, "f": False, "n": False, "off": False}


def _parse_norm_eval(value: Any) -> str | bool:
    """`backbone_norm_eval` from Python or a command line / grid file: "auto", a bool, or "true"/"false"."""
    text = value if isinstance(value, bool) else str(value).strip().lower()
    if isinstance(text, bool) or text == "auto" or text in _BOOL_SPELLINGS:
        return text if text in (True, False, "auto") else _BOOL_SPELLINGS[text]
    raise FieldError(
        "backbone_norm_eval", f"backbone_norm_eval {value!r} is not one of: auto, True, False; use auto (fixed BatchNorm statistics after "
        "a frozen stage), True (always while the backbone trains) or False (never)"
    )


def accept_bool_spellings(parser) -> None:
    """Let every option whose choices hold True and False (e.g. `backbone_norm_eval`: auto, True, False) take each
    spelling of a boolean that a plain bool option takes (true/false, yes/no, 1/0, any case), and YAML's booleans.

    `HfArgumentParser` maps a `Literal` choice back from its exact `str()` only ("True"); the command line
    (`cdtm_hf.cli.train.build_parser`) and the grid fields (`cdtm_hf.experiments.fields.argument_parser`) call this
    on their parser (issue 18).
    """
    for action in parser._actions:
        choices = list(action.choices or ())
        if not any(c is True for c in choices) or not any(c is False for c in choices) or action.type is None:
            continue

        def typed(text, _type=action.type):
            key = text.strip().lower() if isinstance(text, str) else text
            if isinstance(key, str) and key in _BOOL_SPELLINGS:
                return _BOOL_SPELLINGS[key]
            return _type(key if key == "auto" else text)

        action.type = typed



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
        if self.dataloader_pin_memory and (self.use_cpu or not torch.cuda.is_available()):
            self.dataloader_pin_memory = False  # pinned memory only speeds up host-to-CUDA copies
        super().__post_init__()


__all__ = ["CDTMTrainingArguments", "accept_bool_spellings"]
