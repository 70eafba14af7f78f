"""One adapter that turns a timm model or an open_clip visual tower into a (B, p, d) token tensor.

ViT-like models give their token sequence (prefix tokens - CLS, registers, distillation - are split off);
CNN feature maps (B, d, h, w) are flattened h*w -> p, as in Sec. II-A of the CDTM paper.

The adapter is always built with random weights (`pretrained=False`), as transformers' `TimmWrapper` builds its timm
model; pretrained weights come in through one explicit method, [`BackboneAdapter.load_pretrained`].
"""

from __future__ import annotations

import inspect
import pickle
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .presets import BACKBONE_PRESETS, check_backbone_available, suggest

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class BackboneTokens:
    """Backbone output: patch/spatial tokens (B, p, d) and prefix tokens (B, k, d), k possibly 0.

    `grid` is the (h, w) of the tokens in the row-major order they come in, where the backbone reports one.
    """

    tokens: torch.Tensor
    prefix_tokens: torch.Tensor
    grid: tuple[int, int] | None = None


#: what a code-running pickle is told (issue 17): it is not loaded, and safetensors is the way
NOT_PLAIN_TENSORS = ("{file} is not a plain tensor file (it holds pickled objects that would run code) and will not be "
                     "loaded; use a safetensors file (safetensors.torch.save_file, or save_pretrained)")


class BackboneWeightsError(RuntimeError):
    """The pretrained weights of a backbone could not be loaded (offline, unknown tag, bad file)."""


def _accepts_kwarg(fn, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


# timm and open_clip are imported where they are used, not at the top: `import cdtm_hf` and the argument checks of
# every command line then stay free of them (they cost seconds), and remote code needs open_clip only for open_clip
# backbones.
def _timm():
    import timm

    return timm


def _open_clip():
    try:
        import open_clip
    except ImportError as err:  # pragma: no cover - exercised only where open_clip is absent
        raise ImportError("open_clip backbones need open_clip_torch: pip install open_clip_torch") from err
    return open_clip


def backbone_problem(name: Any, library: str | None = None) -> str | None:
    """Why `name` cannot be built as a backbone of `library`, or None when it can: the one check of a backbone name.

    Args:
        name (`Any`): a preset of `cdtm_hf.BACKBONE_PRESETS`, a timm model name or an open_clip model name.
        library (`str`, *optional*): `"timm"` or `"open_clip"`; None accepts a preset or a timm model.

    Returns:
        `str | None`: the explanation (with the closest presets), or None. A preset costs no import; any other name
        is looked up in the library's own registry (`timm.is_model`, `open_clip.list_models`).
    """
    if not isinstance(name, str) or not name:
        return f"backbone must be a preset or model name, got {name!r}"
    if name in BACKBONE_PRESETS:
        return None
    try:
        check_backbone_available(name)
    except ValueError as err:
        return str(err)
    if library in (None, "timm") and _timm().is_model(name):
        return None
    if library in (None, "open_clip") and name in _open_clip().list_models():
        if library == "open_clip":
            return None
        return f"{name!r} is an open_clip model: set backbone_library open_clip (and backbone_pretrained_tag)"
    kind = {"timm": "a timm model", "open_clip": "an open_clip model"}.get(library or "timm", f"a {library} model")
    return (f"unknown backbone {name!r}: not a preset of cdtm_hf.BACKBONE_PRESETS nor {kind}"
            f"{suggest(name, list(BACKBONE_PRESETS))}; presets: {', '.join(BACKBONE_PRESETS)}")


def _timm_kwargs(name: str, image_size: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`timm.create_model` keyword arguments: no classifier, and `img_size` for ViT-like models that take it."""
    problem = backbone_problem(name, "timm")
    if problem:
        raise ValueError(problem)
    timm = _timm()
    kwargs = {"num_classes": 0, **kwargs}
    entry = timm.models.model_entrypoint(timm.models.get_arch_name(name))
    if "img_size" not in kwargs and _accepts_kwarg(entry, "img_size"):
        kwargs["img_size"] = image_size
    return kwargs


def _create_timm(name: str, image_size: int, kwargs: dict[str, Any], **pretrained: Any) -> nn.Module:
    kwargs = _timm_kwargs(name, image_size, kwargs)
    timm = _timm()
    try:
        return timm.create_model(name, **pretrained, **kwargs)
    except TypeError as err:  # an entrypoint that takes **kwargs but not img_size
        if "img_size" not in str(err) or "img_size" not in kwargs:
            raise
        kwargs.pop("img_size")
        return timm.create_model(name, **pretrained, **kwargs)


def _open_clip_visual(name: str, image_size: int, weights: str | None = None) -> nn.Module:
    """The image tower of an open_clip model; random unless `weights` (a pretrained tag or a local file) is given."""
    open_clip = _open_clip()
    if name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip backbone {name!r}; list names with open_clip.list_models()")
    if weights is None:
        # Build only the image tower: the text tower of a CLIP model is never used here.
        cfg = open_clip.get_model_config(name)
        vision_cfg = dict(cfg["vision_cfg"], image_size=image_size)
        return open_clip.model._build_vision_tower(cfg["embed_dim"], vision_cfg, quick_gelu=cfg.get("quick_gelu", False))
    return open_clip.create_model(name, pretrained=weights, force_image_size=image_size).visual


def _is_nhwc(model: nn.Module) -> bool:
    return str(getattr(model, "output_fmt", "NCHW")).endswith("NHWC")


class BackboneAdapter(nn.Module):
    """Wraps a timm model or an open_clip visual tower; `forward(pixel_values) -> BackboneTokens`.

    Args:
        library (`str`): `"timm"` or `"open_clip"`.
        name (`str`): the model name in that library.
        image_size (`int`): the square input size; the token count p follows from it.
        model_kwargs (`dict`, *optional*): extra keyword arguments for `timm.create_model`.

    The token layout is read once, from one forward pass on a blank image (free under `from_pretrained`, whose
    parameters are still on the meta device): `num_tokens` p, `hidden_size` d, `num_prefix_tokens` k and `grid_size`
    (h, w) of the tokens, or None where the backbone reports no grid.
    """

    def __init__(self, library: str, name: str, image_size: int, model_kwargs: dict[str, Any] | None = None):
        super().__init__()
        check_backbone_available(name)
        self.library, self.name, self.image_size = library, name, image_size
        self.model_kwargs = dict(model_kwargs or {})
        self._preprocess_cfg: dict[str, Any] | None = None
        if library == "timm":
            self.model = _create_timm(name, image_size, self.model_kwargs, pretrained=False)
            self._kind = "timm"
        elif library == "open_clip":
            self._set_open_clip_visual(_open_clip_visual(name, image_size))
        else:
            raise ValueError(f"backbone_library {library!r} is not one of: timm, open_clip")
        self.num_prefix_tokens = 1 if self._kind == "open_clip_vit" else int(getattr(self.model, "num_prefix_tokens", 0) or 0)
        self.num_tokens, self.hidden_size, self.grid_size = self._probe_layout()

    def _set_open_clip_visual(self, visual: nn.Module) -> None:
        if hasattr(visual, "trunk"):  # open_clip TimmModel: the trunk is a timm model (ConvNeXt etc.)
            self.model, self._kind = visual.trunk, "timm"
            self._preprocess_cfg = getattr(visual, "preprocess_cfg", None)
        else:
            self.model, self._kind = visual, "open_clip_vit"

    # ---- pretrained weights: the one explicit path --------------------------------------------------------------
    def load_pretrained(self, tag: str | None = None, file: str | None = None) -> None:
        """Load the backbone's pretrained weights into this adapter, in place.

        timm: the model's own pretrained weights (its Hub copy, through timm's loader, with timm's checkpoint
        filters such as position-embedding resampling), or `file` (safetensors, or a torch file read with
        `weights_only=True`). open_clip: the pretrained `tag` (e.g. `"laion400m_e32"`) or `file`.

        Raises:
            `BackboneWeightsError`: the weights cannot be had (offline, unknown tag, unreadable file); the message
                names the model and the remedies.
        """
        try:
            if self.library == "timm":
                overlay = {"pretrained_cfg_overlay": dict(file=str(file))} if file else {}
                source = _create_timm(self.name, self.image_size, self.model_kwargs, pretrained=True, **overlay)
            else:
                weights = str(file) if file else tag
                if weights is None:
                    raise ValueError(
                        f"open_clip backbone {self.name!r} needs backbone_pretrained_tag (one of: "
                        f"{', '.join(_open_clip().list_pretrained_tags_by_model(self.name)) or 'none'}) or a file"
                    )
                visual = _open_clip_visual(self.name, self.image_size, weights)
                source = visual.trunk if hasattr(visual, "trunk") else visual
        except pickle.UnpicklingError:  # issue 17: never torch's advice to retry with weights_only=False
            raise BackboneWeightsError(NOT_PLAIN_TENSORS.format(file=file or self.name)) from None
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            where = f"file {file!r}" if file else (f"tag {tag!r}" if tag else "the model's Hub weights")
            raise BackboneWeightsError(
                f"could not load the pretrained weights of {self.library} backbone {self.name!r} from {where}: "
                f"{type(err).__name__}: {err}. Offline, download them once with network access, or pass a local "
                "weights file (--backbone_pretrained_file / CDTMConfig(backbone_pretrained_file=...)), or start from "
                "random weights (--no_backbone_pretrained / backbone_pretrained=False)."
            ) from err
        self.model.load_state_dict(source.state_dict())

    def reinitialize(self) -> None:
        """Replace the weights by the library's own random initialisation (the `scratch` fine-tuning mode)."""
        fresh = BackboneAdapter(self.library, self.name, self.image_size, self.model_kwargs)
        self.load_state_dict(fresh.state_dict())

    # ---- layout -------------------------------------------------------------------------------------------------
    @property
    def has_class_token(self) -> bool:
        if self._kind == "open_clip_vit":
            return True
        return bool(getattr(self.model, "cls_token", None) is not None)

    def data_config(self) -> dict[str, Any]:
        """The preprocessing (timm data-config format) at this adapter's image size."""
        cfg = self._preprocess_cfg or (getattr(self.model, "preprocess_cfg", None) if self._kind == "open_clip_vit" else None)
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
        data_config = _timm().data.resolve_data_config({}, model=self.model)
        data_config["input_size"] = (3, self.image_size, self.image_size)
        return {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in data_config.items()}

    def _patch_grid(self) -> tuple[int, int] | None:
        """A ViT's patch grid: timm `patch_embed.grid_size`, open_clip `grid_size`."""
        for grid in (getattr(getattr(self.model, "patch_embed", None), "grid_size", None),
                     getattr(self.model, "grid_size", None)):
            if grid is not None:
                return int(grid[0]), int(grid[1])
        return None

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
            return BackboneTokens(out["image_intermediates"][-1], out["image_intermediates_prefix"][-1], self._patch_grid())
        features = self.model.forward_features(pixel_values)
        if isinstance(features, (list, tuple)):
            features = features[-1]
        if features.ndim == 4:  # a feature map: h*w tokens, row-major
            if _is_nhwc(self.model):
                grid, tokens = (int(features.shape[1]), int(features.shape[2])), features.flatten(1, 2)
            else:
                grid, tokens = (int(features.shape[2]), int(features.shape[3])), features.flatten(2).transpose(1, 2)
            return BackboneTokens(tokens, tokens[:, :0], grid)
        if features.ndim != 3:
            raise ValueError(f"backbone returned features of shape {tuple(features.shape)}; expected (B,N,d) or 4-D")
        k = self.num_prefix_tokens
        return BackboneTokens(features[:, k:], features[:, :k], self._patch_grid())

    @torch.no_grad()
    def _probe_layout(self) -> tuple[int, int, tuple[int, int] | None]:
        """(p, d, grid) from one forward pass on a single blank image at this adapter's image size."""
        param = next(self.parameters())
        was_training = self.training
        self.eval()
        try:
            probe = torch.zeros(1, 3, self.image_size, self.image_size, device=param.device, dtype=param.dtype)
            out = self(probe)
        finally:
            self.train(was_training)
        p, d = int(out.tokens.shape[1]), int(out.tokens.shape[2])
        grid = out.grid if out.grid is not None and out.grid[0] * out.grid[1] == p else None
        if grid is None and grid_side(p) is not None:
            grid = (grid_side(p), grid_side(p))
        return p, d, grid

    def token_shape(self) -> tuple[int, int]:
        """(p, d): the number of patch/spatial tokens and their width."""
        return self.num_tokens, self.hidden_size


def grid_side(num_tokens: int) -> int | None:
    """The side of a square token grid, or None if ``num_tokens`` is not a square."""
    side = math.isqrt(num_tokens)
    return side if side * side == num_tokens else None
