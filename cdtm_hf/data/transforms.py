"""From a split's `image` and label columns to model inputs: the one decode (`to_rgb_image`), then the processor's
transform, applied on the fly with `datasets.Dataset.with_transform`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import DatasetDict

from ..core.image_processing_cdtm import CDTMImageProcessor, to_rgb_image

__all__ = ["attach_transforms"]


def attach_transforms(
    ds: DatasetDict, processor: CDTMImageProcessor, label_column: str, augment: bool,
    augment_options: dict[str, Any] | None = None,
) -> DatasetDict:
    """Decode (`to_rgb_image`, which keeps 16-bit and float images' range) and preprocess on the fly:
    `image` -> `pixel_values`, the label column -> `labels`. With `augment`, train gets timm's training transform.

    Args:
        ds (`DatasetDict`): the splits, each with an `image` column.
        processor (`CDTMImageProcessor`): the model's preprocessing.
        label_column (`str`): the split manifest's `label_column`.
        augment (`bool`): random augmentation of the train split.
        augment_options (`dict`, *optional*): `timm.data.create_transform` arguments of the train transform
            (`auto_augment`, `re_prob`, `scale`, `ratio`, `hflip`, `vflip`, `color_jitter`); validation and test
            always get the evaluation transform.
    """
    eval_tf = processor.val_transforms
    train_tf = processor.train_transforms(**(augment_options or {})) if augment else eval_tf

    def make(transform):
        def apply(batch: dict[str, list]) -> dict[str, Any]:
            pixel_values = [transform(to_rgb_image(image)) for image in batch["image"]]
            return {"pixel_values": pixel_values, "labels": torch.as_tensor(np.asarray(batch[label_column]))}

        return apply

    return DatasetDict({k: v.with_transform(make(train_tf if k == "train" else eval_tf)) for k, v in ds.items()})
