"""The optimizer's parameter groups of a stage: CDTM and the head at the stage's learning rate, the backbone at
`backbone_lr_multiplier` times it (and, with `layer_decay`, times timm's layer-wise scale), weight decay where
transformers' `get_decay_parameter_names` puts it, and no state at all for frozen parameters."""

from __future__ import annotations

from typing import Any

import torch

from .arguments import CDTMTrainingArguments

__all__ = ["backbone_layer_scales", "check_layer_decay", "parameter_groups"]

BACKBONE_PREFIX = "backbone."


def check_layer_decay(model: torch.nn.Module) -> None:
    """Refuse `layer_decay` for a backbone that is not a timm model (an open_clip ViT has no timm layer map)."""
    adapter = model.backbone
    if getattr(adapter, "_kind", "timm") != "timm":
        raise ValueError(
            f"layer_decay needs a timm backbone (its group_matcher gives the layers); {adapter.library} backbone "
            f"{adapter.name!r} is an open_clip ViT without one. Use the timm copy of the weights (e.g. vitb16.laion2b, "
            "timm vit_base_patch16_clip_224.*) or leave --layer_decay out and use --backbone_lr_multiplier"
        )


def backbone_layer_scales(model: torch.nn.Module, layer_decay: float) -> dict[str, float]:
    """`backbone.<name>` -> the lr scale timm's `param_groups_layer_decay` gives that trainable parameter
    (`layer_decay ** (last layer - its layer)`, the layers from the timm model's `group_matcher`).

    The backbone must be a timm model: a timm backbone, or an open_clip tower whose trunk is one (ConvNeXt). An
    open_clip ViT has no timm layer map and is refused.
    """
    from timm.optim import param_groups_layer_decay

    check_layer_decay(model)
    adapter = model.backbone
    timm_model = adapter.model
    prefix = BACKBONE_PREFIX + "".join(n + "." for n, m in adapter.named_children() if m is timm_model)
    ids = {id(p): name for name, p in timm_model.named_parameters()}
    scales = {}
    for group in param_groups_layer_decay(timm_model, weight_decay=0.0, layer_decay=layer_decay):
        for p in group["params"]:
            scales[prefix + ids[id(p)]] = float(group["lr_scale"])
    return scales


def parameter_groups(
    model: torch.nn.Module, args: CDTMTrainingArguments, decay: set[str]
) -> list[dict[str, Any]]:
    """The trainable parameters of `model` in groups of one learning rate and one weight decay: (CDTM and head,
    backbone) x (decay, no decay), the backbone split further by layer with `layer_decay`.

    Args:
        model (`torch.nn.Module`): the model; a parameter whose name starts with `backbone.` is the backbone's.
        args (`CDTMTrainingArguments`): the stage's `learning_rate`, `weight_decay`, `backbone_lr_multiplier` and
            `layer_decay`.
        decay (`set[str]`): the names of the parameters that take weight decay.
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    layer_decay = getattr(args, "layer_decay", None)
    in_backbone = any(n.startswith(BACKBONE_PREFIX) for n, _ in trainable)
    scales = backbone_layer_scales(model, layer_decay) if layer_decay is not None and in_backbone else {}
    groups: dict[tuple[bool, float, bool], dict[str, Any]] = {}
    for name, p in trainable:
        lr = args.learning_rate
        if name.startswith(BACKBONE_PREFIX):
            lr *= args.backbone_lr_multiplier * scales.get(name, 1.0)
        with_decay = name in decay
        key = (name.startswith(BACKBONE_PREFIX), lr, with_decay)
        group = groups.setdefault(key, {"params": [], "lr": lr, "weight_decay": args.weight_decay if with_decay
                                        else 0.0})
        group["params"].append(p)
    # CDTM and head first, then the backbone from its last layer down (the order the groups had before layer_decay)
    order = sorted(groups, key=lambda k: (k[0], -k[1], not k[2]))
    return [groups[k] for k in order]
