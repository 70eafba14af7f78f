"""Mixup / CutMix of the training batches (timm `Mixup`) with the soft-target loss (timm `SoftTargetCrossEntropy`;
`BCEWithLogitsLoss` of the mixed multi-hot targets for a multi-label set). Evaluation is never mixed: it sees the
hard labels and the model's own loss and metrics.
"""

from __future__ import annotations

from typing import Any

import torch

from .knobs import mixes_inputs

__all__ = ["MixupLoss", "build_mixup"]


class MixupLoss:
    """Mixes a training batch and computes the loss of the mixed targets.

    Args:
        args (`CDTMTrainingArguments`): `mixup`, `cutmix`, `mixup_prob`, `mixup_switch_prob`, `mixup_mode` and
            `label_smoothing_factor` (the smoothing of the mixed targets).
        num_classes (`int`): the model's classes.
        multi_label (`bool`): multi-hot targets (mixed as they are, then BCE).
    """

    def __init__(self, args: Any, num_classes: int, multi_label: bool = False):
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy

        self.num_classes, self.multi_label = num_classes, multi_label
        self.smoothing = float(args.label_smoothing_factor or 0.0)
        self.mixup = Mixup(
            mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob, switch_prob=args.mixup_switch_prob,
            mode=args.mixup_mode, label_smoothing=self.smoothing, num_classes=num_classes, multi_label=multi_label,
        )
        self.criterion = torch.nn.BCEWithLogitsLoss() if multi_label else SoftTargetCrossEntropy()

    def mix(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed images, soft targets). timm mixes an even batch; an odd last sample keeps its image and gets its
        (smoothed) one-hot target."""
        from timm.data.mixup import mixup_target

        labels = labels.float() if self.multi_label else labels
        n = len(pixel_values) - len(pixel_values) % 2
        if n == 0:
            return pixel_values, mixup_target(labels, self.num_classes, 1.0, self.smoothing, self.multi_label)
        x, target = self.mixup(pixel_values[:n].clone(), labels[:n])
        if n < len(pixel_values):
            last = mixup_target(labels[n:], self.num_classes, 1.0, self.smoothing, self.multi_label)
            x, target = torch.cat([x, pixel_values[n:]]), torch.cat([target, last.to(target.dtype)])
        return x, target

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False):
        """The `Trainer.compute_loss` of a training batch: mix, forward without labels, the soft-target loss (a mean
        over the batch, like the model's own loss)."""
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        inputs["pixel_values"], target = self.mix(inputs["pixel_values"], labels)
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        loss = self.criterion(logits.float(), target.to(logits.device, torch.float32))
        return (loss, outputs) if return_outputs else loss


def build_mixup(args: Any, config: Any) -> MixupLoss | None:
    """The run's `MixupLoss`, or None without mixup/cutmix.

    Args:
        args (`CDTMTrainingArguments`): the run's arguments.
        config (`CDTMConfig`): the model's classes and problem type.
    """
    if not mixes_inputs(args):
        return None
    return MixupLoss(args, config.num_labels, config.problem_type == "multi_label_classification")
