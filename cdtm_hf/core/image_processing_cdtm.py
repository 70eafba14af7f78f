"""Image processor derived from the backbone's own data config (timm ``resolve_data_config`` / open_clip), and the
one image decode (8-bit, 16-bit and float images to 8-bit RGB) that the data builders, imagefolder runs and the
processor share."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_transforms import to_pil_image
from transformers.image_utils import ImageInput

DEFAULT_DATA_CONFIG = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.875,
    "crop_mode": "center",
}


# PIL modes that hold more than 8 bits a channel: `convert("RGB")` clips them (a 16-bit image turns white).
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb_image(
    image: PIL.Image.Image | np.ndarray, window: tuple[float, float] | None = None
) -> PIL.Image.Image:
    """Decode any image to 8-bit RGB, the one decode every path of cdtm_hf uses.

    8-bit images (L, P, RGB, RGBA, CMYK, ...) go through PIL's `convert("RGB")`. 16-bit and float images (PIL modes
    `I;16*`, `I`, `F`, or arrays of another dtype than uint8) are scaled linearly to 0-255: by `window` `(low, high)`
    when given (values outside it are clipped), else by the image's own minimum and maximum (a constant image becomes
    black). A plain `convert("RGB")` would clip them and give an all-white image.

    Args:
        image (`PIL.Image.Image` or `np.ndarray`): the decoded image; an array is (H, W) or (H, W, C).
        window (`tuple[float, float]`, *optional*): the intensity range mapped to 0-255.
    """
    if isinstance(image, PIL.Image.Image) and image.mode not in HIGH_BIT_DEPTH_MODES:
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype == np.uint8 and window is None:
        return PIL.Image.fromarray(array).convert("RGB")
    array = array.astype(np.float64)
    if array.ndim == 3 and array.shape[-1] == 4:  # drop alpha
        array = array[..., :3]
    finite = array[np.isfinite(array)]
    low, high = window if window is not None else ((finite.min(), finite.max()) if finite.size else (0.0, 0.0))
    if high <= low:
        scaled = np.zeros_like(array)
    else:
        scaled = (np.nan_to_num(array, nan=low) - low) * (255.0 / (high - low))
    scaled = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if scaled.ndim == 2 or scaled.shape[-1] == 1:
        scaled = np.repeat(scaled.reshape(scaled.shape[0], scaled.shape[1], 1), 3, axis=-1)
    return PIL.Image.fromarray(scaled, mode="RGB")


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

    @cached_property
    def val_transforms(self):
        """timm's evaluation transform, built once per processor."""
        from timm.data import create_transform  # imported where used: `import cdtm_hf` stays free of timm

        return create_transform(**self._timm_config(), is_training=False)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("val_transforms", None)  # the cached transform is derived from data_config, not saved
        return output

    def train_transforms(self, **augment) -> Any:
        """timm's training transform at the model's size (random-resized crop, flips; `augment` overrides)."""
        cfg = self._timm_config()
        cfg.pop("crop_pct", None)
        cfg.pop("crop_mode", None)
        from timm.data import create_transform

        return create_transform(**cfg, is_training=True, **augment)

    def preprocess(self, images: ImageInput, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt', got {return_tensors!r}")
        transform = self.val_transforms
        images = _image_list(images)
        pixel_values = torch.stack([transform(_as_rgb(image)) for image in images])
        return BatchFeature({"pixel_values": pixel_values}, tensor_type="pt")


def _image_list(images: ImageInput) -> list:
    """One image (PIL, or an (H, W), (H, W, C) or (C, H, W) array) or a batch (a list, or a 4-D array) as a list."""
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


def _as_rgb(image: Any) -> PIL.Image.Image:
    """A PIL image or array as 8-bit RGB (16-bit and float arrays keep their dynamic range)."""
    if isinstance(image, PIL.Image.Image):
        return to_rgb_image(image)
    if isinstance(image, torch.Tensor):
        image = image.numpy()
    array = np.asarray(image)
    if array.dtype == np.uint8 or (array.dtype.kind == "f" and array.size and 0 <= array.min() and array.max() <= 1):
        return to_pil_image(array).convert("RGB")  # transformers' channel-order handling, [0, 1] floats
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    return to_rgb_image(array)


__all__ = ["CDTMImageProcessor", "to_rgb_image"]
