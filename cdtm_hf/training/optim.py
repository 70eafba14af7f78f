"""The optimizer's parameter groups of a stage: CDTM and the head at the stage's learning rate, the backbone at
`backbone_lr_multiplier` times it, weight decay where transformers' `get_decay_parameter_names` puts it, and no state
at all for frozen parameters."""

from __future__ import annotations

from typing import Any

import torch

from .arguments import CDTMTrainingArguments

__all__ = ["parameter_groups"]


def parameter_groups(
    model: torch.nn.Module, args: CDTMTrainingArguments, decay: set[str]
) -> list[dict[str, Any]]:
    """The trainable parameters of `model` in up to four groups: (CDTM and head, backbone) x (decay, no decay).

    Args:
        model (`torch.nn.Module`): the model; a parameter whose name starts with `backbone.` is the backbone's.
        args (`CDTMTrainingArguments`): the stage's `learning_rate`, `weight_decay` and `backbone_lr_multiplier`.
        decay (`set[str]`): the names of the parameters that take weight decay.
    """
    groups = []
    for in_backbone in (False, True):
        lr = args.learning_rate * (args.backbone_lr_multiplier if in_backbone else 1.0)
        for with_decay in (True, False):
            params = [
                p for n, p in model.named_parameters()
                if p.requires_grad and n.startswith("backbone.") == in_backbone and (n in decay) == with_decay
            ]
            if params:
                groups.append({"params": params, "lr": lr, "weight_decay": args.weight_decay if with_decay else 0.0})
    return groups
