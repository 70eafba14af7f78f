import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import importlib.util  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

try:
    from data_fixtures import make_cbis_ddsm_nbia_tree, make_cbis_ddsm_tree, manifest, prepare, write_image
except ImportError:  # tests/ is a package
    from tests.data_fixtures import make_cbis_ddsm_nbia_tree, make_cbis_ddsm_tree, manifest, prepare, write_image

from cdtm_hf.data import (  # noqa: E402
    CBISDDSM,
    DataDirRequiredError,
    DatasetLayoutError,
    MissingColumnError,
    MissingDependencyError,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_cbis_ddsm_tree(tmp_path_factory.mktemp("cbis"), n_patients=20)


def _no_leak(ds):
    seen = {}
    for split in ds:
        for pid in ds[split]["patient_id"]:
            assert seen.setdefault(pid, split) == split, f"patient {pid} in two splits"


def test_cropped_labels_and_patient_split(tree, tmp_path):
    builder, ds = prepare(CBISDDSM, tree["root"], tmp_path)
    assert ds["train"].features["label"].names == ["benign", "malignant"]
    assert sum(len(ds[s]) for s in ds) == tree["n_rows"]
    _no_leak(ds)
    for s in ds:
        for y, pathology in zip(ds[s]["label"], ds[s]["pathology"]):
            # BENIGN_WITHOUT_CALLBACK is benign
            assert y == (1 if pathology == "MALIGNANT" else 0)
        assert set(ds[s]["label"]) == {0, 1}
    assert "BENIGN_WITHOUT_CALLBACK" in {p for s in ds for p in ds[s]["pathology"]}
    assert all(f.startswith("jpeg/") for s in ds for f in ds[s]["file"])
    assert set(manifest(builder)["files"].values()) == {"train", "validation", "test"}


def test_official_split_keeps_test_csvs(tree, tmp_path):
    _, ds = prepare(CBISDDSM, tree["root"], tmp_path, split_strategy="official")
    assert len(ds["test"]) == tree["n_test_rows"]
    assert set(ds["test"]["patient_id"]) == tree["test_patients"]
    assert not set(ds["train"]["patient_id"]) & set(ds["validation"]["patient_id"])
    assert len(ds["validation"]) > 0


def test_full_images_are_deduplicated(tree, tmp_path):
    _, ds = prepare(CBISDDSM, tree["root"], tmp_path, config_name="full", abnormality="mass")
    n_mass_full = sum(1 for k in tree["full_labels"] if k.startswith("Mass"))
    assert sum(len(ds[s]) for s in ds) == n_mass_full
    assert any("|" in p for s in ds for p in ds[s]["pathology"])  # two findings on one image
    assert {a for s in ds for a in ds[s]["abnormality_type"]} == {"mass"}


def test_missing_column_and_missing_image(tree, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tree["root"], root)
    csv = root / "csv" / "calc_case_description_test_set.csv"
    df = pd.read_csv(csv)
    df.drop(columns=["pathology"]).to_csv(csv, index=False)
    with pytest.raises(MissingColumnError, match=r"calc_case_description_test_set\.csv.*'pathology'"):
        prepare(CBISDDSM, root, tmp_path / "c1")
    df.to_csv(csv, index=False)
    victim = sorted((root / "jpeg").rglob("1-2.jpg"))[0]
    victim.unlink()
    with pytest.raises(DatasetLayoutError, match="could not be found"):
        prepare(CBISDDSM, root, tmp_path / "c2")
    builder, ds = prepare(CBISDDSM, root, tmp_path / "c3", skip_corrupt=True)
    assert sum(len(ds[s]) for s in ds) == tree["n_rows"] - 1
    assert len(manifest(builder)["notes"]["unresolved_csv_paths"]) == 1
    (root / "csv" / "mass_case_description_train_set.csv").unlink()
    with pytest.raises(DatasetLayoutError, match=r"mass_case_description_train_set\.csv"):
        prepare(CBISDDSM, root, tmp_path / "c4")


def test_direct_paths_png_and_dicom(tmp_path):
    """CSV paths resolved relative to data_dir (PNG conversion; .dcm needs pydicom)."""
    root = tmp_path / "tcia"
    header = ["patient_id", "pathology", "image file path", "cropped image file path", "ROI mask file path"]
    for k, (abn, split) in enumerate([(a, s) for a in ("mass", "calc") for s in ("train", "test")]):
        rows = []
        for p in range(4):
            pid = f"P_{k}{p:04d}"
            rel = f"{abn}-{split}_{pid}_LEFT_CC_1/1.2.{k}{p}/1.3.{k}{p}/000001"
            write_image(root / f"{rel}.png", mode="L")
            rows.append([pid, "MALIGNANT" if p % 2 else "BENIGN", "x", f"{rel}.dcm", "y"])
        pd.DataFrame(rows, columns=header).to_csv(root / f"{abn}_case_description_{split}_set.csv", index=False)
    _, ds = prepare(CBISDDSM, root, tmp_path / "c1", split_strategy="paper")
    assert sum(len(ds[s]) for s in ds) == 16
    # now a real .dcm path
    dcm = root / "mass-train_P_00000_LEFT_CC_1/1.2.00/1.3.00/000001.png"
    dcm.rename(dcm.with_suffix(".dcm"))
    if importlib.util.find_spec("pydicom") is None:
        with pytest.raises(MissingDependencyError, match="pip install pydicom"):
            prepare(CBISDDSM, root, tmp_path / "c2", split_strategy="paper")


def test_data_dir_required(tmp_path):
    with pytest.raises(DataDirRequiredError, match="cancerimagingarchive"):
        prepare(CBISDDSM, None, tmp_path)


def test_tcia_nbia_download_crop_told_from_mask_by_description_or_pixels(tmp_path):
    """Item 1: the NBIA Data Retriever's descriptive folders + metadata.csv; crop and mask share a series folder."""
    pytest.importorskip("pydicom")
    from cdtm_hf.core.image_processing_cdtm import to_rgb_image

    tree = make_cbis_ddsm_nbia_tree(tmp_path / "tcia", n_patients=8, no_description=2)
    builder, ds = prepare(CBISDDSM, tree["root"], tmp_path / "c1", split_strategy="official")
    files = {f for s in ds for f in ds[s]["file"]}
    assert files == tree["crop_files"]  # never the ROI mask, whichever of 1-1.dcm / 1-2.dcm it is
    m = manifest(builder)
    assert "NBIA" in m["layout"] and m["num_skipped"] == 0 and m["grouping"] == "patient"
    assert m["notes"]["resolved_by"] == {"metadata.csv, description": 6, "metadata.csv, pixel statistics": 2}
    assert len(ds["test"]) == 2
    builder, ds = prepare(CBISDDSM, tree["root"], tmp_path / "c2", config_name="full", split_strategy="official")
    assert {f for s in ds for f in ds[s]["file"]} == tree["full_files"]
    rgb = np.asarray(to_rgb_image(ds["train"][0]["image"]))  # 16-bit DICOM -> 16-bit PNG -> 8-bit RGB
    assert rgb.max() == 255 and len(np.unique(rgb)) > 100


def test_kaggle_rows_with_empty_series_description(tmp_path, caplog):
    """Item 2: dicom_info.csv rows with an empty SeriesDescription fall back to the folder and the pixels."""
    tree = make_cbis_ddsm_tree(tmp_path / "kaggle", n_patients=12, shared_roi_series=True, blank_descriptions=4)
    builder, ds = prepare(CBISDDSM, tree["root"], tmp_path / "c1")
    files = {f for s in ds for f in ds[s]["file"]}
    assert len(files) == tree["n_rows"] and files <= tree["crop_files"]
    m = manifest(builder)
    assert m["num_skipped"] == 0 and "Kaggle" in m["layout"]
    assert m["notes"]["resolved_by"]["jpeg/<series uid>, pixel statistics"] == 4
    _, full = prepare(CBISDDSM, tree["root"], tmp_path / "c2", config_name="full")
    assert sum(len(full[s]) for s in full) == len(tree["full_labels"])

    # a series holding only its mask: the row is named in the error, or skipped and named in log and manifest
    root = tmp_path / "copy"
    shutil.copytree(tree["root"], root)
    victim = sorted(tree["crop_files"])[0]
    (root / victim).unlink()
    with pytest.raises(DatasetLayoutError, match=r"could not be found.*no cropped image.*skip_corrupt=True"):
        prepare(CBISDDSM, root, tmp_path / "c3")
    with caplog.at_level(logging.WARNING):
        builder, ds = prepare(CBISDDSM, root, tmp_path / "c4", skip_corrupt=True)
    m = manifest(builder)
    assert m["num_skipped"] == 1 and sum(len(ds[s]) for s in ds) == tree["n_rows"] - 1
    (skipped,) = m["skipped"]
    series_uid = victim.split("/")[1]
    assert series_uid in skipped["path"] and "no cropped image" in skipped["reason"]
    assert series_uid in caplog.text
