import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import logging  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

try:
    from data_fixtures import make_chexpert_tree, make_zip, manifest, prepare
except ImportError:  # tests/ is a package
    from tests.data_fixtures import make_chexpert_tree, make_zip, manifest, prepare

from cdtm_hf.data import (  # noqa: E402
    CheXpert,
    CorruptImageError,
    DataDirRequiredError,
    DatasetLayoutError,
    MissingColumnError,
    label_names,
)
from cdtm_hf.data.chexpert import CHEXPERT_LABELS, map_uncertain  # noqa: E402


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_chexpert_tree(tmp_path_factory.mktemp("chexpert"), n_train_patients=60, n_valid_patients=10)


def _expected(rows, policy):
    out = {}
    for r in rows:
        raw = [r[c] for c in CHEXPERT_LABELS]
        if policy == "ignore" and -1.0 in raw:
            continue
        unc = 1.0 if policy == "ones" else 0.0
        out[r["Path"]] = [0.0 if v is None else (unc if v == -1.0 else v) for v in raw]
    return out


def test_map_uncertain():
    raw = np.array([[1, 0, -1, np.nan, 1], [0, 0, 0, 1, np.nan]], dtype=float)
    ones, keep = map_uncertain(raw, "ones")
    assert ones.tolist() == [[1, 0, 1, 0, 1], [0, 0, 0, 1, 0]] and keep.all()
    zeros, keep = map_uncertain(raw, "zeros")
    assert zeros.tolist() == [[1, 0, 0, 0, 1], [0, 0, 0, 1, 0]] and keep.all()
    _, keep = map_uncertain(raw, "ignore")
    assert keep.tolist() == [False, True]
    with pytest.raises(ValueError, match="uncertainty_policy"):
        map_uncertain(raw, "maybe")


@pytest.mark.parametrize("policy", ["ones", "zeros", "ignore"])
def test_uncertainty_policies(tree, tmp_path, policy):
    builder, ds = prepare(CheXpert, tree["root"], tmp_path, uncertainty_policy=policy, split_strategy="official")
    rows = tree["rows"]["train"] + tree["rows"]["valid"]
    expected = _expected(rows, policy)
    got = {f: y for s in ds for f, y in zip(ds[s]["file"], ds[s]["labels"])}
    assert got == expected
    assert ds["train"].features["labels"].length == 5
    assert label_names(ds) == CHEXPERT_LABELS
    m = manifest(builder)
    assert m["multi_label"] is True and m["class_names"] == CHEXPERT_LABELS
    assert m["notes"]["uncertainty_policy"] == policy
    n_dropped = len(rows) - len(expected)
    assert m["notes"]["dropped_uncertain_rows"] == n_dropped and (n_dropped > 0) == (policy == "ignore")
    # official: valid.csv is the test split; validation carved from train by patient
    assert sorted(ds["test"]["file"]) == sorted(p for p in expected if "/valid/" in p)
    assert not set(ds["train"]["patient_id"]) & set(ds["validation"]["patient_id"])


def test_patient_split_frontal_only_and_metadata(tree, tmp_path):
    builder, ds = prepare(CheXpert, tree["root"], tmp_path, frontal_only=True)
    seen = {}
    for s in ds:
        for f, pid, view in zip(ds[s]["file"], ds[s]["patient_id"], ds[s]["view"]):
            assert view == "Frontal" and pid in f
            assert seen.setdefault(pid, s) == s
    n_frontal = sum(1 for r in tree["rows"]["train"] + tree["rows"]["valid"] if r["Frontal/Lateral"] == "Frontal")
    assert sum(len(ds[s]) for s in ds) == n_frontal
    row = ds["train"][0]
    assert row["sex"] in {"Male", "Female"} and row["age"] >= 20 and row["ap_pa"] == "AP"
    assert manifest(builder)["notes"]["dropped_lateral_rows"] > 0


def test_zip_input_and_errors(tree, tmp_path):
    archive = make_zip(tree["base"], tmp_path / "CheXpert-v1.0-small.zip")
    _, ds = prepare(CheXpert, archive, tmp_path / "c0", split_strategy="paper")
    assert sum(len(ds[s]) for s in ds) == len(tree["rows"]["train"]) + len(tree["rows"]["valid"])

    with pytest.raises(DataDirRequiredError, match="stanfordmlgroup.github.io/competitions/chexpert"):
        prepare(CheXpert, None, tmp_path / "c1")
    root = tmp_path / "copy"
    shutil.copytree(tree["root"], root)
    csv = root / "CheXpert-v1.0-small" / "valid.csv"
    pd.read_csv(csv).drop(columns=["Edema"]).to_csv(csv, index=False)
    with pytest.raises(MissingColumnError, match=r"valid\.csv.*'Edema'"):
        prepare(CheXpert, root, tmp_path / "c2")
    csv.unlink()
    with pytest.raises(DatasetLayoutError, match=r"valid\.csv not found.*Expected layout"):
        prepare(CheXpert, root, tmp_path / "c3")
    with pytest.raises(ValueError, match="uncertainty_policy"):
        CheXpert(data_dir=str(root), cache_dir=str(tmp_path), uncertainty_policy="maybe")


@pytest.mark.parametrize("variant", ["mirror", "renamed"])
def test_mirror_and_renamed_release_folder(tmp_path, caplog, variant):
    """Item 3: train.csv/valid.csv/train/valid at the top (or a renamed release folder), Path still begins with
    CheXpert-v1.0-small/."""
    if variant == "mirror":
        tree = make_chexpert_tree(tmp_path / "chexpert-mirror", n_train_patients=12, n_valid_patients=4, mirror=True)
        data_dir = tree["root"]
    else:
        tree = make_chexpert_tree(tmp_path / "release", n_train_patients=12, n_valid_patients=4)
        data_dir = tmp_path / "release" / "my_chexpert"
        tree["base"].rename(data_dir)
    with caplog.at_level(logging.INFO, logger="cdtm_hf"):
        builder, ds = prepare(CheXpert, data_dir, tmp_path / "cache", split_strategy="official")
    rows = tree["rows"]["train"] + tree["rows"]["valid"]
    assert sorted(f for s in ds for f in ds[s]["file"]) == sorted(r["Path"] for r in rows)
    assert all(f.startswith("CheXpert-v1.0-small/valid/") for f in ds["test"]["file"])
    layout = manifest(builder)["layout"]
    assert "first component" in layout and "first component" in caplog.text
    assert ds["train"][0]["image"].size == (8, 8)


def test_missing_image_is_not_called_corrupt(tree, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tree["root"], root)
    victim = sorted((root / "CheXpert-v1.0-small" / "train").rglob("*.jpg"))[0]
    victim.unlink()
    missing = r"1 image file\(s\) listed by the dataset do not exist.*layout found"
    with pytest.raises(CorruptImageError, match=missing) as err:
        prepare(CheXpert, root, tmp_path / "c1")
    assert str(victim) in str(err.value) and "Re-download" not in str(err.value)
