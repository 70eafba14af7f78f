"""What every builder checks and records: the file-exists check (issue 13 item 4) and the split manifest contract."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import logging  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

try:
    from data_fixtures import corrupt_file, make_aptos2019_tree, make_isic2019_tree, manifest, prepare
except ImportError:  # tests/ is a package
    from tests.data_fixtures import corrupt_file, make_aptos2019_tree, make_isic2019_tree, manifest, prepare

from cdtm_hf.data import (  # noqa: E402
    APTOS2019,
    ISIC2019,
    CorruptImageError,
    read_manifest,
    verify_image,
    write_manifest,
)

CONTRACT_KEYS = {"dataset", "config", "split_strategy", "grouping", "counts", "skipped", "num_skipped"}


@pytest.fixture(scope="module")
def aptos(tmp_path_factory):
    return make_aptos2019_tree(tmp_path_factory.mktemp("aptos"))


def test_verify_none_still_checks_that_files_exist(aptos, tmp_path, caplog):
    """Item 4: verify_images="none" used to keep rows whose file does not exist (failing mid-training)."""
    root = tmp_path / "data"
    shutil.copytree(aptos["root"], root)
    images = sorted((root / "train_images").glob("*.png"))
    images[0].unlink()
    corrupt_file(images[1], keep=0.3)  # "none" skips the decode: a truncated file is kept
    with pytest.raises(CorruptImageError, match=rf"do not exist: {images[0]} \(missing.*skip_corrupt=True"):
        prepare(APTOS2019, root, tmp_path / "c1", verify_images="none")
    with caplog.at_level(logging.WARNING):
        builder, ds = prepare(APTOS2019, root, tmp_path / "c2", verify_images="none", skip_corrupt=True)
    assert images[0].name in caplog.text
    m = manifest(builder)
    assert m["skipped"] == [{"path": f"train_images/{images[0].name}", "reason": "missing: no such file"}]
    assert m["num_skipped"] == 1 and sum(len(ds[s]) for s in ds) == len(aptos["labels"]) - 1
    assert any(images[1].name in f for s in ds for f in ds[s]["file"])
    assert verify_image(images[0], "none") == "missing: no such file" and verify_image(images[1], "none") is None


def test_manifest_contract_and_grouping(aptos, tmp_path):
    builder, _ = prepare(APTOS2019, aptos["root"], tmp_path / "a")
    m = manifest(builder)
    assert CONTRACT_KEYS <= set(m)
    assert m["dataset"] == "APTOS2019" and m["grouping"] == "image" and m["num_skipped"] == 0
    assert m["layout"] == "train.csv + train_images/<id_code>.png"
    assert sum(sum(c.values()) for c in m["counts"].values()) == len(aptos["labels"])
    path = write_manifest(m, tmp_path / "out")
    assert path.name == "split_manifest.json" and read_manifest(path) == m


def test_isic_rows_without_lesion_id_make_grouping_image(tmp_path):
    """The manifest states the truth: ISIC images without a lesion id are grouped alone."""
    tree = make_isic2019_tree(tmp_path / "isic")  # 6 images per class, the last one without a lesion id
    builder, _ = prepare(ISIC2019, tree["root"], tmp_path / "c1")
    m = manifest(builder)
    assert m["grouping"] == "image" and m["images_without_patient_id"] == 8  # the last image of every class
    assert "lesion_id groups" in m["layout"]


def test_a_loaded_dataset_comes_with_its_manifest(aptos, tmp_path):
    from cdtm_hf.data import load_medical_dataset

    ds, m = load_medical_dataset("aptos2019", aptos["root"], cache_dir=str(tmp_path / "c"))
    assert m["dataset"] == "APTOS2019" and set(m["files"]) == {f for s in ds for f in ds[s]["file"]}
    assert m["grouping"] == "image" and not m["has_patient_ids"] and "one patient may appear" in m["description"]
    with pytest.warns(FutureWarning, match="split_manifest_of is deprecated"):
        from cdtm_hf.data import split_manifest_of
    assert split_manifest_of(ds) == m  # the 0.2 reader still works for a release
