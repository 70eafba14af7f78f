"""Patient-grouped, stratified K-fold cross-validation: which fold tests each image, and each fold's three splits.

- [`assign_folds`]: one fold id per image. No patient's images are in two folds, and every class is in every fold
  whenever each class occurs in at least K patients (otherwise an `InsufficientSamplesError` names the class before
  any training). It uses `sklearn.model_selection.StratifiedGroupKFold` (seeded, shuffled). That algorithm balances
  class proportions greedily but does not promise every class in every fold; where it leaves a class out of a fold,
  or for multi-label data (it takes one class per image), the package's grouped greedy assignment of
  `cdtm_hf.data.splits` is used instead, which first gives every fold one patient of each class. The result says which
  ran and why (`method`, `note`).
- [`fold_splits`]: per fold, `SplitIndices(train, validation, test)`: the test split is the fold; the validation
  split is carved from the *other* folds (grouped by patient, stratified), so no test image is ever used for model
  selection, and the remaining images train.
- [`describe_folds`]: a JSON summary of the folds (images, patients and class counts per split and fold).

Without patient ids every image is its own group (plain stratified K-fold), and the result says `grouping: "image"`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .splits import (
    InsufficientSamplesError,
    SplitIndices,
    _class_name,
    _greedy_assignment,
    _label_matrix,
    patient_grouped_split,
    stratified_split,
)

__all__ = ["FoldAssignment", "assign_folds", "describe_folds", "fold_splits"]

_GREEDY = "grouped greedy (cdtm_hf.data.splits)"


class FoldAssignment(NamedTuple):
    """The fold of every image, and how it was made."""

    folds: np.ndarray  #: `(n,)` fold id (0..K-1) of every image
    n_folds: int
    seed: int
    grouping: str  #: `"patient"` (no patient in two folds) or `"image"` (no patient ids)
    method: str  #: `"StratifiedGroupKFold"` or the package's grouped greedy assignment
    note: str | None  #: why the greedy assignment ran, where it did


def _group_codes(groups: Sequence[Any] | None, n: int) -> tuple[np.ndarray, str]:
    if groups is None:
        return np.arange(n), "image"
    if len(groups) != n:
        raise ValueError(f"{len(groups)} patient ids for {n} images; pass one patient id per image")
    return np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)[1].reshape(-1), "patient"


def _check_classes(matrix: np.ndarray, codes: np.ndarray, classes: list, n_folds: int, grouping: str,
                   class_names: Sequence[str] | None) -> None:
    """Every class (with any image) must occur in at least `n_folds` groups, or no fold assignment keeps it in all."""
    num_groups = int(codes.max()) + 1
    if num_groups < n_folds:
        raise InsufficientSamplesError(
            f"{num_groups} {grouping}s cannot fill {n_folds} folds; pass --cv_folds {max(2, num_groups)} or fewer"
        )
    per_group = np.zeros((num_groups, matrix.shape[1]))
    np.add.at(per_group, codes, matrix)
    spread = (per_group > 0).sum(axis=0)
    for c in np.flatnonzero((spread < n_folds) & (matrix.sum(axis=0) > 0)):
        name = _class_name(classes[c], class_names)
        raise InsufficientSamplesError(
            f"class {name!r} occurs in {int(spread[c])} {grouping}(s), too few for {n_folds}-fold cross-validation "
            f"grouped by {grouping}: every fold must test it, so it needs at least {n_folds}; pass --cv_folds "
            f"{max(2, int(spread[c]))} or fewer, add {grouping}s of {name!r}, or drop the class"
        )


def _missing(folds: np.ndarray, matrix: np.ndarray, n_folds: int) -> tuple[int, int] | None:
    """`(class, fold)` of the first class (with images) absent from a fold, or `None`."""
    counts = np.zeros((n_folds, matrix.shape[1]))
    np.add.at(counts, folds, matrix)
    present = matrix.sum(axis=0) > 0
    holes = np.argwhere((counts == 0) & present[None, :])
    return (int(holes[0, 1]), int(holes[0, 0])) if len(holes) else None


def _greedy_folds(matrix: np.ndarray, codes: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """The package's grouped greedy assignment with K equal shares (the restarts of `patient_grouped_split`)."""
    num_groups, num_classes = int(codes.max()) + 1, matrix.shape[1]
    gvec = np.zeros((num_groups, num_classes + 1))
    np.add.at(gvec[:, :num_classes], codes, matrix)
    np.add.at(gvec[:, num_classes], codes, 1.0)
    totals = gvec.sum(axis=0)
    targets = np.outer(np.full(n_folds, 1.0 / n_folds), totals)
    weights = 1.0 / np.maximum(totals, 1.0) ** 2
    spread = (gvec[:, :num_classes] > 0).sum(axis=0)
    master, best = np.random.default_rng(seed), (math.inf, None)
    for attempt in range(int(max(1, min(16, 50_000 // num_groups)))):
        rng = np.random.default_rng(master.integers(0, 2**63 - 1))
        assign, cost = _greedy_assignment(gvec, targets, weights, np.ones(n_folds, bool), spread, rng, attempt)
        if cost < best[0] - 1e-12:
            best = (cost, assign)
    return best[1][codes]


def assign_folds(labels: Sequence[Any], groups: Sequence[Any] | None = None, n_folds: int = 5, seed: int = 42,
                 class_names: Sequence[str] | None = None) -> FoldAssignment:
    """Patient-grouped stratified K-fold: the fold that tests each image.

    Args:
        labels (`Sequence`): one class per image, or one multi-hot vector per image.
        groups (`Sequence`, *optional*): one patient (or lesion) id per image; without it, images are the groups.
        n_folds (`int`, *optional*, defaults to 5): K, at least 2.
        seed (`int`, *optional*, defaults to 42): the shuffling seed (same seed and input order, same folds).
        class_names (`Sequence[str]`, *optional*): names for the error messages when labels are ids.

    Raises:
        `InsufficientSamplesError`: fewer groups than folds, or a class in fewer than K groups (named).
    """
    if not (isinstance(n_folds, (int, np.integer)) and n_folds >= 2):
        raise ValueError(f"n_folds={n_folds!r}: cross-validation needs an integer number of folds of at least 2")
    n = len(labels)
    if n == 0:
        raise InsufficientSamplesError("cannot make folds of an empty dataset")
    matrix, classes = _label_matrix(labels)
    codes, grouping = _group_codes(groups, n)
    _check_classes(matrix, codes, classes, n_folds, grouping, class_names)
    note = None
    if np.ndim(labels[0]) == 1:
        note = "StratifiedGroupKFold takes one class per image; multi-label data uses the grouped greedy assignment"
    else:
        from sklearn.model_selection import StratifiedGroupKFold

        folds = np.empty(n, dtype=np.int64)
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for k, (_, test) in enumerate(splitter.split(np.zeros(n), matrix.argmax(axis=1), codes)):
            folds[test] = k
        hole = _missing(folds, matrix, n_folds)
        if hole is None:
            return FoldAssignment(folds, n_folds, seed, grouping, "StratifiedGroupKFold", None)
        name = _class_name(classes[hole[0]], class_names)
        note = (f"StratifiedGroupKFold left class {name!r} out of fold {hole[1]} (it balances class shares "
                "greedily and does not promise every class in every fold); the grouped greedy assignment, which "
                "first gives every fold one group of each class, was used")
    folds = _greedy_folds(matrix, codes, n_folds, seed)
    hole = _missing(folds, matrix, n_folds)
    if hole is not None:  # pragma: no cover - the coverage phase puts every class with K groups in every fold
        raise InsufficientSamplesError(f"class {_class_name(classes[hole[0]], class_names)!r} is missing from fold "
                                       f"{hole[1]}; use fewer folds")
    return FoldAssignment(folds.astype(np.int64), n_folds, seed, grouping, _GREEDY, note)


def fold_splits(labels: Sequence[Any], assignment: FoldAssignment, groups: Sequence[Any] | None = None,
                validation_fraction: float = 0.25, class_names: Sequence[str] | None = None) -> list[SplitIndices]:
    """Each fold's train / validation / test indices: test = the fold, validation carved from the other folds.

    Args:
        labels (`Sequence`): the labels given to [`assign_folds`].
        assignment (`FoldAssignment`): its result.
        groups (`Sequence`, *optional*): the patient ids given to it (the validation split keeps patients whole).
        validation_fraction (`float`, *optional*, defaults to 0.25): the share of the training folds that validates
            (0.25 with K = 5 gives the paper's 3:1:1 proportions in every fold).
        class_names (`Sequence[str]`, *optional*): names for the error messages.

    Returns:
        `list[SplitIndices]`: one per fold, sorted indices into `labels`; the validation split uses the fold's seed
        (`assignment.seed + fold`).
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction={validation_fraction!r} must lie in (0, 1)")
    labels_list = list(labels)
    ratios = (1.0 - validation_fraction, validation_fraction, 0.0)
    out = []
    for k in range(assignment.n_folds):
        test, rest = np.flatnonzero(assignment.folds == k), np.flatnonzero(assignment.folds != k)
        sub_labels = [labels_list[i] for i in rest]
        if groups is None and np.ndim(sub_labels[0]) == 0:
            inner = stratified_split(sub_labels, ratios, seed=assignment.seed + k, class_names=class_names)
        else:
            sub_groups = [groups[i] for i in rest] if groups is not None else list(range(len(rest)))
            inner = patient_grouped_split(sub_labels, sub_groups, ratios, seed=assignment.seed + k,
                                          class_names=class_names)
        out.append(SplitIndices(np.sort(rest[inner.train]), np.sort(rest[inner.validation]), test))
    return out


def describe_folds(labels: Sequence[Any], assignment: FoldAssignment, splits: Sequence[SplitIndices] | None = None,
                   groups: Sequence[Any] | None = None, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """A JSON summary of the cross-validation: how the folds were made, and per fold and split the images, the
    patients and the images of each class (multi-label: its positives)."""
    matrix, classes = _label_matrix(labels)
    names = [_class_name(c, class_names) for c in classes]
    codes, _ = _group_codes(groups, len(labels))

    def summary(idx: np.ndarray) -> dict[str, Any]:
        return {"images": int(len(idx)), "patients": int(len(np.unique(codes[idx]))) if groups is not None else None,
                "counts": dict(zip(names, matrix[idx].sum(axis=0).astype(int).tolist()))}

    folds = []
    for k in range(assignment.n_folds):
        split = splits[k] if splits is not None else None
        parts = {"test": np.flatnonzero(assignment.folds == k)} if split is None else split._asdict()
        folds.append({"fold": k, **{name: summary(np.asarray(idx)) for name, idx in parts.items()}})
    return {"n_folds": assignment.n_folds, "seed": assignment.seed, "grouping": assignment.grouping,
            "method": assignment.method, "note": assignment.note, "folds": folds}
