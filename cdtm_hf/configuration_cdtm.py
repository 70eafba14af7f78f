"""CDTM model configuration."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from .presets import BACKBONE_PRESETS, resolve_preset

BACKBONE_LIBRARIES = ("timm", "open_clip")
HEAD_TYPES = ("linear", "mha")

# The two CCA variants. "official" follows github.com/qklee-lz/CDTM (which produced the paper's numbers);
# "paper" follows the text of Eq. 5 and Eq. 8.
CDTM_VARIANTS: dict[str, dict[str, bool]] = {
    "official": {"cca_scale": False, "cca_proj": True, "mlp_residual": True, "keep_prefix_tokens": False},
    "paper": {"cca_scale": True, "cca_proj": False, "mlp_residual": False, "keep_prefix_tokens": True},
}


class CDTMConfig(PretrainedConfig):
    r"""
    Configuration of a [`CDTMForImageClassification`]: a timm or open_clip backbone, an optional Cross-Domain
    Transfer Module (CDTM) on its output tokens, and a classification head.

    Args:
        backbone (`str`):
            A preset name from `cdtm_hf.BACKBONE_PRESETS` (e.g. `"vitb16.laion2b"`) or a model name of
            `backbone_library` (timm: `"vit_base_patch16_clip_224.laion2b"`; open_clip: `"ViT-B-16"`).
        backbone_library (`str`, *optional*): `"timm"` or `"open_clip"`. Filled from the preset when omitted.
        backbone_pretrained (`bool`): load the backbone's pretrained weights when the model is built (not when a
            fine-tuned checkpoint is loaded with `from_pretrained`, which restores all weights from safetensors).
        backbone_pretrained_tag (`str`, *optional*): open_clip pretrained tag (e.g. `"laion400m_e32"`).
        backbone_pretrained_file (`str`, *optional*): local weights file for the backbone (offline use).
        backbone_kwargs (`dict`, *optional*): extra keyword arguments for the backbone factory.
        image_size (`int`): square input size in pixels (224 in the paper).
        use_cdtm (`bool`): `False` gives the plain backbone + head baseline of the ablation (Table VIII).
        num_centers (`int`): n, the number of cluster centres and base matrices (Eq. 1-2). 300 in the paper.
        num_cdtm_blocks (`int`): number of stacked CDTM blocks (1 in the official code).
        mlp_ratio (`float`): hidden width of the CDTM MLP relative to d (4 in the paper).
        cdtm_variant (`str`, *optional*): `"official"` (default) or `"paper"`; sets the four switches below.
        cca_scale (`bool`): multiply the cosine scores by 1/sqrt(d) before the softmax (Eq. 5). Off in the code.
        cca_proj (`bool`): output projection Linear(d, d) after the token mixing. On in the code.
        mlp_residual (`bool`): `x = x + MLP(LN(x))` (code) instead of `x = MLP(LN(x))` (Eq. 8).
        keep_prefix_tokens (`bool`): keep the CLS/register tokens in the CDTM input (p = 197 for ViT-B/16).
        head_type (`str`): `"linear"` (mean over tokens, then Linear) or `"mha"` (a learned query attending over
            the tokens, the multi-head-attention classifier of the medical transfer study).
        mha_num_heads (`int`): heads of the MHA classifier.
        num_tokens (`int`, *optional*): p, derived from the backbone and `image_size`; recorded on save so a
            checkpoint can be rebuilt offline and checked against the CCA base matrices.
        hidden_size (`int`, *optional*): d, the backbone's token width; derived and recorded likewise.
        num_prefix_tokens (`int`, *optional*): CLS/register tokens the backbone emits before its patch tokens.
        data_config (`dict`, *optional*): the backbone's preprocessing (timm data config); derived and recorded.
        initializer_range (`float`): std of the head's initial weights.
    """

    model_type = "cdtm"

    def __init__(
        self,
        backbone: str = "vitb16.laion2b",
        backbone_library: str | None = None,
        backbone_pretrained: bool = False,
        backbone_pretrained_tag: str | None = None,
        backbone_pretrained_file: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        image_size: int = 224,
        use_cdtm: bool = True,
        num_centers: int = 300,
        num_cdtm_blocks: int = 1,
        mlp_ratio: float = 4.0,
        cdtm_variant: str | None = None,
        cca_scale: bool = False,
        cca_proj: bool = True,
        mlp_residual: bool = True,
        keep_prefix_tokens: bool = False,
        head_type: str = "linear",
        mha_num_heads: int = 8,
        num_tokens: int | None = None,
        hidden_size: int | None = None,
        num_prefix_tokens: int | None = None,
        data_config: dict[str, Any] | None = None,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        preset = resolve_preset(backbone) if backbone in BACKBONE_PRESETS else None
        if preset is not None:
            self.backbone_preset = backbone
            backbone = preset.model_name
            backbone_library = backbone_library or preset.library
            backbone_pretrained_tag = backbone_pretrained_tag or preset.pretrained_tag
        else:
            self.backbone_preset = kwargs.pop("backbone_preset", None)
        if cdtm_variant is not None:
            if cdtm_variant not in CDTM_VARIANTS:
                raise ValueError(f"cdtm_variant {cdtm_variant!r} is not one of: {', '.join(CDTM_VARIANTS)}")
            switches = CDTM_VARIANTS[cdtm_variant]
            cca_scale, cca_proj = switches["cca_scale"], switches["cca_proj"]
            mlp_residual, keep_prefix_tokens = switches["mlp_residual"], switches["keep_prefix_tokens"]

        self.backbone = backbone
        self.backbone_library = backbone_library or "timm"
        self.backbone_pretrained = bool(backbone_pretrained)
        self.backbone_pretrained_tag = backbone_pretrained_tag
        self.backbone_pretrained_file = backbone_pretrained_file
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.image_size = int(image_size)
        self.use_cdtm = bool(use_cdtm)
        self.num_centers = int(num_centers)
        self.num_cdtm_blocks = int(num_cdtm_blocks)
        self.mlp_ratio = float(mlp_ratio)
        self.cca_scale = bool(cca_scale)
        self.cca_proj = bool(cca_proj)
        self.mlp_residual = bool(mlp_residual)
        self.keep_prefix_tokens = bool(keep_prefix_tokens)
        self.head_type = head_type
        self.mha_num_heads = int(mha_num_heads)
        self.num_tokens = num_tokens
        self.hidden_size = hidden_size
        self.num_prefix_tokens = num_prefix_tokens
        self.data_config = data_config
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        self.validate_cdtm()

    @property
    def cdtm_variant(self) -> str | None:
        """The name of the variant whose switches this config carries, or None for a custom mix."""
        current = {k: getattr(self, k) for k in CDTM_VARIANTS["official"]}
        return next((name for name, switches in CDTM_VARIANTS.items() if switches == current), None)

    def validate_cdtm(self) -> None:
        """Raise a ValueError that names the bad field and the accepted values."""
        if self.backbone_library not in BACKBONE_LIBRARIES:
            raise ValueError(
                f"backbone_library {self.backbone_library!r} is not one of: {', '.join(BACKBONE_LIBRARIES)}"
            )
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"head_type {self.head_type!r} is not one of: {', '.join(HEAD_TYPES)}")
        if self.image_size <= 0:
            raise ValueError(f"image_size must be a positive number of pixels, got {self.image_size}")
        for name in ("num_centers", "num_cdtm_blocks", "mha_num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.problem_type != "multi_label_classification" and self.num_labels < 2:
            raise ValueError(
                f"num_labels is {self.num_labels}: single-label classification needs at least 2 classes "
                "(use problem_type='multi_label_classification' for one binary label)"
            )
        if self.hidden_size is not None and self.head_type == "mha" and self.hidden_size % self.mha_num_heads:
            raise ValueError(
                f"mha_num_heads={self.mha_num_heads} does not divide the token width d={self.hidden_size}"
            )
