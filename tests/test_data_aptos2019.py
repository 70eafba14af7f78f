import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

try:
    from data_fixtures import make_aptos2019_tree, make_zip, manifest, prepare
except ImportError:  # tests/ is a package
    from tests.data_fixtures import make_aptos2019_tree, make_zip, manifest, prepare

from cdtm_hf.data import APTOS2019, DataDirRequiredError, DatasetLayoutError, MissingColumnError  # noqa: E402
from cdtm_hf.data.splits import apportion  # noqa: E402

GRADES = (8, 5, 6, 4, 5)


def test_grades_and_paper_split(tmp_path):
    info = make_aptos2019_tree(tmp_path / "data", per_grade=GRADES)
    builder, ds = prepare(APTOS2019, tmp_path / "data", tmp_path / "cache", split_strategy="paper", seed=3)
    assert ds["train"].features["label"].names == ["no_dr", "mild", "moderate", "severe", "proliferative_dr"]
    for grade, n in enumerate(GRADES):
        assert [ds[s]["label"].count(grade) for s in ("train", "validation", "test")] == apportion(n, (3, 1, 1))
    for s in ds:
        for rel, y in zip(ds[s]["file"], ds[s]["label"]):
            assert info["labels"][rel.split("/")[-1][:-4]] == y
    assert manifest(builder)["seed"] == 3


def test_zip_input(tmp_path):
    make_aptos2019_tree(tmp_path / "aptos2019-blindness-detection", per_grade=GRADES)
    archive = make_zip(tmp_path / "aptos2019-blindness-detection", tmp_path / "aptos2019-blindness-detection.zip")
    _, ds = prepare(APTOS2019, archive, tmp_path / "cache")
    assert sum(len(ds[s]) for s in ds) == sum(GRADES)


def test_data_dir_required_says_where_to_get_it(tmp_path):
    with pytest.raises(DataDirRequiredError, match=r"Kaggle.*aptos2019-blindness-detection"):
        prepare(APTOS2019, None, tmp_path / "cache")
    with pytest.raises(DataDirRequiredError, match=r"does not exist.*aptos2019-blindness-detection"):
        prepare(APTOS2019, tmp_path / "missing", tmp_path / "cache")


def test_missing_column_and_bad_grade(tmp_path):
    make_aptos2019_tree(tmp_path / "data", per_grade=GRADES)
    csv = tmp_path / "data" / "train.csv"
    df = pd.read_csv(csv)
    df.rename(columns={"diagnosis": "grade"}).to_csv(csv, index=False)
    with pytest.raises(MissingColumnError, match=r"train\.csv.*'diagnosis'"):
        prepare(APTOS2019, tmp_path / "data", tmp_path / "c1")
    df.loc[0, "diagnosis"] = 7
    df.to_csv(csv, index=False)
    with pytest.raises(DatasetLayoutError, match="0..4"):
        prepare(APTOS2019, tmp_path / "data", tmp_path / "c2")
    (tmp_path / "data" / "train_images").rename(tmp_path / "data" / "images")
    with pytest.raises(DatasetLayoutError, match=r"train_images/.*Expected layout"):
        prepare(APTOS2019, tmp_path / "data", tmp_path / "c3")
