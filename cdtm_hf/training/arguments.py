"""`CDTMTrainingArguments`: `transformers.TrainingArguments` with the fields of the CDTM paper's fine-tuning modes
(Sec. II-B) and its hyperparameters as defaults (Sec. III-E), every field checked once, on construction.

`cdtm_hf.training.stages.stage_plan` turns a mode into its stages.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import HfArgumentParser, TrainingArguments

from ..core.configuration_cdtm import FieldError
from .feature_cache import CACHE_DTYPES
from .knobs import check_knob_fields
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


class CDTMArgumentParser(HfArgumentParser):
    """`HfArgumentParser` that keeps the `Action` each `add_argument` returns, in `arguments`, and lets every
    True/False choice take each spelling of a boolean ([`accept_bool_spellings`]).

    argparse documents what `add_argument` returns and lists a parser's actions nowhere public, so the parser records
    them itself (every field of the argument dataclasses is added through it: they declare no argument groups). The
    command line (`cdtm_hf.cli.train.build_parser`) and the grid fields (`cdtm_hf.experiments.fields`) use it.
    """

    def __init__(self, dataclass_types, **kwargs):
        self.arguments: list[argparse.Action] = []
        super().__init__(dataclass_types, **kwargs)
        accept_bool_spellings(self.arguments)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.arguments.append(action)
        return action


def accept_bool_spellings(actions: Iterable[argparse.Action]) -> None:
    """Let every option among `actions` whose choices hold True and False (e.g. `backbone_norm_eval`: auto, True,
    False) take each spelling of a boolean that a plain bool option takes (true/false, yes/no, 1/0, any case), and
    YAML's booleans.

    `HfArgumentParser` maps a `Literal` choice back from its exact `str()` only ("True"); [`CDTMArgumentParser`]
    calls this on its own arguments (issue 18).
    """
    for action in actions:
        choices = list(action.choices or ())
        if not any(c is True for c in choices) or not any(c is False for c in choices) or action.type is None:
            continue

        def typed(text, _type=action.type):
            key = text.strip().lower() if isinstance(text, str) else text
            if isinstance(key, str) and key in _BOOL_SPELLINGS:
                return _BOOL_SPELLINGS[key]
            return _type(key if key == "auto" else text)

        action.type = typed
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

    # Issue 18: the HF flags a run cannot ignore. A run always selects its model on the validation split and tests
    # it; `_check_hf_flags` refuses the values it cannot honour.
    do_eval: bool = field(
        default=True, metadata={"help": "always on: every run evaluates on the validation split to keep its best model"}
    )
    do_predict: bool = field(
        default=True, metadata={"help": "always on: every run tests the model it keeps (test_results.json, the card)"}
    )
    hub_strategy: str = field(
        default="end", metadata={"help": "end only: --push_to_hub uploads the kept model, its card and results once, "
                                 "when the run ends"}
    )
    # issue 18: timm fine-tuning knobs (cdtm_hf.training.knobs checks them; all off by default)
    layer_decay: float | None = field(
        default=None, metadata={"help": "layer-wise lr decay of the backbone (timm param_groups_layer_decay), e.g. "
                                "0.75; CDTM and the head keep the stage's learning rate"})
    model_ema: bool = field(default=False, metadata={"help": "keep an EMA of the weights (timm ModelEmaV3); it is "
                                                     "evaluated at the end of each stage and kept when better"})
    model_ema_decay: float = field(default=0.9998, metadata={"help": "EMA decay per optimizer step"})
    model_ema_warmup: bool = field(default=False, metadata={"help": "EMA decay warmup (timm use_warmup)"})
    mixup: float = field(default=0.0, metadata={"help": "mixup alpha (timm Mixup; 0 = off), e.g. 0.8"})
    cutmix: float = field(default=0.0, metadata={"help": "cutmix alpha (0 = off), e.g. 1.0"})
    mixup_prob: float = field(default=1.0, metadata={"help": "probability of mixing a batch"})
    mixup_switch_prob: float = field(default=0.5, metadata={"help": "probability of cutmix when both are on"})
    mixup_mode: str = field(default="batch", metadata={"help": "mix per batch, pair or elem"})
    auto_augment: str | None = field(
        default=None, metadata={"help": "timm auto-augment policy of the train transform, e.g. rand-m9-mstd0.5-inc1"})
    re_prob: float | None = field(default=None, metadata={"help": "random-erasing probability (train transform)"})
    scale: list[float] | None = field(default=None, metadata={"help": "random-resized-crop area range, e.g. 0.08 1"})
    ratio: list[float] | None = field(default=None, metadata={"help": "random-resized-crop aspect range"})
    hflip: float | None = field(default=None, metadata={"help": "horizontal-flip probability (timm default 0.5)"})
    vflip: float | None = field(default=None, metadata={"help": "vertical-flip probability (histology: 0.5)"})
    color_jitter: float | None = field(default=None, metadata={"help": "colour-jitter strength (timm default 0.4)"})
    channels_last: bool = field(default=False, metadata={"help": "channels-last memory format (model and inputs)"})
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
        _check_hf_flags(self)
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
        check_knob_fields(self)
        _check_lora_fields(self)
        if self.dataloader_pin_memory and (self.use_cpu or not torch.cuda.is_available()):
            self.dataloader_pin_memory = False  # pinned memory only speeds up host-to-CUDA copies
        super().__post_init__()


def _check_hf_flags(args: CDTMTrainingArguments) -> None:
    """Refuse the values of TrainingArguments' flags that a cdtm_hf run would otherwise ignore (issue 18)."""
    _require(args.do_eval is not False, "do_eval",
             "do_eval False: a run evaluates on the validation split every epoch to keep its best model "
             "(load_best_model_at_end); leave --do_eval out (--eval_strategy steps evaluates more often)")
    _require(args.do_predict is not False, "do_predict",
             "do_predict False: a run always tests the model it keeps on the test split (test_results.json, the "
             "card); leave --do_predict out")
    strategy = str(getattr(args.hub_strategy, "value", args.hub_strategy))
    _require(strategy == "end", "hub_strategy",
             f"hub_strategy {strategy!r}: --push_to_hub uploads the kept model once, with its card and results, when "
             "the run ends (hub_strategy end), and pushes no checkpoint; leave --hub_strategy out (to publish a folder "
             "later: cdtm-hub push <folder> <repo_id>)")
    _require(not args.hub_always_push, "hub_always_push",
             "hub_always_push: the run pushes once, synchronously, at its end, so no push is ever skipped; leave "
             "--hub_always_push out")


__all__ = ["CDTMArgumentParser", "CDTMTrainingArguments", "accept_bool_spellings"]
