import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import logging  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import datasets  # noqa: E402
import pytest  # noqa: E402

try:
    from data_fixtures import corrupt_file, make_breakhis_tree, make_tar_gz, manifest, prepare
except ImportError:  # tests/ is a package
    from tests.data_fixtures import corrupt_file, make_breakhis_tree, make_tar_gz, manifest, prepare

from cdtm_hf.data import (  # noqa: E402
    MANIFEST_FILENAME,
    BreakHis,
    CorruptImageError,
    DataDirRequiredError,
    DatasetLayoutError,
    InsufficientSamplesError,
)
from cdtm_hf.data.breakhis import BREAKHIS_URL  # noqa: E402
from cdtm_hf.data.splits import apportion  # noqa: E402

MALIGNANT = ["ductal_carcinoma", "lobular_carcinoma", "mucinous_carcinoma", "papillary_carcinoma"]
CODES = {"ductal_carcinoma": "DC", "lobular_carcinoma": "LC", "mucinous_carcinoma": "MC", "papillary_carcinoma": "PC"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    # 5 DC patients x 3 images, LC/MC/PC 3-4 patients, 3 images per magnification
    patients = {"A": 3, "F": 3, "PT": 3, "TA": 3, "DC": 5, "LC": 3, "MC": 4, "PC": 3}
    return make_breakhis_tree(tmp_path_factory.mktemp("breakhis"), patients=patients, images_per_patient=3)


@pytest.fixture(scope="module")
def paper_build(tree, tmp_path_factory):
    return prepare(BreakHis, tree["root"], tmp_path_factory.mktemp("cache"), split_strategy="paper", seed=42)


def _split_of(builder):
    return manifest(builder)["files"]


def test_malignant_200x_classes_counts_and_ratios(tree, paper_build):
    builder, ds = paper_build
    assert set(ds) == {"train", "validation", "test"}
    assert ds["train"].features["label"].names == MALIGNANT
    assert builder.config.name == "malignant_200x"
    for name in MALIGNANT:
        code = CODES[name]
        n = tree["counts"][(code, 200)]
        expected = apportion(n, (3, 1, 1))
        got = [sum(1 for y in ds[s]["label"] if y == MALIGNANT.index(name)) for s in ("train", "validation", "test")]
        assert got == expected
        for k, r in enumerate((0.6, 0.2, 0.2)):
            assert abs(got[k] - n * r) <= 1
    row = ds["train"][0]
    assert row["magnification"] == 200 and row["tumor_type"] in CODES.values()
    assert row["image"].size == (8, 8)
    assert row["file"].startswith("malignant/SOB/") and "/200X/" in row["file"]


def test_manifest_content(tree, paper_build):
    builder, ds = paper_build
    path = Path(builder.manifest_path)
    assert path.name == MANIFEST_FILENAME and path.is_file()
    assert path.parent == Path(builder.cache_dir)
    m = manifest(builder)
    assert m["dataset"] == "BreakHis" and m["config"] == "malignant_200x"
    assert m["split_strategy"] == "paper" and m["seed"] == 42 and m["ratios"] == [3.0, 1.0, 1.0]
    assert m["class_names"] == MALIGNANT and m["skipped"] == [] and m["num_skipped"] == 0
    files = m["files"]
    assert len(files) == sum(len(ds[s]) for s in ds)
    for split in ds:
        for rel in ds[split]["file"]:
            assert files[rel] == split
    assert m["num_images"] == {s: len(ds[s]) for s in ("train", "validation", "test")}
    assert m["groups_in_several_splits"] > 0  # the paper's random split leaks patients


def test_same_seed_same_split_other_seed_differs(tree, paper_build, tmp_path):
    builder, _ = paper_build
    again, _ = prepare(BreakHis, tree["root"], tmp_path / "a", split_strategy="paper", seed=42)
    other, _ = prepare(BreakHis, tree["root"], tmp_path / "b", split_strategy="paper", seed=7)
    assert _split_of(again) == _split_of(builder)
    assert _split_of(other) != _split_of(builder)
    assert set(_split_of(other)) == set(_split_of(builder))


def test_patient_strategy_no_patient_in_two_splits(tree, tmp_path):
    builder, ds = prepare(BreakHis, tree["root"], tmp_path, config_name="all_magnifications")
    assert builder.config.split_strategy == "patient"
    seen = {}
    for split in ds:
        for rel, pid in zip(ds[split]["file"], ds[split]["patient_id"]):
            assert tree["patient_of"][rel] == pid
            assert seen.setdefault(pid, split) == split, f"patient {pid} in two splits"
    for split in ds:  # every class in every split
        assert set(ds[split]["label"]) == {0, 1, 2, 3}
    assert set(ds["train"]["magnification"]) == {40, 100, 200, 400}
    assert manifest(builder)["groups_in_several_splits"] == 0
    again, _ = prepare(BreakHis, tree["root"], tmp_path / "again", config_name="all_magnifications")
    assert _split_of(again) == _split_of(builder)


def test_other_configs(tree, tmp_path):
    _, ds = prepare(BreakHis, tree["root"], tmp_path, config_name="binary", magnification=400)
    assert ds["train"].features["label"].names == ["benign", "malignant"]
    assert {m for s in ds for m in ds[s]["magnification"]} == {400}
    assert sum(len(ds[s]) for s in ds) == sum(n for (c, mag), n in tree["counts"].items() if mag == 400)
    _, ds = prepare(BreakHis, tree["root"], tmp_path, config_name="subtype8", magnification="all")
    assert len(ds["train"].features["label"].names) == 8
    assert sum(len(ds[s]) for s in ds) == len(tree["files"])
    with pytest.raises(ValueError, match="magnification"):
        BreakHis(config_name="binary", data_dir=str(tree["root"]), cache_dir=str(tmp_path), magnification=300)
    with pytest.raises(ValueError, match="official"):
        BreakHis(data_dir=str(tree["root"]), cache_dir=str(tmp_path), split_strategy="official")


def test_tar_gz_input_extracts_into_cache(tree, paper_build, tmp_path):
    archive = make_tar_gz(tree["root"] / "BreaKHis_v1", tmp_path / "BreaKHis_v1.tar.gz")
    before = sorted(p.name for p in tmp_path.iterdir())
    builder, ds = prepare(BreakHis, archive, tmp_path / "cache", split_strategy="paper", seed=42)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["cache"])  # nothing extracted in place
    assert _split_of(builder) == _split_of(paper_build[0])  # same files, same split
    first = ds["train"][0]
    assert str(tmp_path / "cache") in ds["train"].cast_column("image", datasets.Image(decode=False))[0]["image"]["path"]
    assert first["image"].size == (8, 8)


def test_download_when_no_data_dir(tree, tmp_path):
    archive = make_tar_gz(tree["root"] / "BreaKHis_v1", tmp_path / "BreaKHis_v1.tar.gz")

    class FakeDownloads(datasets.DownloadManager):
        def download_and_extract(self, url_or_urls):
            assert url_or_urls == BREAKHIS_URL
            return self.extract(str(archive))

    dl = FakeDownloads(download_config=datasets.DownloadConfig(cache_dir=str(tmp_path / "dl")))
    builder = BreakHis(cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare(dl_manager=dl)
    assert sum(len(v) for v in builder.as_dataset().values()) == sum(
        n for (c, mag), n in tree["counts"].items() if mag == 200 and c in CODES.values()
    )

    class Offline(datasets.DownloadManager):
        def download_and_extract(self, url_or_urls):
            raise ConnectionError("offline")

    with pytest.raises(DataDirRequiredError, match="BreaKHis_v1.tar.gz"):
        BreakHis(cache_dir=str(tmp_path / "c2")).download_and_prepare(dl_manager=Offline())


def test_corrupt_image_raises_or_is_skipped(tree, tmp_path, caplog):
    root = tmp_path / "copy"
    shutil.copytree(tree["root"], root)
    victim = next(p for p in sorted(root.rglob("*-200-001.png")) if "_LC_" in p.name or "_LC-" in p.name)
    corrupt_file(victim)
    with pytest.raises(CorruptImageError, match=victim.name):
        prepare(BreakHis, root, tmp_path / "c1")
    with caplog.at_level(logging.WARNING):
        builder, ds = prepare(BreakHis, root, tmp_path / "c2", skip_corrupt=True)
    assert victim.name in caplog.text
    m = manifest(builder)
    assert [s["path"] for s in m["skipped"]] == [victim.relative_to(root / "BreaKHis_v1/histology_slides/breast").as_posix()]
    assert all(victim.name not in f for s in ds for f in ds[s]["file"])


def test_wrong_layout_errors(tree, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetLayoutError, match=r"SOB_<B\|M>_<TYPE>-<year>-<patient>-<mag>-<seq>\.png"):
        prepare(BreakHis, empty, tmp_path / "c1")
    # a file with a foreign name inside the tree
    root = tmp_path / "copy"
    shutil.copytree(tree["root"], root)
    some = next(root.rglob("*-200-001.png"))
    shutil.copy(some, some.parent / "scan 1.png")
    with pytest.raises(DatasetLayoutError, match=r"scan 1\.png.*Expected layout: BreaKHis_v1/histology_slides/breast"):
        prepare(BreakHis, root, tmp_path / "c2")
    # an image of magnification 200 filed under 40X
    (some.parent / "scan 1.png").unlink()
    shutil.move(str(some), str(some.parent.parent / "40X" / some.name))
    with pytest.raises(DatasetLayoutError, match="wrong folder"):
        prepare(BreakHis, root, tmp_path / "c3")


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataDirRequiredError, match="does not exist.*BreaKHis_v1.tar.gz"):
        prepare(BreakHis, tmp_path / "nope", tmp_path / "c")


def test_class_too_small_for_paper_split(tmp_path):
    info = make_breakhis_tree(tmp_path / "tiny", patients={"DC": 3, "LC": 3, "MC": 3, "PC": 1}, images_per_patient=2)
    assert info["counts"][("PC", 200)] == 2
    with pytest.raises(InsufficientSamplesError, match=r"'papillary_carcinoma' has 2 images.*at least 3"):
        prepare(BreakHis, info["root"], tmp_path / "c", split_strategy="paper")
    with pytest.raises(InsufficientSamplesError, match=r"'papillary_carcinoma' occurs in 1 group"):
        prepare(BreakHis, info["root"], tmp_path / "c2", split_strategy="patient")
