"""timm's fine-tuning knobs (issue 18): the check of their fields, the training transform they configure, and what a
run records about them.

The fields live at the end of `CDTMTrainingArguments` (`layer_decay`, `model_ema*`, `mixup*`/`cutmix`, the
`create_transform` options, `channels_last`) and of `ModelArguments` (`drop_path_rate`, `backbone_kwargs`). Each is
off by default, so a run that sets none of them is the run it was before. The work is done by timm:
`param_groups_layer_decay` (`optim.py`), `ModelEmaV3` (`ema.py`), `Mixup` + `SoftTargetCrossEntropy` (`mixup.py`)
and `create_transform` (`cdtm_hf.data.transforms`).
"""

from __future__ import annotations

from typing import Any

from ..core.configuration_cdtm import FieldError

__all__ = [
    "AUGMENT_FIELDS", "KNOB_FIELDS", "augmentation_options", "channels_last_collator", "check_backbone_knobs",
    "check_knob_fields", "knob_summary", "mixes_inputs", "model_backbone_kwargs", "prepare_knobs",
]

#: `CDTMTrainingArguments` field -> the `timm.data.create_transform` argument it sets (training transform only).
AUGMENT_FIELDS = {"auto_augment": "auto_augment", "re_prob": "re_prob", "scale": "scale", "ratio": "ratio",
                  "hflip": "hflip", "vflip": "vflip", "color_jitter": "color_jitter"}
#: timm's own defaults of those arguments (`create_transform`), recorded when `augment` is on and a field is unset.
TIMM_TRANSFORM_DEFAULTS = {"auto_augment": None, "re_prob": 0.0, "scale": (0.08, 1.0), "ratio": (3 / 4, 4 / 3),
                           "hflip": 0.5, "vflip": 0.0, "color_jitter": 0.4}
MIXUP_MODES = ("batch", "pair", "elem")
#: every knob field (of `ModelArguments` and `CDTMTrainingArguments`); one not at its default makes a grid cell's
#: recipe `<recipe>_timm` (`cdtm_hf.experiments.canonical_recipe`), which matches none of the paper's rows.
KNOB_FIELDS = ("drop_path_rate", "backbone_kwargs", "layer_decay", "model_ema", "model_ema_decay", "model_ema_warmup",
               "mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "mixup_mode", *AUGMENT_FIELDS, "channels_last")


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise FieldError(field, message)


def _probability(args: Any, name: str) -> None:
    value = getattr(args, name)
    _require(value is None or 0 <= value <= 1, name, f"{name} is a probability: between 0 and 1, got {value}")


def _pair(args: Any, name: str, low: float, high: float | None) -> None:
    value = getattr(args, name)
    if value is None:
        return
    if isinstance(value, str):  # "0.08,1.0" from a grid file or Python
        value = [float(v) for v in value.replace(",", " ").split()]
    value = [float(v) for v in value]
    _require(len(value) == 2 and low <= value[0] <= value[1] and (high is None or value[1] <= high), name,
             f"{name} takes two numbers lo hi with {low} <= lo <= hi{f' <= {high}' if high else ''}, got {value} "
             f"(e.g. --{name} {'0.08 1.0' if name == 'scale' else '0.75 1.3333'})")
    setattr(args, name, value)


def check_knob_fields(args: Any) -> None:
    """Check the knob fields of a `CDTMTrainingArguments` (called by its `__post_init__`), naming the field and the
    remedy; turn `augment` on when a training-transform option is given (the options configure that transform)."""
    _require(args.layer_decay is None or 0 < args.layer_decay <= 1, "layer_decay",
             f"layer_decay must be in (0, 1] (timm recipes use 0.65-0.85), got {args.layer_decay}; leave it out for "
             "one learning rate over the backbone")
    _require(0 < args.model_ema_decay < 1, "model_ema_decay",
             f"model_ema_decay must be between 0 and 1 (exclusive; timm uses 0.9998), got {args.model_ema_decay}")
    for name in ("mixup", "cutmix"):
        _require(getattr(args, name) >= 0, name, f"{name} is a Beta distribution alpha: >= 0 (0 = off), got "
                 f"{getattr(args, name)}")
    for name in ("mixup_prob", "mixup_switch_prob", "re_prob", "hflip", "vflip"):
        _probability(args, name)
    _require(args.mixup_mode in MIXUP_MODES, "mixup_mode",
             f"mixup_mode {args.mixup_mode!r} is not one of: {', '.join(MIXUP_MODES)}")
    _require(args.color_jitter is None or args.color_jitter >= 0, "color_jitter",
             f"color_jitter must be >= 0, got {args.color_jitter}")
    _pair(args, "scale", 0.0, 1.0)
    _pair(args, "ratio", 1e-6, None)
    if args.auto_augment is not None:
        _check_auto_augment(args.auto_augment)
    given = [name for name in AUGMENT_FIELDS if getattr(args, name) not in (None, 0, 0.0)]
    if given and not args.augment:
        args.augment = True  # `--vflip 0.5` alone means timm's training transform with that option


def _check_auto_augment(policy: str) -> None:
    """The policy string of `create_transform(auto_augment=...)`: rand-*, augmix-*, trivialaugment, v0, original."""
    head = policy.split("-")[0]
    _require(head in ("rand", "augmix", "trivialaugment", "v0", "v0r", "original", "originalr", "3a"),
             "auto_augment", f"auto_augment {policy!r} is not a timm policy: use e.g. rand-m9-mstd0.5-inc1 "
             "(RandAugment), augmix-m5-w4-d2, trivialaugment, or v0/original (AutoAugment)")


def mixes_inputs(args: Any) -> bool:
    """Whether training batches are mixed (mixup or cutmix), so the backbone input changes every epoch."""
    return bool(args.mixup > 0 or args.cutmix > 0)


def augmentation_options(args: Any) -> dict[str, Any]:
    """The `create_transform` arguments the fields set (those left unset are timm's defaults)."""
    options = {}
    for name, option in AUGMENT_FIELDS.items():
        value = getattr(args, name)
        if value is not None:
            options[option] = tuple(value) if isinstance(value, list) else value
    return options


def knob_summary(args: Any, backbone_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """What the run's `training` record (and its card) says about the knobs; None where a knob is off.

    Args:
        args (`CDTMTrainingArguments`): the run's arguments.
        backbone_kwargs (`dict`, *optional*): the model config's `backbone_kwargs` (what the backbone was built with).
    """
    kwargs = dict(backbone_kwargs or {})
    mixed = mixes_inputs(args)
    ema = bool(args.model_ema)
    transform = {**TIMM_TRANSFORM_DEFAULTS, **augmentation_options(args)} if args.augment else {}
    return {
        "drop_path_rate": kwargs.pop("drop_path_rate", None),
        "backbone_kwargs": kwargs or None,
        "layer_decay": args.layer_decay,
        "model_ema_decay": args.model_ema_decay if ema else None,
        "model_ema_warmup": bool(args.model_ema_warmup) if ema else None,
        "mixup": args.mixup if mixed else None,
        "cutmix": args.cutmix if mixed else None,
        "mixup_prob": args.mixup_prob if mixed else None,
        "mixup_switch_prob": args.mixup_switch_prob if mixed and args.mixup > 0 and args.cutmix > 0 else None,
        "mixup_mode": args.mixup_mode if mixed else None,
        "label_smoothing_factor": args.label_smoothing_factor or None,
        **{name: (list(v) if isinstance(v, tuple) else v) for name, v in transform.items()},
        "channels_last": True if args.channels_last else None,
    }


# ---- the backbone's knobs (ModelArguments) ------------------------------------------------------------------------
def _backbone_library(model_args: Any) -> str | None:
    from ..core.presets import BACKBONE_PRESETS

    preset = BACKBONE_PRESETS.get(model_args.backbone or "")
    return model_args.backbone_library or (preset.library if preset else None)


def check_backbone_knobs(model_args: Any) -> None:
    """Check `drop_path_rate` and `backbone_kwargs` of a `ModelArguments` (JSON text becomes a dict).

    They are keyword arguments of `timm.create_model`, so an open_clip backbone refuses them; a saved checkpoint
    (`model_name_or_path`) takes `drop_path_rate` (training-only, the weights are unchanged) but not other kwargs,
    which could change its architecture.
    """
    import json

    kwargs = model_args.backbone_kwargs
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except json.JSONDecodeError as err:
            raise FieldError("backbone_kwargs", f"backbone_kwargs is not JSON ({err}): pass an object, e.g. "
                             "--backbone_kwargs '{\"drop_rate\": 0.1}'") from None
    _require(kwargs is None or isinstance(kwargs, dict), "backbone_kwargs",
             f"backbone_kwargs must be a JSON object of timm.create_model keyword arguments, got {kwargs!r}")
    model_args.backbone_kwargs = dict(kwargs) if kwargs else None
    rate = model_args.drop_path_rate
    _require(rate is None or 0 <= rate < 1, "drop_path_rate",
             f"drop_path_rate must be in [0, 1) (timm recipes use 0.1-0.2), got {rate}")
    if rate is not None and kwargs and "drop_path_rate" in kwargs and kwargs["drop_path_rate"] != rate:
        raise FieldError("drop_path_rate", f"--drop_path_rate {rate} and backbone_kwargs drop_path_rate "
                         f"{kwargs['drop_path_rate']} disagree; give it once")
    if rate is None and not kwargs:
        return
    _require(not (model_args.model_name_or_path and kwargs), "backbone_kwargs",
             "backbone_kwargs cannot change a saved checkpoint's backbone (--model_name_or_path); only "
             "--drop_path_rate may be given with it")
    if not model_args.model_name_or_path and _backbone_library(model_args) == "open_clip":
        name = "drop_path_rate" if rate is not None else "backbone_kwargs"
        raise FieldError(name, f"{name} is a timm.create_model argument and backbone {model_args.backbone!r} is an "
                         "open_clip model, whose factory takes none; use a timm backbone (e.g. vitb16.laion2b) or "
                         f"leave --{name} out")


def model_backbone_kwargs(model_args: Any) -> dict[str, Any]:
    """The `CDTMConfig.backbone_kwargs` of a run: `backbone_kwargs` with `drop_path_rate` merged in."""
    kwargs = dict(model_args.backbone_kwargs or {})
    if model_args.drop_path_rate is not None:
        kwargs["drop_path_rate"] = model_args.drop_path_rate
    return kwargs


def channels_last_collator(collate: Any) -> Any:
    """`collate` whose 4-D `pixel_values` come out in channels-last memory format (`--channels_last`)."""
    import torch

    def collate_channels_last(features: list) -> dict[str, Any]:
        batch = collate(features)
        pixel_values = batch.get("pixel_values")
        if isinstance(pixel_values, torch.Tensor) and pixel_values.ndim == 4:
            batch["pixel_values"] = pixel_values.contiguous(memory_format=torch.channels_last)
        return batch

    return collate_channels_last


def prepare_knobs(model: Any, args: Any, trainer_kwargs: dict[str, Any], stage: Any) -> Any:
    """What `CDTMTrainer.__init__` does for the knobs; returns the stage's `ModelEmaCallback` (None without
    `model_ema`, and for the trainer of all stages, `stage` None).

    Refuses `layer_decay` for a backbone without a timm layer map before any stage trains; with `channels_last` puts
    the model and the collated batches in channels-last memory format (`trainer_kwargs["data_collator"]` is
    wrapped); with `model_ema` puts a fresh EMA callback first in a stage's `trainer_kwargs["callbacks"]`.
    """
    import torch

    if args.layer_decay is not None and stage is None:
        from .optim import check_layer_decay

        check_layer_decay(model)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
        trainer_kwargs["data_collator"] = channels_last_collator(trainer_kwargs["data_collator"])
    if not args.model_ema or stage is None:
        return None
    from .ema import ModelEmaCallback

    callback = ModelEmaCallback(args.model_ema_decay, args.model_ema_warmup)
    trainer_kwargs["callbacks"] = [callback, *(trainer_kwargs.get("callbacks") or [])]
    return callback
