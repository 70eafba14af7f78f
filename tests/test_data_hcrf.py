import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import logging  # noqa: E402

import pytest  # noqa: E402

try:
    from data_fixtures import make_hcrf_tree, make_zip, manifest, prepare, write_image
except ImportError:  # tests/ is a package
    from tests.data_fixtures import make_hcrf_tree, make_zip, manifest, prepare, write_image

from cdtm_hf.data import HCRF, DataDirRequiredError, DatasetLayoutError  # noqa: E402


def _counts(ds):
    return {s: [ds[s]["label"].count(c) for c in (0, 1)] for s in ("train", "validation", "test")}


def test_balanced_paper_protocol(tmp_path, caplog):
    make_hcrf_tree(tmp_path / "data", n_normal=12, n_abnormal=30)
    with caplog.at_level(logging.WARNING):
        builder, ds = prepare(HCRF, tmp_path / "data", tmp_path / "cache", split_strategy="paper")
    assert ds["train"].features["label"].names == ["normal", "abnormal"]
    # 12 + 12 (abnormal subsampled, seeded), split 1:1:2 per class -> 3/3/6
    assert _counts(ds) == {"train": [3, 3], "validation": [3, 3], "test": [6, 6]}
    m = manifest(builder)
    assert m["ratios"] == [1.0, 1.0, 2.0]
    assert m["notes"]["balanced"] is True and m["notes"]["dropped_by_balancing"] == 18
    assert m["notes"]["counts_before_balancing"] == {"normal": 12, "abnormal": 30}
    # the patient strategy (default) warns that HCRF has no patient ids
    with caplog.at_level(logging.WARNING):
        prepare(HCRF, tmp_path / "data", tmp_path / "cache2")
    assert "no patient ids" in caplog.text


def test_balance_subsample_is_seeded_and_full_config(tmp_path):
    make_hcrf_tree(tmp_path / "data", n_normal=8, n_abnormal=20)
    a, _ = prepare(HCRF, tmp_path / "data", tmp_path / "a", seed=1)
    b, _ = prepare(HCRF, tmp_path / "data", tmp_path / "b", seed=1)
    c, _ = prepare(HCRF, tmp_path / "data", tmp_path / "c", seed=2)
    assert manifest(a)["files"] == manifest(b)["files"]
    assert set(manifest(a)["files"]) != set(manifest(c)["files"])  # other abnormal images kept
    _, ds = prepare(HCRF, tmp_path / "data", tmp_path / "d", config_name="full")
    assert sum(len(ds[s]) for s in ds) == 28


def test_case_insensitive_nested_zip_and_masks(tmp_path):
    root = tmp_path / "HCRF_release"
    make_hcrf_tree(root / "HCRF", n_normal=8, n_abnormal=8, class_dirs=("NORMAL", "abnormal"), ext=".tif")
    write_image(root / "HCRF" / "abnormal" / "abnormal_0000_mask.tif")
    write_image(root / "HCRF" / "abnormal" / "Ground Truth" / "abnormal_0001.tif")
    _, ds = prepare(HCRF, root, tmp_path / "c1", config_name="full")
    files = [f for s in ds for f in ds[s]["file"]]
    assert len(files) == 16 and not any("mask" in f or "Ground" in f for f in files)
    archive = make_zip(root, tmp_path / "hcrf.zip")
    _, ds2 = prepare(HCRF, archive, tmp_path / "c2", config_name="full")
    assert sorted(f for s in ds2 for f in ds2[s]["file"]) == sorted(files)


def test_wrong_layout(tmp_path):
    write_image(tmp_path / "data" / "Normal" / "a.png")
    write_image(tmp_path / "data" / "Tumour" / "b.png")
    with pytest.raises(DatasetLayoutError, match=r"Tumour.*Expected layout: <data_dir>/\{Normal,Abnormal\}"):
        prepare(HCRF, tmp_path / "data", tmp_path / "cache")


def test_data_dir_required(tmp_path):
    with pytest.raises(DataDirRequiredError, match="Mendeley"):
        prepare(HCRF, None, tmp_path / "cache")


@pytest.mark.parametrize("subdirs", [("image", "label"), ("Images", "Masks")])
def test_image_and_mask_subfolders(tmp_path, subdirs):
    """Item 5: <class>/image + <class>/label (or mask): a mask is never an image, a folder name never a patient."""
    info = make_hcrf_tree(tmp_path / "data", n_normal=6, n_abnormal=9, image_subdir=subdirs[0], mask_subdir=subdirs[1])
    builder, ds = prepare(HCRF, tmp_path / "data", tmp_path / "cache", config_name="full")
    files = sorted(f for s in ds for f in ds[s]["file"])
    assert len(files) == 15 and all(f"/{subdirs[0]}/" in f for f in files)
    assert not {pid for s in ds for pid in ds[s]["patient_id"]} & {subdirs[0], subdirs[1]}
    m = manifest(builder)
    assert m["grouping"] == "image" and m["notes"]["excluded_masks"] == len(info["masks"]) == 9
    totals = {c: sum(m["counts"][s][c] for s in m["counts"]) for c in ("normal", "abnormal")}
    assert totals == {"normal": 6, "abnormal": 9}
