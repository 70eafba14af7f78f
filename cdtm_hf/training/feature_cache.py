"""The frozen-stage feature cache: backbone tokens of a dataset, computed once and reused on later frozen epochs.

While the backbone is frozen (SFT stage 1, LP) its output for an un-augmented image never changes, so
`CDTMTrainer` runs it once per image and trains CDTM and the head on the stored tokens. The tokens are stored in half
precision by default (`float16`: half the disk of `float32`; the stage-1 loss curve stays within 1e-3 of fp32, see
`tests/test_feature_cache.py`). A token too large for `float16` makes the build fall back to `float32` for that
dataset. Before building, the size is estimated and compared with the free disk (`shutil.disk_usage`), so that a
cache that cannot fit is skipped up front instead of failing mid-way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import default_data_collator

from ..core.modeling_cdtm import CDTMForImageClassification
from ..logging import progress_bar

logger = logging.getLogger(__name__)

CACHE_DTYPES = ("float16", "float32")
# The cache may use at most this share of the free disk: checkpoints and the final model still need room.
DISK_HEADROOM = 0.9


class CachedFeatures(Dataset):
    """Backbone tokens of a dataset, on disk (a numpy memmap), served as `backbone_features` (float32) + `labels`."""

    def __init__(self, features: np.ndarray, labels: np.ndarray):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        tokens = np.array(self.features[i], dtype=np.float32)  # a copy; a float16 cache is widened on read
        return {"backbone_features": torch.from_numpy(tokens), "labels": torch.as_tensor(self.labels[i])}


def _check_dtype(dtype: str) -> None:
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"feature cache dtype {dtype!r} is not one of: {', '.join(CACHE_DTYPES)}")


def _weights_digest(module: torch.nn.Module) -> str:
    """A cheap digest of a module's weights (a strided sample of every tensor), to tell weight sources apart."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().flatten()
        sample = flat[:: max(1, flat.numel() // 64)].float().cpu().numpy()
        digest.update(name.encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()


def feature_cache_key(dataset: Any, model: CDTMForImageClassification, dtype: str = "float16") -> str:
    """The cache key: the dataset's fingerprint, the backbone and its actual weights, the input size and the dtype.

    Args:
        dataset (`Any`): a `datasets.Dataset` (its `_fingerprint` is used) or any sized dataset.
        model (`CDTMForImageClassification`): the model whose backbone produces the tokens.
        dtype (`str`, *optional*, defaults to `"float16"`): the storage dtype, one of `CACHE_DTYPES`.
        disable_tqdm (`bool`, *optional*): True hides the progress bar (a run's `--disable_tqdm`).
    """
    fingerprint = getattr(dataset, "_fingerprint", None) or f"{type(dataset).__name__}-{len(dataset)}-{id(dataset)}"
    cfg = model.config
    raw = [fingerprint, cfg.backbone, cfg.image_size, len(dataset), _weights_digest(model.backbone)]
    if dtype != "float32":  # float32 caches keep the key they had before the dtype existed
        raw.append(dtype)
    return hashlib.sha1(json.dumps(raw).encode()).hexdigest()[:16]


def _token_shape(model: CDTMForImageClassification) -> tuple[int, int]:
    """(k + p, d) of `model.backbone_features`: the prefix tokens plus the patch/spatial tokens, and their width."""
    backbone = model.backbone  # the token layout the adapter read once
    return backbone.num_prefix_tokens + backbone.num_tokens, backbone.hidden_size


def estimate_cache_bytes(model: CDTMForImageClassification, num_examples: int, dtype: str = "float16") -> int:
    """The disk a cache of `num_examples` images takes: tokens x width x bytes per value, plus the labels.

    Args:
        model (`CDTMForImageClassification`): the model whose backbone tokens are cached.
        num_examples (`int`): the number of images.
        dtype (`str`, *optional*, defaults to `"float16"`): the storage dtype, one of `CACHE_DTYPES`.
        disable_tqdm (`bool`, *optional*): True hides the progress bar (a run's `--disable_tqdm`).
    """
    _check_dtype(dtype)
    tokens, width = _token_shape(model)
    return num_examples * (tokens * width * np.dtype(dtype).itemsize + 8)


def _paths(cache_dir: Path, key: str) -> tuple[Path, Path, Path]:
    return tuple(cache_dir / f"{key}.{ext}" for ext in ("json", "features.npy", "labels.npy"))


def _complete(meta_path: Path, shape: tuple[int, ...]) -> bool:
    if not meta_path.exists():
        return False
    meta = json.loads(meta_path.read_text())
    return tuple(meta["shape"]) == shape and bool(meta.get("complete"))


def cache_is_built(
    model: CDTMForImageClassification, dataset: Any, cache_dir: str | os.PathLike, dtype: str = "float16"
) -> bool:
    """Whether a complete cache of `dataset` for this backbone (in `dtype`) is already in `cache_dir`."""
    meta_path, feat_path, label_path = _paths(Path(cache_dir), feature_cache_key(dataset, model, dtype))
    shape = (len(dataset), *_token_shape(model))
    return feat_path.exists() and label_path.exists() and _complete(meta_path, shape)


def free_disk_bytes(path: str | os.PathLike) -> int:
    """Free bytes (`shutil.disk_usage`) on the disk that holds `path`, or its nearest existing parent."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def cache_fits(
    model: CDTMForImageClassification,
    datasets: Mapping[str, Any],
    cache_dir: str | os.PathLike,
    dtype: str = "float16",
) -> tuple[bool, int, int]:
    """Whether the caches still to build for `datasets` fit on the free disk (within `DISK_HEADROOM`).

    Args:
        model (`CDTMForImageClassification`): the model whose backbone tokens are cached.
        datasets (`Mapping[str, Any]`): split name -> dataset; caches already built need no room.
        cache_dir (`str` or `os.PathLike`): where the caches go.
        dtype (`str`, *optional*, defaults to `"float16"`): the storage dtype.

    Returns:
        `tuple[bool, int, int]`: (fits, bytes needed, free bytes).
    """
    needed = sum(
        estimate_cache_bytes(model, len(ds), dtype)
        for ds in datasets.values()
        if not cache_is_built(model, ds, cache_dir, dtype)
    )
    free = free_disk_bytes(cache_dir)
    return needed <= DISK_HEADROOM * free, needed, free


class _Float16Overflow(Exception):
    pass


def build_feature_cache(
    model: CDTMForImageClassification,
    dataset: Any,
    cache_dir: str | os.PathLike,
    batch_size: int = 32,
    collate_fn: Callable = default_data_collator,
    num_workers: int = 0,
    device: torch.device | None = None,
    desc: str = "Caching frozen backbone features",
    dtype: str = "float16",
    disable_tqdm: bool | None = None,
) -> CachedFeatures:
    """Run the frozen backbone once over `dataset` (eval mode, no grad) and store its tokens in a memmap.

    A cache built earlier for the same dataset fingerprint, backbone weights and dtype is reused. Where a token does
    not fit in `float16` (|x| > 65504), the cache of this dataset is built in `float32` instead, with a warning.

    Args:
        model (`CDTMForImageClassification`): its backbone produces the tokens (`model.backbone_features`).
        dataset (`Any`): yields `pixel_values` and `labels`.
        cache_dir (`str` or `os.PathLike`): where `<key>.features.npy`, `<key>.labels.npy` and `<key>.json` go.
        batch_size (`int`, *optional*, defaults to 32): images per backbone forward.
        collate_fn (`Callable`, *optional*): the collator of the training data.
        num_workers (`int`, *optional*, defaults to 0): data loader workers.
        device (`torch.device`, *optional*): where the backbone runs; default the model's device.
        desc (`str`, *optional*): the progress bar's label.
        dtype (`str`, *optional*, defaults to `"float16"`): the storage dtype, one of `CACHE_DTYPES`.
        disable_tqdm (`bool`, *optional*): True hides the progress bar (a run's `--disable_tqdm`).
    """
    _check_dtype(dtype)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta_path, feat_path, label_path = _paths(cache_dir, feature_cache_key(dataset, model, dtype))
    if cache_is_built(model, dataset, cache_dir, dtype):
        logger.info("Reusing feature cache %s", feat_path)
        return CachedFeatures(np.load(feat_path, mmap_mode="r"), np.load(label_path))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn, num_workers=num_workers)
    try:
        labels = _write_features(model, loader, feat_path, (len(dataset), *_token_shape(model)), dtype, device, desc,
                                 disable_tqdm)
    except _Float16Overflow as exc:
        feat_path.unlink(missing_ok=True)
        logger.warning("%s; building this feature cache in float32 instead", exc)
        return build_feature_cache(model, dataset, cache_dir, batch_size, collate_fn, num_workers, device, desc,
                                   dtype="float32", disable_tqdm=disable_tqdm)
    np.save(label_path, labels)
    meta = {"shape": list(np.load(feat_path, mmap_mode="r").shape), "complete": True,
            "backbone": model.config.backbone, "dtype": dtype}
    meta_path.write_text(json.dumps(meta))
    return CachedFeatures(np.load(feat_path, mmap_mode="r"), np.load(label_path))


def _write_features(
    model: CDTMForImageClassification,
    loader: DataLoader,
    feat_path: Path,
    shape: tuple[int, ...],
    dtype: str,
    device: torch.device | None,
    desc: str,
    disable_tqdm: bool | None = None,
) -> np.ndarray:
    """Fill a memmap at `feat_path` with the backbone's tokens; returns the labels in dataset order."""
    features = np.lib.format.open_memmap(feat_path, mode="w+", dtype=np.dtype(dtype), shape=shape)
    labels: list[Any] = []
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    offset = 0
    try:
        with torch.no_grad():
            # the run's --disable_tqdm hides the bar; otherwise cdtm_hf.logging's switch decides
            for batch in progress_bar(loader, desc=desc, unit="batch", **({"disable": True} if disable_tqdm else {})):
                full = model.backbone_features(batch["pixel_values"].to(device)).float().cpu().numpy()
                with np.errstate(over="ignore"):  # an overflow is detected just below
                    stored = full.astype(features.dtype)
                if dtype == "float16" and not np.isfinite(stored).all() and np.isfinite(full).all():
                    raise _Float16Overflow(f"a backbone token of {np.abs(full).max():.4g} overflows float16")
                features[offset : offset + len(full)] = stored
                labels.extend(batch["labels"].cpu().numpy())
                offset += len(full)
        features.flush()
    finally:
        model.train(was_training)
        del features
    return np.asarray(labels)


__all__ = [
    "CACHE_DTYPES",
    "CachedFeatures",
    "build_feature_cache",
    "cache_fits",
    "cache_is_built",
    "estimate_cache_bytes",
    "feature_cache_key",
    "free_disk_bytes",
]
