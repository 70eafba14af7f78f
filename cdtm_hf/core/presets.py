"""Backbone presets: the paper's six backbones and the medical transfer study's, as data.

Each preset names a real model id of timm or open_clip. ``pretraining`` is the data set the weights come from,
used in model cards and result tables. A preset is data only: where its weights come from is the library's business
(``BackboneAdapter.load_pretrained``), or a local file passed as ``backbone_pretrained_file``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BackbonePreset:
    library: str  # "timm", "open_clip" or "transformers"
    model_name: str  # timm model name (with .tag), open_clip architecture name, or a transformers model_type
    pretrained_tag: str | None  # open_clip pretrained tag; None for timm (the tag is in the name)
    family: str  # "ViT-B/16", "ConvNeXt-B", ...
    pretraining: str  # "LAION-2B", "ImageNet-21K", ...
    source: str  # which paper uses it ("cdtm", "transfer", or "pathology" for the foundation models)
    # issue 20: the foundation-model presets. The architecture is `model_name` + `backbone_kwargs` (the model's
    # published config), so the model builds offline at random with the right token layout; its weights come from one
    # Hub repo, fetched only by `BackboneAdapter.load_pretrained`.
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    weights_repo: str | None = None  # the Hub repo of the weights (None: the library's own, e.g. timm's tag)
    weights_format: str | None = None  # "timm" (a timm checkpoint), "transformers", "open_clip" (its visual.trunk)
    gated: bool = False  # the repo asks users to accept its terms before downloading
    licence: str | None = None
    data_config: dict[str, Any] | None = None  # the normalisation the model was trained with (timm data-config keys)


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

IMAGENET_NORM = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
_CLIP_NORM = {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711)}
_H_OPTIMUS_NORM = {"mean": (0.707223, 0.578729, 0.703617), "std": (0.211883, 0.230117, 0.177517)}


def _norm(values: dict[str, Any], size: int = 224, interpolation: str = "bicubic", crop_pct: float = 1.0) -> dict:
    return {"input_size": (3, size, size), "interpolation": interpolation, "crop_pct": crop_pct,
            "crop_mode": "center", **values}


# Pathology and medical foundation models (issue 20). Sources read for each: the model's Hub card (usage code), and
# kaiko-ai/eva's registrations (src/eva/vision/models/networks/backbones/pathology/*.py). `mlp_layer` is a name that
# the adapter resolves in `timm.layers` (a class does not go into a JSON config); `act_layer` is timm's own string.
FOUNDATION_PRESETS: dict[str, BackbonePreset] = {
    # UNI (Chen et al., Nat. Med. 2024). Card and eva: timm vit_large_patch16_224, img_size 224, patch 16,
    # init_values 1e-5, num_classes 0, dynamic_img_size True; ImageNet mean/std, 224 px. ~303 M parameters.
    "uni": BackbonePreset(
        "timm", "vit_large_patch16_224", None, "UNI ViT-L/16", "Mass-100K (H&E)", "pathology",
        backbone_kwargs={"init_values": 1e-5, "dynamic_img_size": True}, weights_repo="MahmoodLab/UNI",
        weights_format="timm", gated=True, licence="CC-BY-NC-ND-4.0", data_config=_norm(IMAGENET_NORM),
    ),
    # UNI2-h. Card and eva give the exact kwargs: vit_giant_patch14_224 with patch 14, depth 24, 24 heads,
    # embed_dim 1536, mlp_ratio 2.66667*2, SwiGLUPacked + SiLU, 8 register tokens, no_embed_class, init_values 1e-5.
    "uni2-h": BackbonePreset(
        "timm", "vit_giant_patch14_224", None, "UNI2-h ViT-H/14", "Mass-200M+ (H&E, IHC)", "pathology",
        backbone_kwargs={"patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5, "embed_dim": 1536,
                         "mlp_ratio": 2.66667 * 2, "no_embed_class": True, "mlp_layer": "SwiGLUPacked",
                         "act_layer": "silu", "reg_tokens": 8, "dynamic_img_size": True},
        weights_repo="MahmoodLab/UNI2-h", weights_format="timm", gated=True, licence="CC-BY-NC-ND-4.0",
        data_config=_norm(IMAGENET_NORM),
    ),
    # Virchow2 (Zimmermann et al. 2024). Card and eva: timm hf-hub:paige-ai/Virchow2 with mlp_layer=SwiGLUPacked,
    # act_layer=SiLU. The rest (vit_huge_patch14_224, img_size 224, init_values 1e-5, mlp_ratio 5.3375, reg_tokens 4,
    # dynamic_img_size) is from the repo's config.json as we recall it: not re-read here (the config.json was not in
    # the corpora available); the build gives the published 632 M parameters, 1 + 4 prefix tokens and d = 1280.
    # Normalisation: ImageNet mean/std at 224 px (the card's resolve_data_config); also not re-read.
    "virchow2": BackbonePreset(
        "timm", "vit_huge_patch14_224", None, "Virchow2 ViT-H/14", "3.1 M WSIs (H&E, IHC)", "pathology",
        backbone_kwargs={"init_values": 1e-5, "mlp_ratio": 5.3375, "reg_tokens": 4, "mlp_layer": "SwiGLUPacked",
                         "act_layer": "silu", "dynamic_img_size": True},
        weights_repo="paige-ai/Virchow2", weights_format="timm", gated=True, licence="CC-BY-NC-ND-4.0",
        data_config=_norm(IMAGENET_NORM),
    ),
    # H-optimus-0. Card: timm hf-hub:bioptimus/H-optimus-0 with init_values 1e-5, dynamic_img_size False; its own
    # mean (0.707223, 0.578729, 0.703617) / std (0.211883, 0.230117, 0.177517), 224 px at 0.5 um/px; licence
    # apache-2.0 (card header). Architecture vit_giant_patch14_reg4_dinov2 (1.1 B, 4 registers): from its config.json
    # as we recall it, not re-read here. Gated: the card asks for a Hub login; we treat it as gated.
    "h-optimus-0": BackbonePreset(
        "timm", "vit_giant_patch14_reg4_dinov2", None, "H-optimus-0 ViT-g/14", "500 K WSIs (H&E)", "pathology",
        backbone_kwargs={"init_values": 1e-5, "dynamic_img_size": False}, weights_repo="bioptimus/H-optimus-0",
        weights_format="timm", gated=True, licence="Apache-2.0", data_config=_norm(_H_OPTIMUS_NORM),
    ),
    # H-optimus-1: the same architecture and normalisation as H-optimus-0 (Bioptimus' card); licence not confirmed
    # here (non-commercial terms on the gated repo, as we recall).
    "h-optimus-1": BackbonePreset(
        "timm", "vit_giant_patch14_reg4_dinov2", None, "H-optimus-1 ViT-g/14", "1 M+ WSIs (H&E)", "pathology",
        backbone_kwargs={"init_values": 1e-5, "dynamic_img_size": False}, weights_repo="bioptimus/H-optimus-1",
        weights_format="timm", gated=True, licence="other (non-commercial; not confirmed here)",
        data_config=_norm(_H_OPTIMUS_NORM),
    ),
    # Prov-GigaPath tile encoder (Xu et al., Nature 2024). eva: timm hf_hub:prov-gigapath/prov-gigapath with no extra
    # kwargs. Its config.json (as we recall it, not re-read here): vit_giant_patch14_dinov2 with patch_size 16 (so
    # 14x14 = 196 tokens at 224 px despite the name), embed_dim 1536, depth 40, 24 heads, init_values 1e-5,
    # mlp_ratio 5.33334; ImageNet mean/std at 224 px. Gated (the card asks to accept terms and set HF_TOKEN).
    "prov-gigapath": BackbonePreset(
        "timm", "vit_giant_patch14_dinov2", None, "Prov-GigaPath ViT-g/14", "Prov-Path 1.3 B tiles", "pathology",
        backbone_kwargs={"patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24, "init_values": 1e-5,
                         "mlp_ratio": 5.33334, "dynamic_img_size": True},
        weights_repo="prov-gigapath/prov-gigapath", weights_format="timm", gated=True, licence="Apache-2.0",
        data_config=_norm(IMAGENET_NORM),
    ),
    # Phikon (Filiot et al. 2023): a transformers ViTModel, ViT-B/16 (hidden 768, 12 layers, 12 heads, 224 px).
    # eva loads it with AutoModel. Config values as we recall the repo's config.json (not re-read here); ImageNet
    # mean/std at 224 px (its preprocessor_config.json, likewise).
    "phikon": BackbonePreset(
        "transformers", "vit", None, "Phikon ViT-B/16", "TCGA 43 M tiles (iBOT)", "pathology",
        backbone_kwargs={"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                         "intermediate_size": 3072, "image_size": 224, "patch_size": 16, "qkv_bias": True,
                         "layer_norm_eps": 1e-12},
        weights_repo="owkin/phikon", weights_format="transformers", gated=False,
        licence="other (Owkin non-commercial)", data_config=_norm(IMAGENET_NORM, interpolation="bilinear"),
    ),
    # Phikon-v2 (Filiot et al. 2024): a transformers Dinov2Model, ViT-L/16 (hidden 1024, 24 layers, 16 heads, patch
    # 16, 224 px). Config values as we recall them (not re-read here); ImageNet mean/std at 224 px.
    "phikon-v2": BackbonePreset(
        "transformers", "dinov2", None, "Phikon-v2 ViT-L/16", "PANCAN-XL 456 M tiles (DINOv2)", "pathology",
        backbone_kwargs={"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "mlp_ratio": 4,
                         "image_size": 224, "patch_size": 16, "layerscale_value": 1e-5},
        weights_repo="owkin/phikon-v2", weights_format="transformers", gated=False,
        licence="other (Owkin non-commercial)", data_config=_norm(IMAGENET_NORM, interpolation="bilinear"),
    ),
    # BiomedCLIP (Zhang et al. 2023), open_clip hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224.
    # Its image tower is open_clip's TimmModel around timm vit_base_patch16_224 (timm_pool "", timm_proj linear); the
    # adapter builds that timm trunk directly, so the model builds offline, and loads the trunk's weights
    # (`visual.trunk.*`) from the open_clip checkpoint. OpenAI CLIP mean/std at 224 px. MIT licence, not gated.
    "biomedclip": BackbonePreset(
        "timm", "vit_base_patch16_224", None, "BiomedCLIP ViT-B/16", "PMC-15M", "pathology",
        weights_repo="microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", weights_format="open_clip",
        gated=False, licence="MIT", data_config=_norm(_CLIP_NORM),
    ),
}
BACKBONE_PRESETS.update(FOUNDATION_PRESETS)

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
