"""CDTM model configuration."""

from __future__ import annotations

import logging
from typing import Any

from transformers import PretrainedConfig

from .backbone_names import BACKBONE_LIBRARIES, FieldError
from .presets import BACKBONE_PRESETS, resolve_preset

HEAD_TYPES = ("linear", "mha")

# The two CCA variants. "official" follows github.com/qklee-lz/CDTM (which produced the paper's numbers);
# "paper" follows the text of Eq. 5 and Eq. 8.
CDTM_VARIANTS: dict[str, dict[str, bool]] = {
    "official": {"cca_scale": False, "cca_proj": True, "mlp_residual": True, "keep_prefix_tokens": False},
    "paper": {"cca_scale": True, "cca_proj": False, "mlp_residual": False, "keep_prefix_tokens": True},
}
DEFAULT_CDTM_VARIANT = "official"

# The largest CDTM a config may build by default (issue 20): 100 M parameters, 400 MB in float32 and 1.2 GB more of
# AdamW state. The base matrices are n * p^2: 11.5 M for ViT-B/16 at 224 px (n = 300, p = 196), 19.7 M at p = 256
# (ViT-L/14, ViT-H/14 at 224 px), 315 M at p = 1,024 (ViT-L/14 at 448 px), which is refused unless asked for.
DEFAULT_CDTM_MAX_PARAMETERS = 100_000_000


def estimate_cdtm_parameters(
    hidden_size: int, num_tokens: int, num_centers: int, num_cdtm_blocks: int = 1, mlp_ratio: float = 4.0,
    cca_proj: bool = True,
) -> int:
    """The exact parameter count of a `CrossDomainTransferModule`, before building it.

    Per block: centres n*d, base matrices n*p^2, the output projection d^2 + d (official variant), two LayerNorms
    4d and the MLP 2*d*h + h + d (h = int(d * mlp_ratio)); plus the module's two outer LayerNorms, 4d.
    """
    d, p, n, h = int(hidden_size), int(num_tokens), int(num_centers), int(hidden_size * mlp_ratio)
    block = n * d + n * p * p + (d * d + d if cca_proj else 0) + 4 * d + 2 * d * h + h + d
    return int(num_cdtm_blocks) * block + 4 * d


# ---- issue 17: what a loaded checkpoint must hold (the model's `from_pretrained` is strict) ---------------------
class HoldLoadReport(logging.Filter):
    """Holds back transformers' LOAD REPORT records (re-emitted by `from_pretrained` unless it raises instead)."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in str(record.msg):
            self.records.append(record)
            return False
        return True


class CheckpointKeysError(ValueError):
    """A checkpoint lacks tensors of the model, or holds tensors it has not (issue 17: never a silent random head)."""


def checkpoint_keys_problem(info: dict, shown: int = 8) -> str | None:
    """'missing ...; unexpected ...' from `from_pretrained`'s loading info, or None when every key matched."""
    parts = []
    for kind in ("missing", "unexpected"):
        keys = sorted(info.get(f"{kind}_keys") or ())
        if keys:
            more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
            parts.append(f"{kind} {len(keys)} tensor(s): {', '.join(keys[:shown])}{more}")
    return "; ".join(parts) or None


def load_strictly(load, args: tuple, kwargs: dict, allow_missing_keys: bool = False):
    """`load(*args, **kwargs)` (a `from_pretrained`) that raises `CheckpointKeysError` on a missing or unexpected
    tensor unless `allow_missing_keys`; transformers' multi-line load report is shown only when nothing is raised."""
    want_info = kwargs.pop("output_loading_info", False)
    held = HoldLoadReport()
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_logger.addFilter(held)
    source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
    try:
        model, info = load(*args, output_loading_info=True, **kwargs)
    except RuntimeError as err:  # a tensor of another shape: the checkpoint is of another model or damaged
        report_logger.removeFilter(held)
        keys = sorted(line.split("|")[0].strip() for r in held.records for line in r.getMessage().splitlines()
                      if "MISMATCH" in line and "|" in line)
        if "ignore_mismatched_sizes" not in str(err) or not keys:
            for record in held.records:
                report_logger.handle(record)
            raise
        raise CheckpointKeysError(
            f"the checkpoint {source} does not match the model: {len(keys)} tensor(s) of another shape: "
            f"{', '.join(keys[:8])}{' and more' if len(keys) > 8 else ''}. It is from another model (e.g. other "
            "classes) or damaged; download or save it again, or pass ignore_mismatched_sizes=True to replace them"
        ) from None
    finally:
        report_logger.removeFilter(held)
    problem = None if allow_missing_keys else checkpoint_keys_problem(info)
    for record in held.records if not problem else ():
        report_logger.handle(record)
    if problem:
        raise CheckpointKeysError(
            f"the checkpoint {source} does not match the model: {problem}. The file is incomplete or from another "
            "model; download or save it again (only a backbone-only checkpoint may pass allow_missing_keys=True)"
        )
    return (model, info) if want_info else model


def check_model_fields(
    backbone_library: str | None = None,
    head_type: str = "linear",
    image_size: int | None = 224,
    num_centers: int = 300,
    num_cdtm_blocks: int = 1,
    mha_num_heads: int = 8,
    mlp_ratio: float = 4.0,
    cdtm_variant: str | None = None,
) -> None:
    """The one check of a CDTM model's architecture fields, for `CDTMConfig` and the command line alike.

    Raises a `FieldError` (a `ValueError`) that names the field, the bad value and the accepted ones. `None` means
    "not chosen yet" for `backbone_library` (a preset fills it), `image_size` (a checkpoint's own) and `cdtm_variant`.
    """
    problems = {
        "backbone_library": backbone_library is not None and backbone_library not in BACKBONE_LIBRARIES and
        f"backbone_library {backbone_library!r} is not one of: {', '.join(BACKBONE_LIBRARIES)} (or leave it out "
        "for a preset)",
        "head_type": head_type not in HEAD_TYPES and f"head_type {head_type!r} is not one of: {', '.join(HEAD_TYPES)}",
        "cdtm_variant": cdtm_variant is not None and cdtm_variant not in CDTM_VARIANTS and
        f"cdtm_variant {cdtm_variant!r} is not one of: {', '.join(CDTM_VARIANTS)}",
        "image_size": image_size is not None and image_size <= 0 and
        f"image_size must be a positive number of pixels, got {image_size}",
        "num_centers": num_centers < 1 and f"num_centers (n in Eq. 1) must be >= 1, got {num_centers}",
        "num_cdtm_blocks": num_cdtm_blocks < 1 and f"num_cdtm_blocks must be >= 1, got {num_cdtm_blocks}; use "
        "use_cdtm=False (--use_cdtm False) for a model without CDTM",
        "mha_num_heads": mha_num_heads < 1 and f"mha_num_heads must be >= 1, got {mha_num_heads}",
        "mlp_ratio": mlp_ratio <= 0 and f"mlp_ratio must be > 0, got {mlp_ratio}",
    }
    for name, problem in problems.items():
        if problem:
            raise FieldError(name, problem)


def check_cdtm_size(config: Any) -> None:
    """Refuse a CDTM above `config.cdtm_max_parameters` before it is built, with the count and the remedies."""
    limit = getattr(config, "cdtm_max_parameters", None)
    if not config.use_cdtm or limit is None:
        return
    count = estimate_cdtm_parameters(config.hidden_size, config.num_tokens, config.num_centers, config.num_cdtm_blocks,
                                     config.mlp_ratio, config.cca_proj)
    if count > limit:
        bases = config.num_cdtm_blocks * config.num_centers * config.num_tokens ** 2
        raise FieldError(
            "cdtm_max_parameters",
            f"this CDTM would have {count:,} parameters ({bases:,} in the n x p x p base matrices: n = "
            f"{config.num_centers} centres, p = {config.num_tokens} tokens), above cdtm_max_parameters = {limit:,}. "
            "Remedies: pool the token grid (--cdtm_token_grid / CDTMConfig(cdtm_token_grid=...), e.g. 14 gives p = "
            "196), use fewer centres (--num_centers), a smaller image (--image_size), or raise the limit "
            "(--cdtm_max_parameters; None for no limit)",
        )


def resolve_cdtm_switches(cdtm_variant: str | None, **switches: bool | None) -> dict[str, bool]:
    """The four CCA switches: the variant's, with each switch passed explicitly kept; a conflict is an error.

    Args:
        cdtm_variant (`str`, *optional*): `"official"` or `"paper"`; `None` is the official code's, unless every
            switch is given (a saved config, or a custom mix).
        switches (`bool`, *optional*): `cca_scale`, `cca_proj`, `mlp_residual`, `keep_prefix_tokens`; `None` takes the
            variant's value.
    """
    check_model_fields(cdtm_variant=cdtm_variant)
    base = CDTM_VARIANTS[cdtm_variant or DEFAULT_CDTM_VARIANT]
    if cdtm_variant is not None:
        conflicts = [f"{k}={v}" for k, v in switches.items() if v is not None and bool(v) != base[k]]
        if conflicts:
            raise FieldError(
                "cdtm_variant", f"cdtm_variant={cdtm_variant!r} sets {', '.join(f'{k}={base[k]}' for k in base)}, but "
                f"{', '.join(conflicts)} was passed too; pass either the variant or the switches (a custom mix)"
            )
    return {k: bool(base[k] if switches.get(k) is None else switches[k]) for k in base}


class CDTMConfig(PretrainedConfig):
    r"""
    Configuration of a [`CDTMForImageClassification`]: a timm or open_clip backbone, an optional Cross-Domain
    Transfer Module (CDTM) on its output tokens, and a classification head.

    Args:
        backbone (`str`):
            A preset name from `cdtm_hf.BACKBONE_PRESETS` (e.g. `"vitb16.laion2b"`) or a model name of
            `backbone_library` (timm: `"vit_base_patch16_clip_224.laion2b"`; open_clip: `"ViT-B-16"`).
        backbone_library (`str`, *optional*): `"timm"` or `"open_clip"`. Filled from the preset when omitted.
        backbone_pretrained (`bool`): a record of where the backbone's weights came from: `True` once
            [`CDTMForImageClassification.load_backbone_weights`] has loaded pretrained weights (through
            `from_backbone(config, pretrained=True)`), `False` for a random backbone. It never causes a download:
            loading is asked for explicitly.
        backbone_pretrained_tag (`str`, *optional*): open_clip pretrained tag (e.g. `"laion400m_e32"`); a preset
            fills it.
        backbone_pretrained_file (`str`, *optional*): local weights file for the backbone (offline use); recorded.
        backbone_kwargs (`dict`, *optional*): extra keyword arguments for the backbone factory.
        image_size (`int`): square input size in pixels (224 in the paper).
        use_cdtm (`bool`): `False` gives the plain backbone + head baseline of the ablation (Table VIII).
        num_centers (`int`): n, the number of cluster centres and base matrices (Eq. 1-2). 300 in the paper.
        num_cdtm_blocks (`int`): number of stacked CDTM blocks (1 in the official code).
        mlp_ratio (`float`): hidden width of the CDTM MLP relative to d (4 in the paper).
        cdtm_variant (`str`, *optional*): `"official"` or `"paper"`: sets the four switches below. Without it the
            switches default to the official code's. A switch passed explicitly that contradicts the variant is an
            error, never silently overridden.
        cca_scale (`bool`, *optional*): multiply the cosine scores by 1/sqrt(d) before the softmax (Eq. 5). Off in
            the code.
        cca_proj (`bool`, *optional*): output projection Linear(d, d) after the token mixing. On in the code.
        mlp_residual (`bool`, *optional*): `x = x + MLP(LN(x))` (code) instead of `x = MLP(LN(x))` (Eq. 8).
        keep_prefix_tokens (`bool`, *optional*): keep the CLS/register tokens in the CDTM input (p = 197 for
            ViT-B/16).
        head_type (`str`): `"linear"` (mean over tokens, then Linear) or `"mha"` (a learned query attending over
            the tokens, the multi-head-attention classifier of the medical transfer study).
        mha_num_heads (`int`): heads of the MHA classifier.
        num_tokens (`int`, *optional*): p, derived from the backbone and `image_size`; recorded on save so a
            checkpoint can be rebuilt offline and checked against the CCA base matrices.
        hidden_size (`int`, *optional*): d, the backbone's token width; derived and recorded likewise.
        num_prefix_tokens (`int`, *optional*): CLS/register tokens the backbone emits before its patch tokens.
        data_config (`dict`, *optional*): the backbone's preprocessing (timm data config); derived and recorded.
        initializer_range (`float`): std of the head's initial weights.
        cdtm_token_grid (`int`, *optional*): pool the backbone's h x w token grid to g x g (adaptive average
            pooling) before CDTM, so the base matrices are g^2 x g^2 instead of p x p. None keeps every token.
        cdtm_max_parameters (`int`, *optional*): refuse to build a CDTM with more parameters than this
            (`estimate_cdtm_parameters`; default 100 M); None removes the limit.
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
        cca_scale: bool | None = None,
        cca_proj: bool | None = None,
        mlp_residual: bool | None = None,
        keep_prefix_tokens: bool | None = None,
        head_type: str = "linear",
        mha_num_heads: int = 8,
        num_tokens: int | None = None,
        hidden_size: int | None = None,
        num_prefix_tokens: int | None = None,
        data_config: dict[str, Any] | None = None,
        initializer_range: float = 0.02,
        cdtm_token_grid: int | None = None,
        cdtm_max_parameters: int | None = DEFAULT_CDTM_MAX_PARAMETERS,
        **kwargs,
    ):
        preset = resolve_preset(backbone) if backbone in BACKBONE_PRESETS else None
        if preset is not None:
            self.backbone_preset = backbone
            backbone = preset.model_name
            backbone_library = backbone_library or preset.library
            backbone_pretrained_tag = backbone_pretrained_tag or preset.pretrained_tag
            # issue 20: a foundation model's architecture and normalisation come with its preset
            backbone_kwargs = {**preset.backbone_kwargs, **(backbone_kwargs or {})}
            if data_config is None and preset.data_config is not None:
                data_config = {**preset.data_config, "input_size": (3, int(image_size), int(image_size))}
        else:
            self.backbone_preset = kwargs.pop("backbone_preset", None)
        switches = resolve_cdtm_switches(
            cdtm_variant, cca_scale=cca_scale, cca_proj=cca_proj, mlp_residual=mlp_residual,
            keep_prefix_tokens=keep_prefix_tokens,
        )

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
        self.cca_scale = switches["cca_scale"]
        self.cca_proj = switches["cca_proj"]
        self.mlp_residual = switches["mlp_residual"]
        self.keep_prefix_tokens = switches["keep_prefix_tokens"]
        self.head_type = head_type
        self.mha_num_heads = int(mha_num_heads)
        self.num_tokens = num_tokens
        self.hidden_size = hidden_size
        self.num_prefix_tokens = num_prefix_tokens
        self.data_config = data_config
        self.initializer_range = initializer_range
        # issue 20: pool the h x w token grid to cdtm_token_grid x cdtm_token_grid before CDTM; refuse a CDTM larger
        # than cdtm_max_parameters (None: no limit)
        self.cdtm_token_grid = None if cdtm_token_grid is None else int(cdtm_token_grid)
        self.cdtm_max_parameters = None if cdtm_max_parameters is None else int(cdtm_max_parameters)
        super().__init__(**kwargs)
        self.validate_cdtm()

    @property
    def cdtm_variant(self) -> str | None:
        """The name of the variant whose switches this config carries, or None for a custom mix."""
        current = {k: getattr(self, k) for k in CDTM_VARIANTS[DEFAULT_CDTM_VARIANT]}
        return next((name for name, switches in CDTM_VARIANTS.items() if switches == current), None)

    def validate_cdtm(self) -> None:
        """Raise a ValueError that names the bad field and the accepted values (`check_model_fields`)."""
        check_model_fields(
            backbone_library=self.backbone_library, head_type=self.head_type, image_size=self.image_size,
            num_centers=self.num_centers, num_cdtm_blocks=self.num_cdtm_blocks, mha_num_heads=self.mha_num_heads,
            mlp_ratio=self.mlp_ratio,
        )
        if self.problem_type != "multi_label_classification" and self.num_labels < 2:
            raise ValueError(
                f"num_labels is {self.num_labels}: single-label classification needs at least 2 classes "
                "(use problem_type='multi_label_classification' for one binary label)"
            )
        if self.cdtm_token_grid is not None and self.cdtm_token_grid < 1:
            raise FieldError("cdtm_token_grid",
                             f"cdtm_token_grid must be >= 1 (a g x g grid), got {self.cdtm_token_grid}")
        if self.hidden_size is not None and self.head_type == "mha" and self.hidden_size % self.mha_num_heads:
            raise ValueError(
                f"mha_num_heads={self.mha_num_heads} does not divide the token width d={self.hidden_size}"
            )
