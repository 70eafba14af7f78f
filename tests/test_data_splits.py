import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cdtm_hf.data.splits import (  # noqa: E402
    InsufficientSamplesError,
    apportion,
    assignment_from_indices,
    minimum_class_size,
    patient_grouped_split,
    stratified_split,
)

# Table II of the paper: BreakHis malignant_200x, 3:1:1
TABLE_II = {"DC": (896, (538, 179, 179)), "LC": (163, (97, 33, 33)), "MC": (196, (118, 39, 39)), "PC": (135, (81, 27, 27))}


def _per_class(labels, idx):
    labels = np.asarray(labels)
    return {c: tuple(int((labels[i] == c).sum()) for i in idx) for c in np.unique(labels)}


def test_apportion_reproduces_table_ii():
    for n, expected in TABLE_II.values():
        assert tuple(apportion(n, (3, 1, 1))) == expected


def test_stratified_split_reproduces_table_ii_counts():
    labels = [c for c, (n, _) in TABLE_II.items() for _ in range(n)]
    idx = stratified_split(labels, (3, 1, 1), seed=0)
    got = _per_class(labels, idx)
    assert got == {c: exp for c, (_, exp) in TABLE_II.items()}
    all_idx = np.concatenate(idx)
    assert sorted(all_idx.tolist()) == list(range(len(labels)))  # a partition


def test_hcrf_ratio_1_1_2():
    labels = [0] * 140 + [1] * 140
    assert _per_class(labels, stratified_split(labels, (1, 1, 2), seed=3)) == {0: (35, 35, 70), 1: (35, 35, 70)}


@pytest.mark.parametrize("ratios", [(3, 1, 1), (1, 1, 2), (0.6, 0.2, 0.2), (7, 2, 1)])
def test_counts_within_one_of_exact_share(ratios):
    rng = np.random.default_rng(0)
    sizes = rng.integers(minimum_class_size(ratios), 400, size=12)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    idx = stratified_split(labels, ratios, seed=1)
    total = sum(ratios)
    for c, counts in _per_class(labels, idx).items():
        for k, got in enumerate(counts):
            assert abs(got - sizes[c] * ratios[k] / total) <= 1.0


def test_stratified_split_is_seeded():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    a = stratified_split(labels, seed=7)
    b = stratified_split(labels, seed=7)
    c = stratified_split(labels, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_too_small_class_error_names_class_count_and_minimum():
    labels = [0] * 20 + [1] * 2
    with pytest.raises(InsufficientSamplesError) as err:
        stratified_split(labels, (3, 1, 1), seed=0, class_names=["big", "rare"])
    msg = str(err.value)
    assert "'rare'" in msg and "has 2 images" in msg and "at least 3" in msg
    assert isinstance(err.value, ValueError)
    assert minimum_class_size((3, 1, 1)) == 3 and apportion(3, (1, 1, 2)) == [1, 1, 1]
    assert minimum_class_size((8, 1, 1)) == 5  # n=4 -> (4, 0, 0), n=5 -> (3, 1, 1)



def _grouped_fixture(seed=0):
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for c, (n, n_pat) in enumerate([(896, 38), (163, 5), (196, 9), (135, 6)]):
        per = rng.multinomial(n - n_pat, rng.dirichlet(np.full(n_pat, 2.0))) + 1
        for j, k in enumerate(per):
            labels += [c] * int(k)
            groups += [f"p{c}-{j}"] * int(k)
    return np.asarray(labels), np.asarray(groups)


def test_patient_grouped_split_no_group_leak_and_all_classes_present():
    labels, groups = _grouped_fixture()
    idx = patient_grouped_split(labels, groups, (3, 1, 1), seed=42)
    sets = [set(groups[i]) for i in idx]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(len(i) for i in idx) == len(labels)
    for i in idx:
        assert set(labels[i]) == {0, 1, 2, 3}
    # overall proportions roughly 3:1:1
    frac = np.array([len(i) for i in idx]) / len(labels)
    assert np.allclose(frac, [0.6, 0.2, 0.2], atol=0.06)


def test_patient_grouped_split_is_seeded():
    labels, groups = _grouped_fixture()
    a = patient_grouped_split(labels, groups, seed=1)
    b = patient_grouped_split(labels, groups, seed=1)
    c = patient_grouped_split(labels, groups, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_patient_grouped_split_multi_class_group_and_multilabel():
    # a patient with two classes (BreakHis has one patient under two tumour types)
    labels = [0, 0, 1, 1] + [0] * 6 + [1] * 6
    groups = ["shared"] * 4 + [f"a{i}" for i in range(6)] + [f"b{i}" for i in range(6)]
    idx = patient_grouped_split(labels, groups, seed=0)
    owner = [k for k, i in enumerate(idx) if 0 in i]
    assert all(j in idx[owner[0]] for j in range(4))
    # multi-hot labels
    rng = np.random.default_rng(0)
    y = (rng.random((300, 5)) < 0.3).astype(float)
    g = np.repeat(np.arange(100), 3)
    idx = patient_grouped_split(list(y), g, (3, 1, 1), seed=0)
    for i in idx:
        assert (y[i].sum(axis=0) > 0).all()
    sets = [set(g[i]) for i in idx]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_patient_grouped_split_too_few_groups():
    labels = [0] * 10 + [1] * 10
    groups = [f"a{i}" for i in range(10)] + ["b0"] * 5 + ["b1"] * 5
    with pytest.raises(InsufficientSamplesError, match=r"class 'one' occurs in 2 group.*10 images.*at least 3"):
        patient_grouped_split(labels, groups, seed=0, class_names=["zero", "one"])


def test_zero_ratio_gives_empty_split_and_assignment():
    labels = [0] * 12 + [1] * 12
    groups = [str(i // 2) for i in range(24)]
    idx = patient_grouped_split(labels, groups, (3, 1, 0), seed=0)
    assert len(idx.test) == 0 and len(idx.train) > len(idx.validation) > 0
    names = assignment_from_indices(24, idx)
    assert set(names) == {"train", "validation"}


def test_bad_ratios():
    with pytest.raises(ValueError):
        stratified_split([0, 1], ratios=(1, 1))
    with pytest.raises(ValueError):
        stratified_split([0, 1], ratios=(1, -1, 1))
