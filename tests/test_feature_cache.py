"""The frozen-stage feature cache: same loss curve, float16 storage, disk-space check, key, overflow fallback."""

import logging
import shutil
from collections import namedtuple

import numpy as np
import pytest
import torch

from cdtm_hf.training import feature_cache
from cdtm_hf.training.feature_cache import build_feature_cache, estimate_cache_bytes, feature_cache_key
from tests.test_trainer import make_dataset, make_model, make_trainer

FAST = dict(finetune_mode="lp", eval_strategy="no", save_strategy="no", load_best_model_at_end=False)


def loss_curve(tmp_path, name, **overrides):
    trainer = make_trainer(make_model(), tmp_path / name, **{**FAST, "num_train_epochs": 3, **overrides})
    trainer.train()
    return [e["loss"] for e in trainer.state.log_history if "loss" in e]


def cache_files(root):
    return sorted((root / "feature_cache").glob("*.features.npy"))


def test_float32_cache_gives_the_no_cache_loss_curve(tmp_path):
    cached = loss_curve(tmp_path, "cached", feature_cache_dtype="float32")
    assert cache_files(tmp_path / "cached")
    plain = loss_curve(tmp_path, "plain", feature_cache=False)
    assert len(cached) == 9
    np.testing.assert_allclose(cached, plain, atol=1e-5, rtol=0)


def test_cache_is_float16_by_default_and_its_loss_curve_stays_within_1e3_of_float32(tmp_path):
    half = loss_curve(tmp_path, "half")  # the default dtype
    full = loss_curve(tmp_path, "full", feature_cache_dtype="float32")
    half_files, full_files = cache_files(tmp_path / "half"), cache_files(tmp_path / "full")
    assert len(half_files) == len(full_files) == 2  # train and validation
    assert all(np.load(f, mmap_mode="r").dtype == np.float16 for f in half_files)
    assert all(np.load(f, mmap_mode="r").dtype == np.float32 for f in full_files)
    size = lambda files: sum(f.stat().st_size for f in files)  # noqa: E731
    assert size(half_files) < 0.6 * size(full_files)
    assert len(half) == 9
    np.testing.assert_allclose(half, full, atol=1e-3, rtol=0)


def test_the_size_estimate_matches_the_file(tmp_path):
    model, data = make_model(), make_dataset(6, 0)
    build_feature_cache(model, data, tmp_path)
    (features,) = tmp_path.glob("*.features.npy")
    estimate = estimate_cache_bytes(model, len(data))
    assert abs(features.stat().st_size + (tmp_path.glob("*.labels.npy").__next__()).stat().st_size - estimate) < 512


def test_cache_is_skipped_up_front_when_the_free_disk_cannot_hold_it(tmp_path, monkeypatch, caplog):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    trainer = make_trainer(make_model(), tmp_path, **{**FAST, "num_train_epochs": 1})
    with caplog.at_level(logging.WARNING, logger="cdtm_hf.training.trainer"):
        trainer.train()
    assert not cache_files(tmp_path), "the cache was built although the disk cannot hold it"
    assert any("Feature cache off" in r.message and "free" in r.message for r in caplog.records)
    assert trainer.state.global_step == 3  # the stage trained on pixels instead


def test_feature_cache_is_off_under_augmentation(tmp_path):
    trainer = make_trainer(make_model(), tmp_path, **{**FAST, "num_train_epochs": 1, "augment": True})
    trainer.train()
    assert not (tmp_path / "feature_cache").exists()


def test_feature_cache_key_tells_backbone_weights_and_dtype_apart():
    data = make_dataset(4, 0)
    a, b = make_model(seed=0), make_model(seed=0)
    assert feature_cache_key(data, a) == feature_cache_key(data, b)
    assert feature_cache_key(data, a, "float16") != feature_cache_key(data, a, "float32")
    with torch.no_grad():
        b.backbone.model.blocks[0].attn.qkv.weight.add_(1.0)  # other weights, same architecture
    assert feature_cache_key(data, a) != feature_cache_key(data, b)


def test_a_token_beyond_float16_range_builds_the_cache_in_float32(tmp_path, monkeypatch, caplog):
    model, data = make_model(), make_dataset(4, 0)
    original = model.backbone_features
    monkeypatch.setattr(model, "backbone_features", lambda pixels: original(pixels) * 1e6)
    with caplog.at_level(logging.WARNING, logger="cdtm_hf.training.feature_cache"):
        cached = build_feature_cache(model, data, tmp_path, dtype="float16")
    assert cached.features.dtype == np.float32 and np.isfinite(cached.features).all()
    assert any("overflows float16" in r.message for r in caplog.records)


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="'bfloat16' is not one of: float16, float32"):
        feature_cache.estimate_cache_bytes(make_model(), 1, "bfloat16")
