"""The arguments of a CDTM fine-tuning run (`CDTMTrainingArguments`, the paper's defaults) and its stage plan.

`CDTMTrainingArguments` is `transformers.TrainingArguments` with the fields of the CDTM paper's fine-tuning modes
(Sec. II-B) and its hyperparameters as defaults (Sec. III-E); `stage_plan` turns a mode into its stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from transformers import TrainingArguments

from .feature_cache import CACHE_DTYPES

FINETUNE_MODES = ("scratch", "lp", "fft", "sft")
NORM_EVAL_CHOICES = ("auto", True, False)
def _parse_norm_eval(value: Any) -> str | bool:
    """`backbone_norm_eval` from Python or a command line / grid file: "auto", a bool, or "true"/"false"."""
    text = value if isinstance(value, bool) else str(value).strip().lower()
    if isinstance(text, bool) or text in ("auto", "true", "false", "1", "0", "yes", "no"):
        return text if text in (True, False, "auto") else text in ("true", "1", "yes")
    raise ValueError(
        f"backbone_norm_eval {value!r} is not one of: auto, True, False; use auto (fixed BatchNorm statistics after "
        "a frozen stage), True (always while the backbone trains) or False (never)"
    )


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
        if self.finetune_mode not in FINETUNE_MODES:
            raise ValueError(f"finetune_mode {self.finetune_mode!r} is not one of: {', '.join(FINETUNE_MODES)}")
        if self.finetune_mode == "sft":
            if not self.stage1_epochs or self.stage1_epochs <= 0:
                raise ValueError(f"sft needs stage1_epochs > 0, got {self.stage1_epochs}")
            if not self.stage2_epochs or self.stage2_epochs <= 0:
                raise ValueError(
                    f"sft needs stage2_epochs > 0, got {self.stage2_epochs}; use finetune_mode='lp' for a frozen "
                    "backbone only"
                )
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.backbone_lr_multiplier <= 0:
            raise ValueError(f"backbone_lr_multiplier must be > 0, got {self.backbone_lr_multiplier}")
        self.backbone_norm_eval = _parse_norm_eval(self.backbone_norm_eval)
        if self.feature_cache_dtype not in CACHE_DTYPES:
            raise ValueError(
                f"feature_cache_dtype {self.feature_cache_dtype!r} is not one of: {', '.join(CACHE_DTYPES)}"
            )
        if self.finetune_mode == "sft" and self.stage2_from_best and not self.load_best_model_at_end:
            raise ValueError(
                "stage2_from_best needs load_best_model_at_end=True (stage 1's best weights seed stage 2); "
                "pass --stage2_from_best False to start stage 2 from stage 1's last weights"
            )
        super().__post_init__()


@dataclass(frozen=True)
class Stage:
    index: int  # 1-based
    frozen_backbone: bool
    epochs: float
    learning_rate: float
    subdir: str  # "" for single-stage modes


def stage_plan(args: CDTMTrainingArguments) -> list[Stage]:
    """The stages of `args.finetune_mode`, with the epochs and peak learning rate each one is planned with."""
    if args.finetune_mode == "sft":
        lr2 = args.stage2_learning_rate if args.stage2_learning_rate is not None else args.learning_rate / 10
        return [
            Stage(1, True, args.stage1_epochs, args.learning_rate, "stage1"),
            Stage(2, False, args.stage2_epochs, lr2, "stage2"),
        ]
    return [Stage(1, args.finetune_mode == "lp", args.num_train_epochs, args.learning_rate, "")]


__all__ = ["FINETUNE_MODES", "NORM_EVAL_CHOICES", "CDTMTrainingArguments", "Stage", "stage_plan"]
