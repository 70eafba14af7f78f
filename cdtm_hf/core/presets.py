"""Backbone presets: the paper's six backbones and the medical transfer study's, as data.

Each preset names a real model id of timm or open_clip. ``pretraining`` is the data set the weights come from,
used in model cards and result tables. A preset is data only: where its weights come from is the library's business
(``BackboneAdapter.load_pretrained``), or a local file passed as ``backbone_pretrained_file``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BackbonePreset:
    library: str  # "timm" or "open_clip"
    model_name: str  # timm model name (with .tag) or open_clip architecture name
    pretrained_tag: str | None  # open_clip pretrained tag; None for timm (the tag is in the name)
    family: str  # "ViT-B/16", "ConvNeXt-B", ...
    pretraining: str  # "LAION-2B", "ImageNet-21K", ...
    source: str  # which paper uses it ("cdtm" or "transfer")


BACKBONE_PRESETS: dict[str, BackbonePreset] = {
    # CDTM paper, Table VI: ViT-B/16 and ConvNeXt-B x ImageNet-21K, LAION-400M, LAION-2B.
    "vitb16.laion2b": BackbonePreset("timm", "vit_base_patch16_clip_224.laion2b", None, "ViT-B/16", "LAION-2B", "cdtm"),
    "vitb16.laion400m": BackbonePreset("open_clip", "ViT-B-16", "laion400m_e32", "ViT-B/16", "LAION-400M", "cdtm"),
    "vitb16.in21k": BackbonePreset("timm", "vit_base_patch16_224.augreg_in21k", None, "ViT-B/16", "ImageNet-21K", "cdtm"),
    "convnextb.laion2b": BackbonePreset(
        "timm", "convnext_base.clip_laion2b_augreg", None, "ConvNeXt-B", "LAION-2B", "cdtm"
    ),
    "convnextb.laion400m": BackbonePreset(
        "open_clip", "convnext_base", "laion400m_s13b_b51k", "ConvNeXt-B", "LAION-400M", "cdtm"
    ),
    "convnextb.in21k": BackbonePreset("timm", "convnext_base.fb_in22k", None, "ConvNeXt-B", "ImageNet-21K", "cdtm"),
    # Medical transfer-learning study (backbone x size).
    "dinov2.vitb14": BackbonePreset("timm", "vit_base_patch14_dinov2.lvd142m", None, "DINOv2 ViT-B/14", "LVD-142M", "transfer"),
    "dinov2.vits14": BackbonePreset("timm", "vit_small_patch14_dinov2.lvd142m", None, "DINOv2 ViT-S/14", "LVD-142M", "transfer"),
    "dinov2.vitl14": BackbonePreset("timm", "vit_large_patch14_dinov2.lvd142m", None, "DINOv2 ViT-L/14", "LVD-142M", "transfer"),
    "mae.vitb16": BackbonePreset("timm", "vit_base_patch16_224.mae", None, "MAE ViT-B/16", "ImageNet-1K", "transfer"),
    "mae.vitl16": BackbonePreset("timm", "vit_large_patch16_224.mae", None, "MAE ViT-L/16", "ImageNet-1K", "transfer"),
    "aimv2.large": BackbonePreset("timm", "aimv2_large_patch14_224.apple_pt", None, "AIMv2-L/14", "DFN-2B+", "transfer"),
    "sam2.hiera_b+": BackbonePreset("timm", "sam2_hiera_base_plus.fb_r896", None, "SAM2 Hiera-B+", "SA-1B", "transfer"),
    "sam2.hiera_s": BackbonePreset("timm", "sam2_hiera_small.fb_r896", None, "SAM2 Hiera-S", "SA-1B", "transfer"),
    "clip.vitb16": BackbonePreset("open_clip", "ViT-B-16", "openai", "CLIP ViT-B/16", "WIT-400M", "transfer"),
    "clip.vitl14": BackbonePreset("open_clip", "ViT-L-14", "openai", "CLIP ViT-L/14", "WIT-400M", "transfer"),
    "coca.vitb32": BackbonePreset("open_clip", "coca_ViT-B-32", "laion2b_s13b_b90k", "CoCa ViT-B/32", "LAION-2B", "transfer"),
    "coca.vitl14": BackbonePreset("open_clip", "coca_ViT-L-14", "laion2b_s13b_b90k", "CoCa ViT-L/14", "LAION-2B", "transfer"),
}

# Backbones the study uses that no maintained library ships; asking for them gives this explanation.
UNAVAILABLE_BACKBONES: dict[str, str] = {
    "vmamba": (
        "VMamba is not available: neither timm nor open_clip ships it, and its reference code needs custom CUDA "
        "kernels (selective scan). Use a timm or open_clip backbone, e.g. 'dinov2.vitb14' or 'sam2.hiera_b+'."
    ),
}


def check_backbone_available(name: str) -> None:
    """Raise a ValueError that explains why, when ``name`` asks for a backbone no maintained library ships."""
    for key, why in UNAVAILABLE_BACKBONES.items():
        if key in name.lower():
            raise ValueError(why)


def resolve_preset(name: str) -> BackbonePreset:
    """Return the preset called ``name``; raise a ValueError that lists the presets otherwise."""
    if name in BACKBONE_PRESETS:
        return BACKBONE_PRESETS[name]
    check_backbone_available(name)
    raise ValueError(f"unknown backbone preset {name!r}; presets are: {', '.join(sorted(BACKBONE_PRESETS))}")


def suggest(word: object, candidates: Sequence[str]) -> str:
    """' (did you mean 'a' or 'b'?)' for the close matches of `word`, '' when there are none."""
    close = difflib.get_close_matches(str(word), list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
