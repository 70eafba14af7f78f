"""The vectorised bootstrap engine: what one resample draws, and every reported metric of thousands of resamples at
once, computed from weighted counts (no Python loop over resamples).

A *design* holds one test set (one or several prediction sets on the same images, for paired comparisons) and its
resampling units: patients when real patient groups are given (a cluster bootstrap), images otherwise.

- Single-label ([`CountDesign`]): a resample is summarised by its confusion matrix. Images with the same
  (reference, prediction) cells are interchangeable, so the image bootstrap draws the *counts* of each observed
  pattern from a multinomial (exactly the distribution of resampling images with replacement), and the cluster
  bootstrap draws how often each patient is taken and adds up the patients' confusion counts. The metrics of every
  resample then follow from its confusion counts ([`confusion_scores`]), the same definitions as the shipped
  `evaluate` module (`tests/test_uncertainty.py` checks that they agree to the last digit on the point estimate).
- Multi-label ([`WeightedDesign`]): each resample is a vector of weights over the images (how often each image, or
  its patient, was drawn); thresholded counts are weighted sums and the AUROC is the weighted Mann-Whitney statistic
  ([`weighted_multilabel_scores`]), equal to `sklearn.metrics.roc_auc_score` with those sample weights.

Each design also gives the jackknife (leave one unit out) values that the BCa interval needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "MULTILABEL_METRICS",
    "SINGLE_LABEL_METRICS",
    "CountDesign",
    "WeightedDesign",
    "additive_bootstrap",
    "confusion_scores",
    "draw_counts",
    "group_index",
    "unit_sums",
    "weighted_multilabel_scores",
]

#: the scalar metrics of a single-label test set (`cdtm_hf.evaluation.metrics.classification_metrics`)
SINGLE_LABEL_METRICS = ("accuracy", "precision", "recall", "f1", "f1_eq12")
#: the scalar metrics of a multi-label test set (`cdtm_hf.evaluation.metrics.multilabel_metrics`)
MULTILABEL_METRICS = ("auroc", "accuracy", "precision", "recall", "f1", "f1_eq12")
#: the most float64 entries one chunk of resamples may hold (about 64 MB)
_CHUNK_ENTRIES = 8_000_000
#: above this many units, the BCa jackknife of a multi-label design leaves out seeded blocks of units
_MAX_JACKKNIFE = 1000


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """`num / den`, 0 where `den` is 0 (scikit-learn's `zero_division=0`)."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _eq12(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """The paper's Eq. 12 of macro precision and recall, elementwise (0 where both are 0)."""
    return _divide(2.0 * precision * recall, precision + recall)


def confusion_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, macro precision / recall / F1, the Eq. 12 F1 and the per-class scores of confusion matrices.

    Args:
        confusion (`np.ndarray`): `(..., classes, classes)` counts (rows: true class, columns: predicted class), any
            leading shape (one matrix per resample). Counts may be weights (floats).

    Returns:
        `dict[str, np.ndarray]`: the `SINGLE_LABEL_METRICS` of shape `(...)`, and `per_class_precision`,
        `per_class_recall`, `per_class_f1` of shape `(..., classes)`. A class absent from both the references and the
        predictions scores 0 and counts in the macro averages, as in the `evaluate` module.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    support, predicted = confusion.sum(axis=-1), confusion.sum(axis=-2)
    precision, recall = _divide(tp, predicted), _divide(tp, support)
    f1 = _divide(2.0 * tp, support + predicted)  # 2TP / (2TP + FP + FN), as scikit-learn computes it
    macro_p, macro_r = precision.mean(axis=-1), recall.mean(axis=-1)
    return {
        "accuracy": _divide(tp.sum(axis=-1), support.sum(axis=-1)),
        "precision": macro_p,
        "recall": macro_r,
        "f1": f1.mean(axis=-1),
        "f1_eq12": _eq12(macro_p, macro_r),
        "per_class_precision": precision,
        "per_class_recall": recall,
        "per_class_f1": f1,
    }


def group_index(groups: Sequence[Any] | None, n: int) -> tuple[np.ndarray, int] | None:
    """`(unit index of every item, number of units)` of patient ids, or `None` without groups.

    Raises:
        `ValueError`: the groups are not one per item, or fewer than 2 patients (a bootstrap over one patient says
            nothing).
    """
    if groups is None:
        return None
    values = np.asarray([str(g) for g in groups])
    if len(values) != n:
        raise ValueError(f"groups has {len(values)} entries for {n} predictions; pass one patient id per image")
    _, inverse = np.unique(values, return_inverse=True)
    num = int(inverse.max()) + 1 if n else 0
    if num < 2:
        raise ValueError(
            f"the test set has {num} patient(s); a patient (cluster) bootstrap needs at least 2. Pass groups=None "
            "for an image bootstrap, and say that the interval treats images as independent"
        )
    return inverse.reshape(-1), num


def draw_counts(rng: np.random.Generator, weights: np.ndarray, draws: int, size: int) -> np.ndarray:
    """`(size, units)` counts of how often each unit is drawn in `draws` draws with replacement, with probabilities
    proportional to `weights` (uniform weights: integers and one bincount; otherwise a multinomial)."""
    units = len(weights)
    if np.all(weights == weights[0]):
        picks = rng.integers(0, units, size=(size, draws))
        picks += np.arange(size)[:, None] * units
        return np.bincount(picks.ravel(), minlength=size * units).reshape(size, units).astype(np.float64)
    return rng.multinomial(draws, weights / weights.sum(), size=size).astype(np.float64)


def _concatenate(parts: list[list[dict[str, np.ndarray]]]) -> list[dict[str, np.ndarray]]:
    """Chunks of per-set score dicts joined along the resample axis."""
    return [{key: np.concatenate([p[j][key] for p in parts]) for key in parts[0][j]} for j in range(len(parts[0]))]


class CountDesign:
    """Single-label prediction sets on one test set, resampled through their confusion counts.

    Args:
        references (`np.ndarray`): `(n,)` true class ids.
        predictions (`Sequence[np.ndarray]`): one `(n,)` array of predicted class ids per prediction set (two for a
            paired comparison), all on the same images.
        num_labels (`int`): the number of classes.
        groups (`Sequence`, *optional*): one patient id per image: resample patients (a cluster bootstrap).
    """

    def __init__(self, references: np.ndarray, predictions: Sequence[np.ndarray], num_labels: int,
                 groups: Sequence[Any] | None = None):
        self.num_labels, cells = num_labels, num_labels * num_labels
        codes = [references * num_labels + p for p in predictions]
        index = group_index(groups, len(references))
        if index is None:  # images with the same cells in every set are interchangeable: one unit per pattern
            patterns, counts = np.unique(np.stack(codes, axis=1), axis=0, return_counts=True)
            self.unit, self.num_units, self.draws = "image", len(references), len(references)
            self.weights = counts.astype(np.float64)
            self.matrices = [np.eye(cells)[patterns[:, j]] for j in range(len(codes))]
        else:
            inverse, num = index
            self.unit, self.num_units, self.draws = "patient", num, num
            self.weights = np.ones(num)
            self.matrices = [
                np.bincount(inverse * cells + c, minlength=num * cells).reshape(num, cells).astype(np.float64)
                for c in codes
            ]

    def _scores(self, sums: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        k = self.num_labels
        return [confusion_scores(s.reshape(*s.shape[:-1], k, k)) for s in sums]

    def point(self) -> list[dict[str, np.ndarray]]:
        """The scores of the observed test set (a leading axis of 1), one dict per prediction set."""
        return self._scores([self.weights[None, :] @ m for m in self.matrices])

    def resample(self, rng: np.random.Generator, size: int) -> list[dict[str, np.ndarray]]:
        """The scores of `size` bootstrap resamples (arrays with a leading axis of `size`), one dict per set."""
        step = max(1, _CHUNK_ENTRIES // max(len(self.weights), self.matrices[0].shape[1], self.draws))
        draws = (draw_counts(rng, self.weights, self.draws, min(step, size - s)) for s in range(0, size, step))
        return _concatenate([self._scores([x @ m for m in self.matrices]) for x in draws])

    def jackknife(self, rng: np.random.Generator) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
        """The scores with one unit left out, for every distinct unit, and how many units each row stands for."""
        totals = [self.weights @ m for m in self.matrices]
        return self._scores([t[None, :] - m for t, m in zip(totals, self.matrices)]), self.weights


def _auroc(weights: np.ndarray, order: np.ndarray, starts: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUROC of one label for each row of `weights` `(b, n)` (NaN where a class is absent).

    `order` sorts the scores ascending; `starts` are the first positions of each block of tied scores in that order.
    A positive above a negative counts 1, a tie 1/2: `sklearn.metrics.roc_auc_score` with `sample_weight`.
    """
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - positive[order]), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each block
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weighted_multilabel_scores(weights: np.ndarray, scores: np.ndarray, references: np.ndarray,
                               threshold: float = 0.5) -> dict[str, np.ndarray]:
    """The `MULTILABEL_METRICS` of multi-label predictions for each row of image weights.

    Args:
        weights (`np.ndarray`): `(b, n)` non-negative weights of the images (how often each was drawn).
        scores (`np.ndarray`): `(n, labels)` probabilities.
        references (`np.ndarray`): `(n, labels)` 0/1 targets.
        threshold (`float`, *optional*, defaults to 0.5): the decision threshold on `scores`.

    Returns:
        `dict[str, np.ndarray]`: each metric of shape `(b,)`; `auroc` is the mean over the labels whose weighted
        references hold both values (NaN when none does), the rest as in the `evaluate` module (macro over all labels,
        accuracy element-wise), and `per_label_auroc`, `per_label_precision`, `per_label_recall`, `per_label_f1` of
        shape `(b, labels)` (AUROC NaN where a label's weighted references hold one value).
    """
    ref = references.astype(np.float64)
    pred = (scores >= threshold).astype(np.float64)
    tp, fp, fn = weights @ (pred * ref), weights @ (pred * (1 - ref)), weights @ ((1 - pred) * ref)
    tn = weights @ ((1 - pred) * (1 - ref))
    precision, recall, f1 = _divide(tp, tp + fp), _divide(tp, tp + fn), _divide(2.0 * tp, 2.0 * tp + fp + fn)
    macro_p, macro_r = precision.mean(axis=-1), recall.mean(axis=-1)
    aurocs = np.empty_like(tp)
    for j in range(scores.shape[1]):  # over labels, not resamples
        order = np.argsort(scores[:, j], kind="stable")
        sorted_scores = scores[order, j]
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        aurocs[:, j] = _auroc(weights, order, starts, ref[:, j])
    defined = ~np.isnan(aurocs)
    count = defined.sum(axis=-1)
    return {
        "auroc": np.where(count > 0, np.where(defined, aurocs, 0.0).sum(axis=-1) / np.maximum(count, 1), np.nan),
        "accuracy": (tp + tn).sum(axis=-1) / (weights.sum(axis=-1) * scores.shape[1]),
        "precision": macro_p,
        "recall": macro_r,
        "f1": f1.mean(axis=-1),
        "f1_eq12": _eq12(macro_p, macro_r),
        "per_label_auroc": aurocs,
        "per_label_precision": precision,
        "per_label_recall": recall,
        "per_label_f1": f1,
    }


class WeightedDesign:
    """Multi-label prediction sets on one test set, resampled as weights over the images (or their patients).

    Args:
        references (`np.ndarray`): `(n, labels)` 0/1 targets.
        scores (`Sequence[np.ndarray]`): one `(n, labels)` array of probabilities per prediction set.
        groups (`Sequence`, *optional*): one patient id per image: resample patients (a cluster bootstrap).
        threshold (`float`, *optional*, defaults to 0.5): the decision threshold of the thresholded metrics.
    """

    def __init__(self, references: np.ndarray, scores: Sequence[np.ndarray], groups: Sequence[Any] | None = None,
                 threshold: float = 0.5):
        self.references, self.scores, self.threshold = references, list(scores), threshold
        n = len(references)
        index = group_index(groups, n)
        if index is None:
            self.unit, self.item_unit, self.num_units = "image", np.arange(n), n
        else:
            self.unit, (self.item_unit, self.num_units) = "patient", index
        self.draws, self.weights = self.num_units, np.ones(self.num_units)

    def _scores(self, unit_weights: np.ndarray) -> list[dict[str, np.ndarray]]:
        item_weights = unit_weights[:, self.item_unit]
        return [weighted_multilabel_scores(item_weights, s, self.references, self.threshold) for s in self.scores]

    def _chunked(self, rows: int, make) -> list[dict[str, np.ndarray]]:
        step = max(1, _CHUNK_ENTRIES // (4 * len(self.item_unit)))
        return _concatenate([self._scores(make(s, min(step, rows - s))) for s in range(0, rows, step)])

    def point(self) -> list[dict[str, np.ndarray]]:
        """The scores of the observed test set (a leading axis of 1), one dict per prediction set."""
        return self._scores(self.weights[None, :])

    def resample(self, rng: np.random.Generator, size: int) -> list[dict[str, np.ndarray]]:
        """The scores of `size` bootstrap resamples, one dict per prediction set."""
        return self._chunked(size, lambda start, rows: draw_counts(rng, self.weights, self.draws, rows))

    def jackknife(self, rng: np.random.Generator) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
        """The scores with one unit left out (above `_MAX_JACKKNIFE` units: one seeded block of units, a delete-d
        jackknife), and how many units each row stands for."""
        blocks = min(self.num_units, _MAX_JACKKNIFE)
        block_of = rng.permutation(self.num_units) % blocks if blocks < self.num_units else np.arange(blocks)

        def leave_out(start: int, rows: int) -> np.ndarray:
            kept = np.ones((rows, self.num_units))
            kept[block_of[None, :] == np.arange(start, start + rows)[:, None]] = 0.0
            return kept

        return self._chunked(blocks, leave_out), np.ones(blocks)


def unit_sums(values: np.ndarray, groups: Sequence[Any] | None = None) -> tuple[np.ndarray, str, int]:
    """`(sums, unit, num_units)`: per-image rows `values` `(n, m)` added up per patient (`unit="patient"`), or kept
    one row per image (`unit="image"`) without groups."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    index = group_index(groups, len(values))
    if index is None:
        return values, "image", len(values)
    inverse, num = index
    sums = np.zeros((num, values.shape[1]))
    np.add.at(sums, inverse, values)
    return sums, "patient", num


def additive_bootstrap(sums: np.ndarray, statistic, rng: np.random.Generator, resamples: int, jackknife: bool):
    """Bootstrap a statistic of summed unit rows: `(point, resampled, jackknife)`, each a dict of arrays.

    Args:
        sums (`np.ndarray`): `(units, m)` additive rows of the resampling units ([`unit_sums`]).
        statistic (`Callable`): `(b, m)` totals -> dict of `(b,)` arrays.
        rng (`np.random.Generator`): the resampling generator.
        resamples (`int`): how many resamples.
        jackknife (`bool`): also the leave-one-unit-out values (for BCa); `None` otherwise.
    """
    units = len(sums)
    step = max(1, _CHUNK_ENTRIES // max(units, 1))
    parts = [[statistic(draw_counts(rng, np.ones(units), units, min(step, resamples - s)) @ sums)]
             for s in range(0, resamples, step)]
    resampled = _concatenate(parts)[0]
    total = sums.sum(axis=0)
    point = {k: v[0] for k, v in statistic(total[None, :]).items()}
    return point, resampled, statistic(total[None, :] - sums) if jackknife else None
