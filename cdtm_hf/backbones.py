"""One adapter that turns a timm model or an open_clip visual tower into a (B, p, d) token tensor.

ViT-like models give their token sequence (prefix tokens - CLS, registers, distillation - are split off);
CNN feature maps (B, d, h, w) are flattened h*w -> p, as in Sec. II-A of the CDTM paper.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import timm
import torch
from torch import nn

from .presets import UNAVAILABLE_BACKBONES

try:  # optional at import time so that remote code only needs open_clip for open_clip backbones
    import open_clip
except ImportError:  # pragma: no cover - exercised only where open_clip is absent
    open_clip = None

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class BackboneTokens:
    """Backbone output: patch/spatial tokens (B, p, d) and prefix tokens (B, k, d), k possibly 0."""

    tokens: torch.Tensor
    prefix_tokens: torch.Tensor


def _check_available(name: str) -> None:
    for key, why in UNAVAILABLE_BACKBONES.items():
        if key in name.lower():
            raise ValueError(why)


def _accepts_kwarg(fn, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _create_timm(
    name: str, pretrained: bool, pretrained_file: str | None, image_size: int, kwargs: dict[str, Any]
) -> nn.Module:
    if not timm.is_model(name):
        raise ValueError(
            f"unknown timm backbone {name!r} (timm {timm.__version__}); list names with timm.list_models(), "
            "or pass a preset name from cdtm_hf.BACKBONE_PRESETS"
        )
    kwargs = dict(kwargs)
    if pretrained_file is not None:
        kwargs["pretrained_cfg_overlay"] = dict(file=pretrained_file)
    # ViT-like models take img_size (and resample position embeddings); CNNs take any size.
    entry = timm.models.get_arch_name(name)
    if "img_size" not in kwargs and _accepts_kwarg(timm.models.model_entrypoint(entry), "img_size"):
        kwargs["img_size"] = image_size
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        kwargs.pop("img_size")
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    return model


def _create_open_clip_visual(
    name: str, pretrained: bool, tag: str | None, pretrained_file: str | None, image_size: int
) -> nn.Module:
    if open_clip is None:
        raise ImportError("open_clip backbones need open_clip_torch: pip install open_clip_torch")
    if name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip backbone {name!r}; list names with open_clip.list_models()")
    weights = pretrained_file or tag if pretrained else None
    if pretrained and weights is None:
        raise ValueError(f"open_clip backbone {name!r} needs backbone_pretrained_tag (see open_clip.list_pretrained())")
    if weights is None:
        # Build only the image tower: the text tower of a CLIP model is never used here.
        cfg = open_clip.get_model_config(name)
        vision_cfg = dict(cfg["vision_cfg"], image_size=image_size)
        return open_clip.model._build_vision_tower(cfg["embed_dim"], vision_cfg, quick_gelu=cfg.get("quick_gelu", False))
    model = open_clip.create_model(name, pretrained=weights, force_image_size=image_size)
    return model.visual


class BackboneAdapter(nn.Module):
    """Wraps a timm model or open_clip visual tower; `forward(pixel_values) -> BackboneTokens`."""

    def __init__(
        self,
        library: str,
        name: str,
        image_size: int,
        pretrained: bool = False,
        pretrained_tag: str | None = None,
        pretrained_file: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        _check_available(name)
        self.library = library
        self.image_size = image_size
        if library == "timm":
            self.model = _create_timm(name, pretrained, pretrained_file, image_size, model_kwargs or {})
            self._kind = "timm"
        elif library == "open_clip":
            visual = _create_open_clip_visual(name, pretrained, pretrained_tag, pretrained_file, image_size)
            if hasattr(visual, "trunk"):  # open_clip TimmModel: the trunk is a timm model (ConvNeXt etc.)
                self.model = visual.trunk
                self._kind = "timm"
                self._preprocess_cfg = getattr(visual, "preprocess_cfg", None)
            else:
                self.model = visual
                self._kind = "open_clip_vit"
        else:
            raise ValueError(f"backbone_library {library!r} is not one of: timm, open_clip")
        self.num_prefix_tokens = self._count_prefix_tokens()

    def _count_prefix_tokens(self) -> int:
        if self._kind == "open_clip_vit":
            return 1
        return int(getattr(self.model, "num_prefix_tokens", 0) or 0)

    @property
    def has_class_token(self) -> bool:
        if self._kind == "open_clip_vit":
            return True
        return bool(getattr(self.model, "cls_token", None) is not None)

    def data_config(self) -> dict[str, Any]:
        """The preprocessing (timm data-config format) at this adapter's image size."""
        cfg = getattr(self, "_preprocess_cfg", None) or (
            getattr(self.model, "preprocess_cfg", None) if self._kind == "open_clip_vit" else None
        )
        if cfg is not None or self._kind == "open_clip_vit":
            cfg = cfg or {}
            return {
                "input_size": (3, self.image_size, self.image_size),
                "interpolation": cfg.get("interpolation", "bicubic"),
                "mean": tuple(cfg.get("mean", OPENAI_CLIP_MEAN)),
                "std": tuple(cfg.get("std", OPENAI_CLIP_STD)),
                "crop_pct": 1.0,
                "crop_mode": "center",
            }
        data_config = timm.data.resolve_data_config({}, model=self.model)
        data_config["input_size"] = (3, self.image_size, self.image_size)
        return {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in data_config.items()}

    def forward(self, pixel_values: torch.Tensor) -> BackboneTokens:
        if self._kind == "open_clip_vit":
            visual = self.model
            out = visual.forward_intermediates(
                pixel_values,
                indices=1,
                normalize_intermediates=getattr(visual, "attn_pool", None) is None,
                intermediates_only=True,
                output_fmt="NLC",
                output_extra_tokens=True,
            )
            return BackboneTokens(out["image_intermediates"][-1], out["image_intermediates_prefix"][-1])
        features = self.model.forward_features(pixel_values)
        if isinstance(features, (list, tuple)):
            features = features[-1]
        if features.ndim == 4:
            if getattr(self.model, "output_fmt", "NCHW") == "NHWC" or str(
                getattr(self.model, "output_fmt", "")
            ).endswith("NHWC"):
                tokens = features.flatten(1, 2)
            else:
                tokens = features.flatten(2).transpose(1, 2)
            return BackboneTokens(tokens, tokens[:, :0])
        if features.ndim != 3:
            raise ValueError(f"backbone returned features of shape {tuple(features.shape)}; expected (B,N,d) or 4-D")
        k = self.num_prefix_tokens
        return BackboneTokens(features[:, k:], features[:, :k])

    @torch.no_grad()
    def token_shape(self) -> tuple[int, int]:
        """(p, d) at this adapter's image size, from one forward pass on a single blank image.

        Under ``from_pretrained`` the parameters are still on the meta device, so the pass costs nothing.
        """
        param = next(self.parameters())
        was_training = self.training
        self.eval()
        try:
            probe = torch.zeros(1, 3, self.image_size, self.image_size, device=param.device, dtype=param.dtype)
            out = self(probe)
        finally:
            self.train(was_training)
        return int(out.tokens.shape[1]), int(out.tokens.shape[2])


def grid_side(num_tokens: int) -> int | None:
    """The side of a square token grid, or None if ``num_tokens`` is not a square."""
    side = math.isqrt(num_tokens)
    return side if side * side == num_tokens else None
