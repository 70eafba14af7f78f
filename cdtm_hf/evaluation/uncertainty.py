"""Confidence intervals for every test metric, paired comparisons of two models, and mean ± std (n) over runs.

Medical test sets are small: a few points of F1 between two recipes are often noise. This module puts an interval on
each number the package reports:

- [`bootstrap_metrics`]: a seeded bootstrap (BCa or percentile, 95 %, 1,000 resamples by default) of accuracy, macro
  precision / recall, macro-F1 (`f1`), the paper's Eq. 12 F1 (`f1_eq12`) and, for multi-label data, macro AUROC.
  With patient ids it resamples *patients* (a cluster bootstrap: images of one patient are not independent), without
  them it resamples images; every record says which (`unit`).
- [`bootstrap_per_class`]: the same for each class's precision, recall (sensitivity) and F1.
- [`paired_bootstrap`]: the difference of a metric between two prediction sets on the same test images, with its
  paired-bootstrap interval (both sets scored on the same resamples, clustered the same way).
- [`summarize_runs`]: mean ± sample std and the number of runs across seeds or folds.

Every result is a JSON-serialisable dict. A metric's record:
`{"value", "low", "high", "level", "method", "resamples", "unit", "num_units", "seed", "std_error"}` (fractions in
[0, 1]; `note` where the method had to change, `undefined_resamples` where a resample had no value). The engine is
vectorised (`cdtm_hf.evaluation.resampling`): `benchmarks/bootstrap.py` measures 1,000 resamples of 10,000
predictions. See `docs/evaluation.md` for how to read each number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import expit, ndtr, ndtri

from .reporting import format_mean_std, mean_std
from .resampling import MULTILABEL_METRICS, SINGLE_LABEL_METRICS, CountDesign, WeightedDesign

__all__ = [
    "BOOTSTRAP_METHODS",
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "bootstrap_interval",
    "bootstrap_metrics",
    "bootstrap_per_class",
    "format_difference",
    "format_interval",
    "format_runs",
    "interval_record",
    "paired_bootstrap",
    "summarize_runs",
]

#: `bca`: bias-corrected and accelerated (Efron 1987), the default; `percentile`: the plain percentile interval
BOOTSTRAP_METHODS = ("bca", "percentile")
DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95


def _check_settings(resamples: int, level: float, method: str) -> None:
    if method not in BOOTSTRAP_METHODS:
        raise ValueError(f"bootstrap method {method!r} is not one of {BOOTSTRAP_METHODS}")
    if not (isinstance(resamples, (int, np.integer)) and resamples >= 2):
        raise ValueError(f"resamples={resamples!r}: pass an integer of at least 2 (1,000 or more for a 95 % interval)")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}: pass the confidence level as a fraction in (0, 1), e.g. 0.95")


def _bca_quantiles(resampled: np.ndarray, estimate: float, jackknife: np.ndarray, multiplicity: np.ndarray,
                   level: float) -> tuple[float, float] | None:
    """The two quantile levels of the BCa interval, or `None` where the bias correction is undefined."""
    below = (np.sum(resampled < estimate) + 0.5 * np.sum(resampled == estimate)) / len(resampled)
    z0 = ndtri(below)
    if not math.isfinite(z0):
        return None
    keep = ~np.isnan(jackknife)
    jk, w = jackknife[keep], multiplicity[keep]
    mean = np.sum(w * jk) / np.sum(w) if np.sum(w) > 0 else 0.0
    spread = np.sum(w * (mean - jk) ** 2)
    accel = np.sum(w * (mean - jk) ** 3) / (6.0 * spread**1.5) if spread > 0 else 0.0
    z = ndtri(np.array([(1 - level) / 2, (1 + level) / 2]))
    shifted = z0 + (z0 + z) / (1 - accel * (z0 + z))
    return float(ndtr(shifted[0])), float(ndtr(shifted[1]))


def bootstrap_interval(resampled: np.ndarray, estimate: float, level: float = DEFAULT_LEVEL, method: str = "bca",
                       jackknife: np.ndarray | None = None, multiplicity: np.ndarray | None = None) -> dict[str, Any]:
    """The interval of one statistic from its bootstrap distribution.

    Args:
        resampled (`np.ndarray`): `(resamples,)` values of the statistic on the resamples (NaN: undefined there).
        estimate (`float`): its value on the observed data.
        level (`float`, *optional*, defaults to 0.95): the confidence level.
        method (`str`, *optional*, defaults to `"bca"`): `"bca"` (needs `jackknife`) or `"percentile"`.
        jackknife (`np.ndarray`, *optional*): the statistic with one unit left out, per distinct unit.
        multiplicity (`np.ndarray`, *optional*): how many units each jackknife value stands for (default 1 each).

    Returns:
        `dict`: `low`, `high`, `method` (the one used), `std_error` (the bootstrap standard deviation),
        `undefined_resamples` (only when some are NaN) and `note` (only when BCa fell back to the percentile
        interval: the estimate lies outside the resamples' range, where the bias correction is infinite).
    """
    resampled = np.asarray(resampled, dtype=np.float64)
    defined = resampled[~np.isnan(resampled)]
    out: dict[str, Any] = {}
    if len(defined) < len(resampled):
        out["undefined_resamples"] = int(len(resampled) - len(defined))
    if len(defined) == 0 or not math.isfinite(estimate):
        return {"low": math.nan, "high": math.nan, "method": method, "std_error": math.nan, **out}
    quantiles: tuple[float, float] | None = ((1 - level) / 2, (1 + level) / 2)
    if method == "bca":
        if jackknife is None:
            raise ValueError("a BCa interval needs the jackknife values; pass jackknife= or method='percentile'")
        weights = np.ones(len(jackknife)) if multiplicity is None else np.asarray(multiplicity, dtype=np.float64)
        bca = _bca_quantiles(defined, estimate, np.asarray(jackknife, dtype=np.float64), weights, level)
        if bca is None:
            method, out["note"] = "percentile", "BCa undefined (the estimate lies outside every resample): percentile"
        else:
            quantiles = bca
    low, high = np.quantile(defined, quantiles)
    return {"low": float(low), "high": float(high), "method": method, "std_error": float(np.std(defined, ddof=1)),
            **out}


def _design(score_sets: Sequence[np.ndarray], labels: np.ndarray, groups, num_labels: int | None,
            probabilities: bool, threshold: float) -> CountDesign | WeightedDesign:
    """The resampling design of prediction sets on one test set (single-label for 1-D labels, multi-label for 2-D)."""
    labels = np.asarray(labels)
    sets = [np.asarray(s, dtype=np.float64) for s in score_sets]
    for s in sets:
        if s.ndim != 2 or len(s) != len(labels) or len(s) == 0:
            raise ValueError(
                f"scores of shape {s.shape} for {len(labels)} labels: pass one row of class scores (logits or "
                "probabilities) per test image, (images, classes)"
            )
    if labels.ndim == 2:
        if not set(np.unique(labels).tolist()) <= {0, 1} or any(s.shape != labels.shape for s in sets):
            raise ValueError("multi-label labels must be 0/1 of the scores' shape (images, labels)")
        probs = sets if probabilities else [expit(s) for s in sets]
        return WeightedDesign(labels.astype(np.int64), probs, groups, threshold)
    num_labels = int(num_labels or sets[0].shape[1])
    labels = labels.astype(np.int64)
    if labels.ndim != 1 or labels.min() < 0 or labels.max() >= num_labels:
        raise ValueError(f"labels must be class ids in 0..{num_labels - 1} (one per image) or 2-D 0/1 multi-labels")
    return CountDesign(labels, [s.argmax(axis=1) for s in sets], num_labels, groups)


def _setup(score_sets, labels, groups, num_labels, probabilities, threshold, resamples, level, method, seed):
    _check_settings(resamples, level, method)
    design = _design(score_sets, labels, groups, num_labels, probabilities, threshold)
    rng = np.random.default_rng(seed)
    resampled = design.resample(rng, resamples)
    jackknife, multiplicity = design.jackknife(rng) if method == "bca" else (None, None)
    return design, design.point(), resampled, jackknife, multiplicity


def interval_record(estimate: float, resampled: np.ndarray, jackknife: np.ndarray | None,
                    multiplicity: np.ndarray | None, unit: str, num_units: int, resamples: int, level: float,
                    method: str, seed: int) -> dict[str, Any]:
    """One statistic's JSON record: its value, interval ([`bootstrap_interval`]) and how it was resampled."""
    value = float(estimate)
    found = bootstrap_interval(resampled, value, level, method, jackknife, multiplicity)
    return {"value": value, "low": found.pop("low"), "high": found.pop("high"), "level": level,
            "method": found.pop("method"), "resamples": int(resamples), "unit": unit, "num_units": int(num_units),
            "seed": seed, **found}


def _record(estimate, resampled, jackknife, multiplicity, design, resamples, level, method, seed) -> dict[str, Any]:
    return interval_record(estimate, resampled, jackknife, multiplicity, design.unit, design.num_units, resamples,
                           level, method, seed)


def bootstrap_metrics(
    logits: np.ndarray, labels: np.ndarray, groups: Sequence[Any] | None = None, *, num_labels: int | None = None,
    resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, method: str = "bca", seed: int = 0,
    probabilities: bool = False, threshold: float = 0.5,
) -> dict[str, dict[str, Any]]:
    """A bootstrap confidence interval for each scalar test metric.

    Args:
        logits (`np.ndarray`): `(images, classes)` scores. Single-label: the prediction is their argmax (logits or
            probabilities alike). Multi-label: logits (a sigmoid is applied) unless `probabilities=True`.
        labels (`np.ndarray`): `(images,)` class ids, or `(images, labels)` 0/1 targets for multi-label data.
        groups (`Sequence`, *optional*): one patient (or lesion) id per image. Pass it where the ids are real
            (`split_manifest.json`'s `has_patient_ids`): the bootstrap then resamples patients. Without it, images.
        num_labels (`int`, *optional*): the number of classes (default: the scores' width).
        resamples (`int`, *optional*, defaults to 1000): bootstrap resamples.
        level (`float`, *optional*, defaults to 0.95): the confidence level.
        method (`str`, *optional*, defaults to `"bca"`): `"bca"` or `"percentile"`.
        seed (`int`, *optional*, defaults to 0): the resampling seed (same seed, same interval).
        probabilities (`bool`, *optional*, defaults to `False`): multi-label scores are already probabilities.
        threshold (`float`, *optional*, defaults to 0.5): multi-label decision threshold on the probabilities.

    Returns:
        `dict[str, dict]`: metric -> record (`value` equals `cdtm_hf.evaluation.metrics`' number for that metric).
    """
    design, point, resampled, jackknife, multiplicity = _setup(
        [logits], labels, groups, num_labels, probabilities, threshold, resamples, level, method, seed)
    names = MULTILABEL_METRICS if isinstance(design, WeightedDesign) else SINGLE_LABEL_METRICS
    return {
        name: _record(point[0][name][0], resampled[0][name],
                      None if jackknife is None else jackknife[0][name], multiplicity, design, resamples, level,
                      method, seed)
        for name in names
    }


def bootstrap_per_class(
    logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str], groups: Sequence[Any] | None = None, *,
    resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, method: str = "bca", seed: int = 0,
    probabilities: bool = False, threshold: float = 0.5,
) -> dict[str, dict[str, Any]]:
    """Intervals for each class's precision, recall (its sensitivity; for a binary task the other class's recall is
    the specificity) and F1, with its test support in images (and patients, with `groups`).

    Multi-label data adds each label's AUROC (its support: the positive images). Arguments as [`bootstrap_metrics`].

    Returns:
        `dict[str, dict]`: class name -> `{"precision": record, "recall": record, "f1": record, ["auroc": record,]
        "support": images, ["patients": patients]}`.
    """
    logits, labels = np.asarray(logits), np.asarray(labels)
    if len(class_names) != logits.shape[-1]:
        raise ValueError(f"{len(class_names)} class names for scores of {logits.shape[-1]} classes")
    design, point, resampled, jackknife, multiplicity = _setup(
        [logits], labels, groups, len(class_names), probabilities, threshold, resamples, level, method, seed)
    multi = isinstance(design, WeightedDesign)
    prefix, keys = ("per_label_", ("auroc", "precision", "recall", "f1")) if multi else (
        "per_class_", ("precision", "recall", "f1"))
    out: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(class_names):
        entry = {
            key: _record(point[0][prefix + key][0, c], resampled[0][prefix + key][:, c],
                         None if jackknife is None else jackknife[0][prefix + key][:, c], multiplicity, design,
                         resamples, level, method, seed)
            for key in keys
        }
        members = labels[:, c] > 0 if multi else labels == c
        entry["support"] = int(members.sum())
        if groups is not None:
            entry["patients"] = len({str(g) for g, m in zip(groups, members) if m})
        out[str(name)] = entry
    return out


def paired_bootstrap(
    logits_a: np.ndarray, logits_b: np.ndarray, labels: np.ndarray, groups: Sequence[Any] | None = None, *,
    num_labels: int | None = None, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
    method: str = "bca", seed: int = 0, probabilities: bool = False, threshold: float = 0.5,
) -> dict[str, dict[str, Any]]:
    """The difference `metric(a) - metric(b)` of two prediction sets on the same test images, with its paired
    bootstrap interval: both sets are scored on the same resamples (of patients with `groups`, else of images), so
    the image-to-image (patient-to-patient) variation that both share cancels.

    Arguments as [`bootstrap_metrics`]; `logits_a` and `logits_b` must score the same images in the same order.

    Returns:
        `dict[str, dict]`: metric -> the difference's record (`value`, `low`, `high`, ...) plus `a` and `b` (the two
        values) and `p_value`: the two-sided bootstrap p-value for "no difference", `2 * min(P(d <= 0), P(d >= 0))`
        over the resampled differences `d` (capped at 1; an approximation, read the interval first).
    """
    if np.shape(logits_a) != np.shape(logits_b):
        raise ValueError(
            f"the two prediction sets have shapes {np.shape(logits_a)} and {np.shape(logits_b)}; a paired comparison "
            "needs both models' scores on the same test images, in the same order"
        )
    design, point, resampled, jackknife, multiplicity = _setup(
        [logits_a, logits_b], labels, groups, num_labels, probabilities, threshold, resamples, level, method, seed)
    names = MULTILABEL_METRICS if isinstance(design, WeightedDesign) else SINGLE_LABEL_METRICS
    out = {}
    for name in names:
        a, b = (float(point[j][name][0]) for j in (0, 1))
        diffs = resampled[0][name] - resampled[1][name]
        jk = None if jackknife is None else jackknife[0][name] - jackknife[1][name]
        record = _record(a - b, diffs, jk, multiplicity, design, resamples, level, method, seed)
        kept = diffs[~np.isnan(diffs)]
        p = min(1.0, 2.0 * min(np.mean(kept <= 0), np.mean(kept >= 0))) if len(kept) else math.nan
        out[name] = {**record, "a": a, "b": b, "p_value": float(p)}
    return out


def summarize_runs(runs: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Mean ± sample standard deviation (ddof 1, `reporting.mean_std`) and the number of runs of each metric, across
    seeds or cross-validation folds.

    Args:
        runs (`Sequence[Mapping]`): one metrics dict per run (`test_results.json`'s `metrics`); a missing or NaN
            value is left out of that metric's count.
        keys (`Sequence[str]`, *optional*): the metrics to summarise (default: every numeric key of the first run).

    Returns:
        `dict[str, dict]`: metric -> `{"mean", "std", "n", "values"}` (`std` NaN with one run).
    """
    keys = list(keys) if keys is not None else [k for k, v in (runs[0] if runs else {}).items()
                                                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {}
    for key in keys:
        values = [run.get(key) for run in runs]
        kept = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        mean, std = mean_std(kept)
        out[key] = {"mean": mean, "std": std, "n": len(kept), "values": kept}
    return out


def _format_record(record: Mapping[str, Any], digits: int, scale: float, sign: str) -> str:
    value, low, high = (record.get(k) for k in ("value", "low", "high"))
    if value is None or math.isnan(value):
        return "–"
    shown = f"{value * scale:{sign}.{digits}f}"
    if low is None or math.isnan(low) or high is None or math.isnan(high):
        return shown
    return f"{shown} [{low * scale:{sign}.{digits}f}, {high * scale:{sign}.{digits}f}]"


def format_interval(record: Mapping[str, Any], digits: int = 1, scale: float = 100.0) -> str:
    """`"91.7 [88.2, 94.6]"`: a record's value and interval, in percent by default; `"–"` without a value."""
    return _format_record(record, digits, scale, "")


def format_difference(record: Mapping[str, Any], digits: int = 1, scale: float = 100.0) -> str:
    """`"+1.2 [-3.1, +5.4]"`: a paired difference with explicit signs, in percentage points by default."""
    return _format_record(record, digits, scale, "+")


def format_runs(summary: Mapping[str, Any], digits: int = 2, scale: float = 100.0) -> str:
    """`"91.74 ± 0.32 (n=5)"` from a [`summarize_runs`] entry (`reporting.format_mean_std`), in percent by default."""
    mean, std, n = summary.get("mean", math.nan), summary.get("std", math.nan), summary.get("n", 0)
    text = format_mean_std(mean * scale, std * scale, digits)
    return text if n == 0 else f"{text} (n={n})"
