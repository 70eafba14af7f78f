"""Image processor derived from the backbone's own data config (timm ``resolve_data_config`` / open_clip)."""

from __future__ import annotations

from typing import Any

import timm.data
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_transforms import to_pil_image
from transformers.image_utils import ImageInput, make_flat_list_of_images

DEFAULT_DATA_CONFIG = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.875,
    "crop_mode": "center",
}


class CDTMImageProcessor(BaseImageProcessor):
    """Resize, centre-crop and normalise exactly as the backbone was pretrained, through timm's `create_transform`.

    Args:
        data_config (`dict`): a timm data config (`input_size`, `interpolation`, `mean`, `std`, `crop_pct`,
            `crop_mode`), as recorded in `CDTMConfig.data_config`.
    """

    model_input_names = ["pixel_values"]

    def __init__(self, data_config: dict[str, Any] | None = None, **kwargs):
        super().__init__(**kwargs)
        config = dict(DEFAULT_DATA_CONFIG)
        config.update(data_config or {})
        self.data_config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}

    @classmethod
    def from_model_config(cls, config) -> "CDTMImageProcessor":
        """The processor of a `CDTMConfig` (its recorded backbone data config)."""
        return cls(data_config=config.data_config)

    def _timm_config(self) -> dict[str, Any]:
        return {k: (tuple(v) if isinstance(v, list) else v) for k, v in self.data_config.items()}

    @property
    def val_transforms(self):
        return timm.data.create_transform(**self._timm_config(), is_training=False)

    def train_transforms(self, **augment) -> Any:
        """timm's training transform at the model's size (random-resized crop, flips; `augment` overrides)."""
        cfg = self._timm_config()
        cfg.pop("crop_pct", None)
        cfg.pop("crop_mode", None)
        return timm.data.create_transform(**cfg, is_training=True, **augment)

    def preprocess(self, images: ImageInput, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt', got {return_tensors!r}")
        transform = self.val_transforms
        images = make_flat_list_of_images(images)
        pixel_values = torch.stack([transform(to_pil_image(image).convert("RGB")) for image in images])
        return BatchFeature({"pixel_values": pixel_values}, tensor_type="pt")


__all__ = ["CDTMImageProcessor"]
