"""Patient-grouped stratified K-fold: no patient in two folds, every class in every fold when possible, an error
naming the class when not, the greedy fallback where StratifiedGroupKFold drops a class, the per-fold splits."""

import json

import numpy as np
import pytest

from cdtm_hf.data.folds import assign_folds, describe_folds, fold_splits
from cdtm_hf.data.splits import InsufficientSamplesError


def patients(seed=0, n_patients=30, classes=3):
    rng = np.random.default_rng(seed)
    patient_class = np.r_[np.arange(classes).repeat(5), rng.integers(0, classes, n_patients - 5 * classes)]
    sizes = rng.integers(1, 15, n_patients)
    labels = np.repeat(patient_class, sizes)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], sizes)
    return labels, groups


def fold_of_each_patient(folds, groups):
    seen = {}
    for f, g in zip(folds, groups):
        seen.setdefault(g, set()).add(int(f))
    return seen


@pytest.mark.parametrize("k", [3, 5])
def test_no_patient_in_two_folds_and_every_class_in_every_fold(k):
    labels, groups = patients()
    got = assign_folds(labels, groups, n_folds=k, seed=1)
    assert got.method == "StratifiedGroupKFold" and got.grouping == "patient" and got.note is None
    assert all(len(f) == 1 for f in fold_of_each_patient(got.folds, groups).values())
    for fold in range(k):
        assert set(labels[got.folds == fold]) == {0, 1, 2}
    again = assign_folds(labels, groups, n_folds=k, seed=1)
    assert (again.folds == got.folds).all()
    assert not (assign_folds(labels, groups, n_folds=k, seed=2).folds == got.folds).all()


def test_a_class_in_too_few_patients_is_named():
    labels, groups = patients()
    labels = labels.copy()
    labels[np.isin(groups, ["p0", "p1"])] = 3  # class 3: two patients only
    with pytest.raises(InsufficientSamplesError, match=r"class 'in situ' occurs in 2 patient\(s\).*--cv_folds 2"):
        assign_folds(labels, groups, n_folds=3, class_names=["a", "b", "c", "in situ"])
    with pytest.raises(InsufficientSamplesError, match="cannot fill 40 folds"):
        assign_folds(labels, groups, n_folds=40)


def test_greedy_assignment_where_stratified_group_kfold_leaves_a_class_out():
    # one huge patient of class 1 makes StratifiedGroupKFold (seed 156) put no class-1 patient in one fold
    pl, sizes = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 3, 11, 14, 10, 1, 1, 561, 1]
    labels, groups = np.repeat(pl, sizes), np.repeat(np.arange(10), sizes)
    got = assign_folds(labels, groups, n_folds=5, seed=156, class_names=["benign", "malignant"])
    assert got.method.startswith("grouped greedy") and "StratifiedGroupKFold left class" in got.note
    assert all(len(f) == 1 for f in fold_of_each_patient(got.folds, groups).values())
    for fold in range(5):
        assert set(labels[got.folds == fold]) == {0, 1}


def test_multilabel_and_ungrouped_folds():
    rng = np.random.default_rng(3)
    multi = (rng.random((60, 3)) < 0.4).astype(int)
    groups = np.repeat(np.arange(20), 3)
    got = assign_folds(multi, groups, n_folds=4)
    assert "multi-label" in got.note
    for fold in range(4):
        assert (multi[got.folds == fold].sum(axis=0) > 0).all()
    plain = assign_folds(rng.integers(0, 2, 50), n_folds=5)
    assert plain.grouping == "image" and np.bincount(plain.folds).tolist() == [10] * 5


def test_each_folds_validation_comes_from_the_training_folds():
    labels, groups = patients(seed=4)
    assignment = assign_folds(labels, groups, n_folds=5, seed=0)
    splits = fold_splits(labels, assignment, groups)
    tested = np.concatenate([s.test for s in splits])
    assert sorted(tested.tolist()) == list(range(len(labels)))  # every image tested exactly once
    for k, split in enumerate(splits):
        assert (assignment.folds[split.test] == k).all()
        parts = [set(groups[idx]) for idx in split]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert len(split.train) + len(split.validation) + len(split.test) == len(labels)
        assert set(labels[split.validation]) == {0, 1, 2}
    summary = json.loads(json.dumps(describe_folds(labels, assignment, splits, groups, ["a", "b", "c"])))
    assert summary["method"] == "StratifiedGroupKFold" and len(summary["folds"]) == 5
    assert summary["folds"][0]["test"]["images"] == len(splits[0].test)
    assert set(summary["folds"][0]["validation"]["counts"]) == {"a", "b", "c"}
