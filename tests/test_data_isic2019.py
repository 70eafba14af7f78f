import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import shutil  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

try:
    from data_fixtures import corrupt_file, make_isic2019_tree, make_zip, manifest, prepare
except ImportError:  # tests/ is a package
    from tests.data_fixtures import corrupt_file, make_isic2019_tree, make_zip, manifest, prepare

from cdtm_hf.data import ISIC2019, CorruptImageError, DatasetLayoutError, MissingColumnError  # noqa: E402

CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_isic2019_tree(tmp_path_factory.mktemp("isic"), per_class={c: 8 for c in CLASSES})


def test_classes_labels_and_lesion_grouping(tree, tmp_path):
    builder, ds = prepare(ISIC2019, tree["root"], tmp_path)
    assert ds["train"].features["label"].names == CLASSES
    seen = {}
    for split in ds:
        for rel, y, group in zip(ds[split]["file"], ds[split]["label"], ds[split]["patient_id"]):
            image = rel.rsplit("/", 1)[-1][:-4]
            assert CLASSES[y] == tree["labels"][image]
            assert group == tree["lesion_of"][image]
            assert seen.setdefault(group, split) == split, "lesion in two splits"
        assert set(ds[split]["label"]) == set(range(8))
    m = manifest(builder)
    assert m["notes"]["group_id"] == "lesion_id"
    assert sum(m["num_images"].values()) == 64


def test_zip_images_and_missing_metadata(tree, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(tree["root"] / "ISIC_2019_Training_GroundTruth.csv", root)
    make_zip(tree["root"] / "ISIC_2019_Training_Input", root / "ISIC_2019_Training_Input.zip")
    builder, ds = prepare(ISIC2019, root, tmp_path / "cache", split_strategy="paper")
    assert sum(len(ds[s]) for s in ds) == 64
    assert manifest(builder)["notes"]["group_id"] == "image"
    assert not (root / "ISIC_2019_Training_Input").exists()  # extracted into the cache


def test_missing_column_and_bad_rows(tree, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tree["root"], root)
    gt = root / "ISIC_2019_Training_GroundTruth.csv"
    df = pd.read_csv(gt)
    df.drop(columns=["BCC"]).to_csv(gt, index=False)
    with pytest.raises(MissingColumnError, match=r"ISIC_2019_Training_GroundTruth\.csv.*'BCC'"):
        prepare(ISIC2019, root, tmp_path / "c1")
    df.loc[0, "NV"] = 1.0  # two positives
    df.to_csv(gt, index=False)
    with pytest.raises(DatasetLayoutError, match="not one-hot"):
        prepare(ISIC2019, root, tmp_path / "c2")
    meta = root / "ISIC_2019_Training_Metadata.csv"
    pd.read_csv(meta).drop(columns=["lesion_id"]).to_csv(meta, index=False)
    df.loc[0, "NV"] = 0.0
    df.to_csv(gt, index=False)
    with pytest.raises(MissingColumnError, match=r"Metadata\.csv.*'lesion_id'"):
        prepare(ISIC2019, root, tmp_path / "c3")


def test_missing_and_corrupt_images(tree, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tree["root"], root)
    images = sorted((root / "ISIC_2019_Training_Input").glob("*.jpg"))
    images[0].unlink()
    corrupt_file(images[1], keep=0.3)
    with pytest.raises(CorruptImageError, match=images[0].name) as err:
        prepare(ISIC2019, root, tmp_path / "c1")
    assert images[1].name in str(err.value)
    builder, ds = prepare(ISIC2019, root, tmp_path / "c2", skip_corrupt=True)
    skipped = {s["path"] for s in manifest(builder)["skipped"]}
    assert skipped == {f"ISIC_2019_Training_Input/{p.name}" for p in images[:2]}
    assert sum(len(ds[s]) for s in ds) == 62
