"""One adapter that turns a timm model, an open_clip visual tower or a transformers vision model into a (B, p, d)
token tensor.

ViT-like models give their token sequence (prefix tokens - CLS, registers, distillation - are split off);
CNN feature maps (B, d, h, w) are flattened h*w -> p, as in Sec. II-A of the CDTM paper.

The adapter is always built with random weights (`pretrained=False`), as transformers' `TimmWrapper` builds its timm
model; pretrained weights come in through one explicit method, [`BackboneAdapter.load_pretrained`].

The module is one subject, the backbone seen from CDTM: building it in three libraries, its token layout, where its
weights come from (a library's own, a local file, or a foundation model's Hub repo, gated or not), and its memory
switches (gradient checkpointing, the block class FSDP wraps).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import pickle
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .backbone_names import backbone_problem, import_library
from .presets import check_backbone_available

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


class GatedWeightsError(BackboneWeightsError):
    """The weights are in a gated Hub repo that this machine has no token for, or no granted access to."""


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
    return import_library("open_clip")


def _transformers():
    import transformers

    return transformers


# timm takes these layer classes as Python objects; a config holds their names (JSON), resolved here in timm.layers.
_TIMM_LAYER_KWARGS = ("mlp_layer", "norm_layer", "embed_layer", "block_fn")


def _resolve_timm_layers(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    for key in _TIMM_LAYER_KWARGS:
        if isinstance(out.get(key), str) and key != "norm_layer":  # timm resolves norm_layer names itself
            layer = getattr(_timm().layers, out[key], None)
            if layer is None:
                raise ValueError(f"backbone_kwargs {key}={out[key]!r} is not a layer of timm.layers")
            out[key] = layer
    return out


def _timm_kwargs(name: str, image_size: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`timm.create_model` keyword arguments: no classifier, and `img_size` for ViT-like models that take it."""
    problem = backbone_problem(name, "timm")
    if problem:
        raise ValueError(problem)
    timm = _timm()
    kwargs = {"num_classes": 0, **_resolve_timm_layers(kwargs)}
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
    # open_clip's public factory builds the whole model (only its image tower is kept). A random one is built on the
    # device models are being built on: `from_pretrained` builds on the meta device, which the factory's
    # `.to(device)` must not leave
    if weights is not None:
        return open_clip.create_model(name, pretrained=weights, force_image_size=image_size).visual
    with _without_log_record("No pretrained weights loaded"):  # random is what was asked for (weights come later)
        return open_clip.create_model(name, force_image_size=image_size, device=torch.get_default_device()).visual


@contextlib.contextmanager
def _without_log_record(prefix: str):
    """Within the block, the root logger drops records whose message starts with `prefix` (open_clip warns through
    the root logger that a model it was asked to build at random is random)."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _transformers_config(name: str, kwargs: dict[str, Any]):
    """A transformers config: `AutoConfig.for_model(model_type, **kwargs)`, or a saved one (folder / Hub id).

    `kwargs` holding a `model_type` is a whole config recorded by `BackboneAdapter` (`model_kwargs`): it rebuilds
    offline, without the folder or the Hub id it was first read from.
    """
    transformers = _transformers()
    if "model_type" in kwargs:
        rest = {k: v for k, v in kwargs.items() if k != "model_type"}
        return transformers.AutoConfig.for_model(kwargs["model_type"], **rest)
    if name in transformers.CONFIG_MAPPING:
        return transformers.AutoConfig.for_model(name, **kwargs)
    # never runs a repo's own code: a backbone that needs trust_remote_code is not taken
    return transformers.AutoConfig.from_pretrained(name, **kwargs)


def _transformers_model(config, weights: str | None = None) -> nn.Module:
    """`AutoModel` of a vision config, without its pooler (CDTM reads the token sequence); random unless `weights`."""
    auto = _transformers().AutoModel
    build = (lambda **kw: auto.from_config(config, **kw)) if weights is None else (
        lambda **kw: auto.from_pretrained(weights, config=config, **kw))
    try:
        return build(add_pooling_layer=False)  # ViT, BEiT, ...: no pooler, whose weights would get no gradient
    except TypeError as err:  # models without a pooler option (DINOv2, ConvNeXt, ...)
        if "add_pooling_layer" not in str(err):
            raise
        return build()


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
        elif library == "transformers":
            config = _transformers_config(name, self.model_kwargs)
            self.model, self._kind = _transformers_model(config), "transformers"
            if name not in _transformers().CONFIG_MAPPING and "model_type" not in self.model_kwargs:
                # a folder or Hub id: record the whole config, so that a saved CDTM checkpoint rebuilds without it
                recorded = {k: v for k, v in config.to_diff_dict().items()
                            if k not in ("transformers_version", "_name_or_path", "architectures")}
                self.model_kwargs = {"model_type": config.model_type, **recorded}
        else:
            raise ValueError(f"backbone_library {library!r} is not one of: timm, open_clip, transformers")
        self.num_prefix_tokens = 1 if self._kind == "open_clip_vit" else int(getattr(self.model, "num_prefix_tokens", 0) or 0)
        if self._kind == "transformers":
            self.num_prefix_tokens = self._transformers_prefix_tokens()
        self.num_tokens, self.hidden_size, self.grid_size = self._probe_layout()

    def _set_open_clip_visual(self, visual: nn.Module) -> None:
        if hasattr(visual, "trunk"):  # open_clip TimmModel: the trunk is a timm model (ConvNeXt etc.)
            self.model, self._kind = visual.trunk, "timm"
            self._preprocess_cfg = getattr(visual, "preprocess_cfg", None)
        else:
            self.model, self._kind = visual, "open_clip_vit"

    # ---- pretrained weights: the one explicit path --------------------------------------------------------------
    def load_pretrained(
        self, tag: str | None = None, file: str | None = None, repo: str | None = None,
        weights_format: str | None = None,
    ) -> None:
        """Load the backbone's pretrained weights into this adapter, in place.

        timm: the model's own pretrained weights (its Hub copy, through timm's loader, with timm's checkpoint
        filters such as position-embedding resampling), or `file` (safetensors, or a torch file read with
        `weights_only=True`). open_clip: the pretrained `tag` (e.g. `"laion400m_e32"`) or `file`. transformers: the
        Hub id or folder `repo`, or the config's own name.

        Args:
            repo (`str`, *optional*): a Hub repo holding the weights (a foundation-model preset's `weights_repo`);
                fetched with `huggingface_hub.hf_hub_download`, so the Hub's own cache, token and offline mode apply.
            weights_format (`str`, *optional*): what `repo` holds: `"timm"`, `"transformers"` or `"open_clip"` (an
                open_clip checkpoint whose `visual.trunk.*` is this timm model).

        Raises:
            `GatedWeightsError`: `repo` is gated and there is no token, or the token has no access; names the repo,
                the page to request access at, and `huggingface-cli login` / `HF_TOKEN`.
            `BackboneWeightsError`: the weights cannot be had (offline, unknown tag, unreadable file); the message
                names the model and the remedies.
        """
        if repo is not None and file is None:
            file = _download_weights(repo, weights_format or self.library)
            if weights_format == "open_clip":
                self.model.load_state_dict(_open_clip_trunk_state(file))
                return
        if self.library == "transformers":
            if file is None and repo is None:
                if self.name in _transformers().CONFIG_MAPPING:
                    raise BackboneWeightsError(
                        f"transformers backbone {self.name!r} is a model_type, which names no weights: pass a Hub id "
                        "or folder as the backbone, a weights file, or start from random weights "
                        "(--no_backbone_pretrained)")
                if os.path.isdir(self.name):
                    self._load_transformers(self.name)
                    return
                file = _download_weights(self.name, "transformers")  # a Hub id: gated/offline errors as for presets
            self._load_transformers(file or repo)
            return
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

    def _load_transformers(self, source: str) -> None:
        """transformers weights from a folder (or a downloaded file's folder) or a cached Hub id."""
        folder = os.path.dirname(source) if os.path.isfile(source) else source
        try:
            loaded = _transformers_model(self.model.config, folder)
        except (OSError, ValueError) as err:
            raise BackboneWeightsError(
                f"could not load the pretrained weights of transformers backbone {self.name!r} from {folder!r}: "
                f"{type(err).__name__}: {err}. Offline, download them once with network access, or start from random "
                "weights (--no_backbone_pretrained / backbone_pretrained=False)."
            ) from err
        self.model.load_state_dict(loaded.state_dict())

    def _transformers_prefix_tokens(self) -> int:
        """CLS / register / distillation tokens before the patch tokens: the sequence length minus the patch grid."""
        grid = self._transformers_grid()
        if grid is None:
            return 0
        config = self.model.config
        registers = int(getattr(config, "num_register_tokens", 0) or 0)
        return 1 + registers if hasattr(self.model, "embeddings") and \
            getattr(self.model.embeddings, "cls_token", None) is not None else registers

    def _transformers_grid(self) -> tuple[int, int] | None:
        config = self.model.config
        patch = getattr(config, "patch_size", None)
        if not isinstance(patch, int) or getattr(config, "model_type", "") in ("convnext", "convnextv2", "resnet"):
            return None
        return self.image_size // patch, self.image_size // patch

    # ---- memory: gradient checkpointing and the block class FSDP wraps -----------------------------------------
    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone's blocks in the backward pass: the library's own switch (timm
        `set_grad_checkpointing`, open_clip `set_grad_checkpointing`, transformers `activation_checkpointing_*`)."""
        if self._kind == "transformers":
            if not getattr(self.model, "supports_gradient_checkpointing", False):
                raise ValueError(f"transformers backbone {self.name!r} does not support gradient checkpointing")
            if enable:
                self.model.activation_checkpointing_enable({"use_reentrant": False})
            else:
                self.model.activation_checkpointing_disable()
        elif hasattr(self.model, "set_grad_checkpointing"):
            self.model.set_grad_checkpointing(enable)
        else:
            raise ValueError(f"{self.library} backbone {self.name!r} has no gradient checkpointing "
                             "(set_grad_checkpointing)")
        self.gradient_checkpointing = enable  # read by transformers' `is_activation_checkpointing`

    def block_class_names(self) -> list[str]:
        """The class names of the backbone's repeated blocks (what FSDP's auto-wrap policy shards)."""
        if self._kind == "transformers":
            return [n for n in (getattr(self.model, "_no_split_modules", None) or []) if "Embedding" not in n]
        names: list[str] = []
        for module in self.model.modules():
            for attr in ("blocks", "resblocks"):
                seq = getattr(module, attr, None)
                if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq):
                    name = type(seq[0]).__name__
                    if name not in names and name not in ("Sequential", "ModuleList"):
                        names.append(name)
        return names

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
        if self._kind == "transformers":  # transformers models carry no data config: ImageNet's, as most use
            return {"input_size": (3, self.image_size, self.image_size), "interpolation": "bicubic",
                    "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "crop_pct": 1.0,
                    "crop_mode": "center"}
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
        if self._kind == "transformers":
            features = self._transformers_forward(pixel_values)
        else:
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
        grid = self._transformers_grid() if self._kind == "transformers" else self._patch_grid()
        return BackboneTokens(features[:, k:], features[:, :k], grid)

    def _transformers_forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {}
        size = getattr(self.model.config, "image_size", None)
        if size not in (None, self.image_size) and _accepts_kwarg(self.model.forward, "interpolate_pos_encoding"):
            kwargs["interpolate_pos_encoding"] = True
        return self.model(pixel_values=pixel_values, **kwargs).last_hidden_state

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


def _hub():
    import huggingface_hub

    return huggingface_hub


_WEIGHT_FILES = {
    "timm": ("model.safetensors", "pytorch_model.bin"),
    "transformers": ("model.safetensors", "pytorch_model.bin"),
    "open_clip": ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
}


def _download_weights(repo: str, weights_format: str) -> str:
    """The local path of `repo`'s weights file (safetensors first), through `huggingface_hub.hf_hub_download`.

    transformers weights also need their config.json, fetched first (the same snapshot folder holds both).
    """
    hub = _hub()
    errors = hub.errors
    files = _WEIGHT_FILES.get(weights_format, _WEIGHT_FILES["timm"])
    try:
        if weights_format == "transformers":
            hub.hf_hub_download(repo, "config.json")
        for i, filename in enumerate(files):
            try:
                return hub.hf_hub_download(repo, filename)
            except errors.EntryNotFoundError:
                if i == len(files) - 1:
                    raise
    except errors.GatedRepoError as err:
        raise GatedWeightsError(
            f"the weights of {repo!r} are in a gated Hub repository: request access at https://huggingface.co/{repo} "
            "(accept its terms with your Hub account), then log in on this machine with `huggingface-cli login` (or "
            f"`hf auth login`), or set HF_TOKEN to a token of that account. ({type(err).__name__}: {err})"
        ) from err
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as err:
        raise BackboneWeightsError(
            f"the weights of {repo!r} are not in the local Hub cache and the Hub cannot be reached (offline, or "
            "HF_HUB_OFFLINE=1): download them once with network access (`huggingface-cli download "
            f"{repo}`), or pass a local weights file (--backbone_pretrained_file), or start from random weights "
            f"(--no_backbone_pretrained). ({type(err).__name__}: {err})"
        ) from err
    except (errors.RepositoryNotFoundError, errors.EntryNotFoundError, OSError) as err:
        raise BackboneWeightsError(
            f"could not download the weights of {repo!r}: {type(err).__name__}: {err}. Check the repo id, your access "
            "(`huggingface-cli login` / HF_TOKEN for private or gated repos), or pass --backbone_pretrained_file."
        ) from err
    raise AssertionError("unreachable")  # pragma: no cover


def _open_clip_trunk_state(file: str) -> dict[str, torch.Tensor]:
    """The `visual.trunk.*` tensors of an open_clip checkpoint (its timm image tower), renamed for the timm model."""
    if file.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(file)
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    prefix = "visual.trunk."
    trunk = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not trunk:
        raise BackboneWeightsError(f"{file} holds no open_clip image-tower weights (no 'visual.trunk.*' tensors)")
    return trunk


def pool_token_grid(tokens: torch.Tensor, grid: tuple[int, int], size: int) -> torch.Tensor:
    """(B, h*w, d) tokens in row-major grid order -> (B, size*size, d), by adaptive average pooling over the grid."""
    h, w = grid
    maps = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)
    return torch.nn.functional.adaptive_avg_pool2d(maps, size).flatten(2).transpose(1, 2)


def grid_side(num_tokens: int) -> int | None:
    """The side of a square token grid, or None if ``num_tokens`` is not a square."""
    side = math.isqrt(num_tokens)
    return side if side * side == num_tokens else None
