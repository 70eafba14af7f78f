"""Seeded, reproducible train/validation/test splits for the medical image builders.

Two algorithms are provided:

* [`stratified_split`] -- the paper's random stratified split (3:1:1 for BreakHis,
  1:1:2 for HCRF).  Every class is apportioned exactly: the held-out splits of a class
  receive ``round_half_up(n_c * r_i / sum(r))`` images and the split with the largest
  ratio (train for 3:1:1) receives the remainder.  This reproduces Table II of the
  paper for BreakHis ``malignant_200x`` (DC 538/179/179, LC 97/33/33, MC 118/39/39,
  PC 81/27/27) and keeps every per-class count within +-1 of its exact share.
* [`patient_grouped_split`] -- the leakage-free split: all images of one group
  (patient, lesion, ...) land in the same split, while class proportions follow the
  requested ratios as closely as the group sizes allow (greedy assignment with a
  per-class coverage guarantee and a few seeded restarts).

Both functions are pure (no I/O), deterministic given ``seed`` and the *order* of the
inputs, and return [`SplitIndices`] (sorted index arrays).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "SPLIT_NAMES",
    "SPLIT_STRATEGIES",
    "InsufficientSamplesError",
    "class_set_problem",
    "SplitIndices",
    "apportion",
    "assignment_from_indices",
    "minimum_class_size",
    "normalize_ratios",
    "patient_grouped_split",
    "stratified_split",
    "stratified_subset",
]

SPLIT_NAMES: tuple[str, str, str] = ("train", "validation", "test")

#: ``paper``: random stratified split (reproduces the paper; leaks patients across splits).
#: ``patient``: grouped split, no patient in two splits (recommended).
#: ``official``: the dataset's own train/test split, validation carved from train by patient.
SPLIT_STRATEGIES: tuple[str, str, str] = ("paper", "patient", "official")


class InsufficientSamplesError(ValueError):
    """A class has too few images (or groups) for the requested split."""


class SplitIndices(NamedTuple):
    """Sorted integer index arrays of the three splits."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def normalize_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Validate a ``(train, validation, test)`` ratio triple (any positive scale)."""
    try:
        values = tuple(float(r) for r in ratios)
    except TypeError as err:
        raise ValueError(f"ratios must be a sequence of 3 numbers, got {ratios!r}") from err
    if len(values) != 3:
        raise ValueError(f"ratios must have 3 entries (train, validation, test), got {ratios!r}")
    if any(not math.isfinite(r) or r < 0 for r in values) or sum(values) <= 0:
        raise ValueError(f"ratios must be finite, non-negative and not all zero, got {ratios!r}")
    return values  # type: ignore[return-value]


def apportion(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` items into ``len(ratios)`` integer counts.

    Every split except the one with the largest ratio (the first on ties) gets
    ``floor(n * r_i / sum(r) + 0.5)``; the largest one gets the remainder.  Splits with a
    zero ratio get nothing.  Each count is within +-1 of its exact share ``n * r_i / sum(r)``
    (the remainder split within ``0.5 * (len(ratios) - 1)``).

    >>> apportion(163, (3, 1, 1))
    [97, 33, 33]
    >>> apportion(140, (1, 1, 2))
    [35, 35, 70]
    """
    r = [float(x) for x in ratios]
    total = sum(r)
    big = max(range(len(r)), key=lambda i: (r[i], -i))
    counts = [0] * len(r)
    for i, ri in enumerate(r):
        if i != big and ri > 0:
            counts[i] = int(math.floor(n * ri / total + 0.5))
    # Tiny n: rounding up may over-allocate; take back from the largest held-out splits.
    while sum(counts) > n:
        j = max((i for i in range(len(r)) if i != big), key=lambda i: (counts[i], -i))
        counts[j] -= 1
    counts[big] = n - sum(counts)
    return counts


def minimum_class_size(ratios: Sequence[float], limit: int = 100_000) -> int:
    """Smallest class size for which every split with a positive ratio gets >= 1 item."""
    r = normalize_ratios(ratios)
    needed = sum(1 for x in r if x > 0)
    for m in range(needed, limit):
        counts = apportion(m, r)
        if all(c >= 1 for c, x in zip(counts, r) if x > 0):
            return m
    return limit  # pragma: no cover - only for absurd ratios


def assignment_from_indices(n: int, indices: SplitIndices, names: Sequence[str] = SPLIT_NAMES) -> list[str]:
    """Turn [`SplitIndices`] into a per-item list of split names."""
    out: list[str | None] = [None] * n
    for name, idx in zip(names, indices):
        for i in idx:
            out[int(i)] = name
    missing = [i for i, v in enumerate(out) if v is None]
    if missing:  # pragma: no cover - internal invariant
        raise RuntimeError(f"{len(missing)} items were not assigned to any split")
    return out  # type: ignore[return-value]


def _class_name(value: Any, class_names: Sequence[str] | None) -> str:
    if class_names is not None:
        try:
            return str(class_names[int(value)])
        except (ValueError, TypeError, IndexError):
            pass
    return str(value)


def _split_desc(ratios: Sequence[float]) -> str:
    return ":".join(f"{x:g}" for x in ratios)


def stratified_split(
    labels: Sequence[Any],
    ratios: Sequence[float] = (3, 1, 1),
    seed: int = 42,
    class_names: Sequence[str] | None = None,
) -> SplitIndices:
    """Random stratified train/validation/test split (the paper's protocol).

    Args:
        labels (`Sequence[Any]`): one label per item (ints or strings).
        ratios (`Sequence[float]`, *optional*, defaults to `(3, 1, 1)`): ``(train, validation, test)`` proportions, e.g. ``(3, 1, 1)`` or ``(1, 1, 2)``.
        seed (`int`, *optional*, defaults to `42`): seed of the ``numpy.random.default_rng`` used to shuffle each class.
        class_names (`Sequence[str] | None`, *optional*, defaults to `None`): optional names used in error messages when labels are ints.

    Returns:
        [`SplitIndices`] with sorted indices into ``labels``.

    Raises:
        InsufficientSamplesError: a class is too small to put at least one image in
            every split with a positive ratio (the message names the class, its count and
            the minimum needed).
    """
    r = normalize_ratios(ratios)
    y = np.asarray(list(labels))
    if y.ndim != 1:
        raise ValueError("stratified_split expects one label per item; use patient_grouped_split for multi-label data")
    n = len(y)
    if n == 0:
        raise InsufficientSamplesError("cannot split an empty dataset")
    rng = np.random.default_rng(seed)
    minimum = minimum_class_size(r)
    parts: list[list[int]] = [[], [], []]
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        counts = apportion(len(idx), r)
        empty = [SPLIT_NAMES[k] for k, (c, x) in enumerate(zip(counts, r)) if x > 0 and c < 1]
        if empty:
            name = _class_name(cls, class_names)
            raise InsufficientSamplesError(
                f"class {name!r} has {len(idx)} images, too few for the {' and '.join(empty)} split: a "
                f"{_split_desc(r)} (train:validation:test) split needs at least {minimum} per class; add images "
                f"of {name!r}, drop the class, or change the split ratios"
            )
        perm = rng.permutation(idx)
        start = 0
        for k, c in enumerate(counts):
            parts[k].extend(perm[start : start + c].tolist())
            start += c
    return SplitIndices(*(np.sort(np.asarray(p, dtype=np.int64)) for p in parts))


def _label_matrix(labels: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """(n_items, n_classes) indicator matrix and the class values (or indices) it covers."""
    if len(labels) and np.ndim(labels[0]) == 1:  # multi-hot vectors
        mat = (np.asarray([np.asarray(x, dtype=float) for x in labels], dtype=float) > 0).astype(float)
        return mat, list(range(mat.shape[1]))
    values = np.asarray(list(labels))
    classes, inverse = np.unique(values, return_inverse=True)
    mat = np.zeros((len(values), len(classes)), dtype=float)
    mat[np.arange(len(values)), inverse.reshape(-1)] = 1.0
    return mat, list(classes)


def _check_groups_per_class(groups_with_class: np.ndarray, totals: np.ndarray, classes: list[Any],
                            class_names: Sequence[str] | None, r: np.ndarray) -> None:
    """Raise `InsufficientSamplesError` for a class that occurs in fewer groups than splits to fill."""
    active = r > 0
    n_active = int(active.sum())
    for c in range(len(groups_with_class)):
        if totals[c] > 0 and groups_with_class[c] < n_active:
            name = _class_name(classes[c], class_names)
            empty = [SPLIT_NAMES[k] for k in np.flatnonzero(active)][int(groups_with_class[c]) :]
            raise InsufficientSamplesError(
                f"class {name!r} occurs in {int(groups_with_class[c])} group(s) (patients) with {int(totals[c])} "
                f"images, too few for the {' and '.join(empty)} split: a grouped {_split_desc(r)} split needs at "
                f"least {n_active} groups per class; add patients of {name!r}, drop the class, or use the "
                "image-level 'paper' split"
            )


def _greedy_assignment(gvec: np.ndarray, targets: np.ndarray, weights: np.ndarray, active: np.ndarray,
                       groups_with_class: np.ndarray, rng: np.random.Generator, attempt: int) -> tuple[np.ndarray, float]:
    """One greedy restart of `patient_grouped_split`: (split index of every group, squared-deviation cost)."""
    n_groups, n_classes = gvec.shape[0], gvec.shape[1] - 1
    totals, sizes = gvec.sum(axis=0), gvec[:, n_classes]
    noise = rng.random(n_groups)
    if attempt == 0:
        order = np.lexsort((noise, -sizes))  # largest first, random ties
    else:
        order = np.argsort(-sizes * np.exp(rng.normal(0.0, 0.5, n_groups)), kind="stable")
    assign = np.full(n_groups, -1, dtype=np.int64)
    counts = np.zeros_like(targets)

    # Phase 1: coverage -- each active split gets one group of every class (rarest class first).
    for c in np.argsort(groups_with_class, kind="stable"):
        if totals[c] == 0:
            continue
        for s in np.flatnonzero(active):
            if counts[s, c] > 0:
                continue
            cand = np.flatnonzero((assign < 0) & (gvec[:, c] > 0))
            if len(cand) == 0:
                break
            # Prefer small groups so the coverage step barely disturbs the ratios.
            smallest = cand[sizes[cand] == sizes[cand].min()]
            g = int(rng.choice(smallest))
            assign[g] = s
            counts[s] += gvec[g]

    # Phase 2: greedy placement of the remaining groups.
    inactive_penalty = np.where(active, 0.0, np.inf)
    for g in order:
        if assign[g] >= 0:
            continue
        v = gvec[g]
        delta = ((2.0 * (counts - targets) * v + v * v) * weights).sum(axis=1) + inactive_penalty
        s = int(np.argmin(delta))
        assign[g] = s
        counts[s] += v

    cost = float((((counts - targets) ** 2) * weights).sum())
    missing = sum(1 for s in np.flatnonzero(active) for c in range(n_classes) if totals[c] > 0 and counts[s, c] == 0)
    return assign, cost + 1e6 * missing


def patient_grouped_split(
    labels: Sequence[Any],
    groups: Sequence[Any],
    ratios: Sequence[float] = (3, 1, 1),
    seed: int = 42,
    class_names: Sequence[str] | None = None,
    n_restarts: int | None = None,
) -> SplitIndices:
    """Grouped (e.g. patient-level) stratified split: no group appears in two splits.

    The assignment is greedy: first every split with a positive ratio receives, for each
    class (rarest first), one group containing that class (so every class is present in
    every split whenever it has enough groups); the remaining groups are then placed,
    largest first, in the split where they reduce the squared deviation of the per-class
    (and total) counts from their targets the most.  A few seeded restarts with
    perturbed group orders are tried and the best assignment is kept.

    Args:
        labels (`Sequence[Any]`): one label per item, or one multi-hot vector per item (multi-label).
        groups (`Sequence[Any]`): one group id per item (patient id, lesion id, ...).
        ratios (`Sequence[float]`, *optional*, defaults to `(3, 1, 1)`): ``(train, validation, test)`` proportions; a zero ratio gives an empty split.
        seed (`int`, *optional*, defaults to `42`): seed; the result is deterministic given ``seed`` and the input order.
        class_names (`Sequence[str] | None`, *optional*, defaults to `None`): optional names used in error messages when labels are ints.
        n_restarts (`int | None`, *optional*, defaults to `None`): number of greedy restarts (default: adaptive, 1..16 by dataset size).

    Raises:
        InsufficientSamplesError: a class occurs in fewer groups than splits with a
            positive ratio (the message names the class, its number of groups/images and
            the minimum needed).
    """
    r = np.asarray(normalize_ratios(ratios), dtype=float)
    n = len(labels)
    if n == 0:
        raise InsufficientSamplesError("cannot split an empty dataset")
    if len(groups) != n:
        raise ValueError(f"labels and groups differ in length ({n} vs {len(groups)})")
    y, classes = _label_matrix(labels)
    group_values = np.asarray([str(g) for g in groups])
    uniq_groups, g_inv = np.unique(group_values, return_inverse=True)
    n_groups, n_classes = len(uniq_groups), y.shape[1]

    # Per-group count vectors: classes + total.
    gvec = np.zeros((n_groups, n_classes + 1), dtype=float)
    np.add.at(gvec[:, :n_classes], g_inv, y)
    np.add.at(gvec[:, n_classes], g_inv, 1.0)
    totals = gvec.sum(axis=0)
    active = r > 0
    targets = np.outer(r / r.sum(), totals)  # (3, C+1)
    weights = 1.0 / np.maximum(totals, 1.0) ** 2

    groups_with_class = (gvec[:, :n_classes] > 0).sum(axis=0)
    _check_groups_per_class(groups_with_class, totals, classes, class_names, r)

    if n_restarts is None:
        n_restarts = int(max(1, min(16, 50_000 // max(n_groups, 1))))
    master = np.random.default_rng(seed)
    best_cost, best_assign = math.inf, None
    for attempt in range(n_restarts):
        rng = np.random.default_rng(master.integers(0, 2**63 - 1))
        assign, cost = _greedy_assignment(gvec, targets, weights, active, groups_with_class, rng, attempt)
        if cost < best_cost - 1e-12:
            best_cost, best_assign = cost, assign

    item_split = best_assign[g_inv]
    return SplitIndices(*(np.flatnonzero(item_split == k).astype(np.int64) for k in range(3)))


def stratified_subset(
    labels: np.ndarray | None, total: int, size: int, seed: int, names: Sequence[str] | None = None
) -> list[int]:
    """Indices of a seeded subset of `size` rows that keeps every class in proportion (at least one image each).

    Args:
        labels (`np.ndarray`, *optional*): the class index of each row; `None` (multi-label) samples uniformly.
        total (`int`): the number of rows.
        size (`int`): the subset size.
        seed (`int`): the sampling seed.
        names (`Sequence[str]`, *optional*): class names, for the error message.

    Raises an `InsufficientSamplesError` naming the classes when `size` cannot hold one image of every class.
    """
    rng = np.random.default_rng(seed)
    if labels is None:
        return sorted(rng.choice(total, size=size, replace=False).tolist())
    classes, counts = np.unique(labels, return_counts=True)
    if size < len(classes):
        shown = [_class_name(c, names) for c in classes]
        raise InsufficientSamplesError(
            f"max_train_samples={size} cannot keep one image of each of the {len(classes)} classes "
            f"({', '.join(shown)}); pass --max_train_samples {len(classes)} or more"
        )
    share = counts * size / total
    quota = np.maximum(1, np.floor(share)).astype(int)
    order = np.argsort(-(share - np.floor(share)))  # largest remainders first
    i = 0
    while quota.sum() < size:  # hand out what flooring left, largest remainder first, within each class's count
        c = order[i % len(order)]
        if quota[c] < counts[c]:
            quota[c] += 1
        i += 1
    while quota.sum() > size:  # the minimum of one per class can overshoot: take back from the largest classes
        quota[np.argmax(quota)] -= 1
    keep = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return sorted(np.concatenate(keep).tolist())


def class_set_problem(classes_by_split: Mapping[str, Iterable[str]]) -> str | None:
    """Why the splits' class sets differ, naming both ways (what each split has that another lacks) and the
    case-only differences (`train/Cat` against `test/cat`); None when every split has the same classes (issue 17)."""
    sets = {split: set(names) for split, names in classes_by_split.items()}
    union = set().union(*sets.values()) if sets else set()
    parts = []
    for split, names in sets.items():
        lacks = sorted(union - names)
        if lacks:
            others = sorted(s for s in sets if s != split and set(lacks) & sets[s])
            parts.append(f"{split} lacks {', '.join(map(repr, lacks))} (in {', '.join(others)})")
    if not parts:
        return None
    by_fold: dict[str, set[str]] = {}
    for name in union:
        by_fold.setdefault(name.casefold(), set()).add(name)
    cased = [sorted(v) for v in by_fold.values() if len(v) > 1]
    text = "the splits have different classes: " + "; ".join(parts)
    if cased:
        text += ("; these differ only in upper/lower case: "
                 + ", ".join(" vs ".join(map(repr, names)) for names in sorted(cased))
                 + " (class folder names are case-sensitive; rename them to match)")
    return text
