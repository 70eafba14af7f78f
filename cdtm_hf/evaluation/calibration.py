"""Calibration: whether a model's probabilities mean what they say, and temperature scaling fitted on validation.

- [`expected_calibration_error`]: 15 equal-width confidence bins (Guo et al., 2017); the weighted mean over bins of
  |accuracy - mean confidence|. Single-label: the top-label confidence (the largest softmax probability) against
  whether the argmax is right. Multi-label: every (image, label) probability against whether that label is positive.
- [`brier_score`]: as `sklearn.metrics.brier_score_loss` defines it: for two classes the mean squared error of the
  positive-class probability (in [0, 1]); for more classes the sum over classes of the squared errors, averaged over
  images (in [0, 2]); multi-label: the mean over (image, label) pairs.
- [`negative_log_likelihood`]: the mean cross-entropy of the true class (natural log, from the logits, so that no
  probability is clipped); multi-label: the mean binary cross-entropy over (image, label) pairs.
- [`fit_temperature`]: one temperature `T` for all logits (`softmax(z / T)`), chosen on the *validation* set to
  minimise its NLL (the NLL is convex in `1 / T`, so the bounded scalar search of `scipy.optimize.minimize_scalar`
  finds its minimum). It never changes a single-label argmax, so accuracy and F1 stay as they were.
- [`calibration_report`] and [`calibration_intervals`]: these numbers on the test set before and after the
  temperature, and their bootstrap intervals (over patients where the ids are real).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, softmax

from .resampling import additive_bootstrap, unit_sums
from .uncertainty import DEFAULT_LEVEL, DEFAULT_RESAMPLES, interval_record

__all__ = [
    "CALIBRATION_BINS",
    "TEMPERATURE_BOUNDS",
    "apply_temperature",
    "brier_score",
    "calibration_intervals",
    "calibration_metrics",
    "calibration_report",
    "expected_calibration_error",
    "fit_temperature",
    "negative_log_likelihood",
    "reliability_bins",
]

#: the number of equal-width confidence bins of the ECE and the reliability diagram
CALIBRATION_BINS = 15
#: the range searched for the temperature; a fit at either end is not identified (`identified: False`)
TEMPERATURE_BOUNDS = (0.05, 20.0)


def _arrays(logits, labels, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"logits {logits.shape} and labels {labels.shape}: pass (images, classes) logits and one "
                         "label (or one row of 0/1 labels) per image")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature={temperature!r} must be a positive finite number")
    return logits / temperature, labels


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """The logits divided by the temperature (what `pipeline()` and `cdtm-predict` apply when a run calibrated)."""
    return _arrays(logits, np.zeros(len(logits)), temperature)[0]


def _confidence_and_hit(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The confidences that are binned and whether each was right: top-label (single) or per label (multi)."""
    if labels.ndim == 2:
        return expit(logits).ravel(), labels.astype(np.float64).ravel()
    probs = softmax(logits, axis=1)
    return probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(np.float64)


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin `m` holds confidences in `((m - 1) / n_bins, m / n_bins]`; 0 goes to the first bin."""
    return np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def reliability_bins(logits: np.ndarray, labels: np.ndarray, n_bins: int = CALIBRATION_BINS,
                     temperature: float = 1.0) -> dict[str, list]:
    """The reliability diagram's numbers: per equal-width bin its `edges`, `count`, mean `confidence` and `accuracy`
    (the share right; multi-label: the share positive); NaN in an empty bin."""
    logits, labels = _arrays(logits, labels, temperature)
    confidence, hit = _confidence_and_hit(logits, labels)
    index = _bin_index(confidence, n_bins)
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
        acc = np.bincount(index, weights=hit, minlength=n_bins) / count
    return {"edges": np.linspace(0, 1, n_bins + 1).tolist(), "count": count.astype(int).tolist(),
            "confidence": conf.tolist(), "accuracy": acc.tolist()}


def _ece_from_sums(count: np.ndarray, conf: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """ECE of `(b, bins)` per-bin totals: sum over bins of |hits - confidences| / all items."""
    return np.abs(hit - conf).sum(axis=-1) / count.sum(axis=-1)


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, n_bins: int = CALIBRATION_BINS,
                               temperature: float = 1.0) -> float:
    """The ECE in [0, 1] over `n_bins` equal-width bins: `sum_m (n_m / n) |acc_m - conf_m|`."""
    logits, labels = _arrays(logits, labels, temperature)
    confidence, hit = _confidence_and_hit(logits, labels)
    index = _bin_index(confidence, n_bins)
    sums = [np.bincount(index, weights=w, minlength=n_bins) for w in (np.ones_like(hit), confidence, hit)]
    return float(_ece_from_sums(*sums))


def brier_score(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """The Brier score of the softmax (sigmoid for multi-label) probabilities: `sklearn.metrics.brier_score_loss`'s
    definition (its default scaling), as a mean of per-image terms so that it can be bootstrapped."""
    logits, labels = _arrays(logits, labels, temperature)
    return float(_brier_per_item(logits, labels).mean())


def _brier_per_item(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image's share of `brier_score` (their mean is it): squared errors summed over classes (halved for two
    classes, as scikit-learn does) or averaged over labels (multi-label)."""
    if labels.ndim == 2:
        return ((expit(logits) - labels) ** 2).mean(axis=1)
    errors = ((softmax(logits, axis=1) - np.eye(logits.shape[1])[labels.astype(np.int64)]) ** 2).sum(axis=1)
    return errors / 2 if logits.shape[1] == 2 else errors


def _nll_per_item(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if labels.ndim == 2:  # binary cross-entropy with logits: log(1 + exp(-z)) for a positive, log(1 + exp(z)) else
        return np.logaddexp(0.0, -logits * (2.0 * labels - 1.0)).mean(axis=1)
    return -log_softmax(logits, axis=1)[np.arange(len(labels)), labels.astype(np.int64)]


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """The mean negative log-likelihood (natural log) of the labels under `softmax(logits / T)` (or the sigmoid)."""
    logits, labels = _arrays(logits, labels, temperature)
    return float(_nll_per_item(logits, labels).mean())


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
                        n_bins: int = CALIBRATION_BINS) -> dict[str, float]:
    """`{"ece", "brier", "nll"}` of one test set at one temperature."""
    return {"ece": expected_calibration_error(logits, labels, n_bins, temperature),
            "brier": brier_score(logits, labels, temperature),
            "nll": negative_log_likelihood(logits, labels, temperature)}


def fit_temperature(logits: np.ndarray, labels: np.ndarray,
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> dict[str, Any]:
    """Fit the temperature on validation logits by minimising their NLL over `log T` in `bounds`.

    Args:
        logits (`np.ndarray`): `(images, classes)` validation logits (never the test set's).
        labels (`np.ndarray`): their class ids (or 0/1 multi-labels).
        bounds (`tuple[float, float]`, *optional*): the temperature range searched.

    Returns:
        `dict`: `temperature`, `validation_nll_before` (T = 1), `validation_nll_after`, `num_validation_examples`,
        `identified` and, where it is false, `warning`. A validation set the model classifies entirely correctly (a
        saturated one) keeps lowering its NLL as T falls to 0: no temperature is identified, and T stays 1; so does
        a fit at either end of `bounds`.
    """
    logits, labels = _arrays(logits, labels, 1.0)
    if not np.isfinite(logits).all():
        raise ValueError("the validation logits hold NaN or infinite values; fix the model's outputs first")
    before = negative_log_likelihood(logits, labels)
    record: dict[str, Any] = {"temperature": 1.0, "validation_nll_before": before, "validation_nll_after": before,
                              "num_validation_examples": int(len(labels)), "identified": True}
    if _separable(logits, labels):
        record["identified"] = False
        record["warning"] = (
            "the model classifies every validation image correctly, so the validation NLL keeps falling as the "
            "temperature goes to 0 and has no minimum: no temperature is fitted (T = 1). Report the uncalibrated "
            "numbers, or fit on a larger or harder validation set"
        )
        return record
    low, high = math.log(bounds[0]), math.log(bounds[1])
    found = minimize_scalar(lambda t: _nll_per_item(logits / math.exp(t), labels).mean(), bounds=(low, high),
                            method="bounded", options={"xatol": 1e-5})
    if float(found.fun) < before:  # the search never ends worse than no scaling (T = 1 lies inside the bounds)
        record.update(temperature=math.exp(found.x), validation_nll_after=float(found.fun))
    if min(abs(found.x - low), abs(found.x - high)) < 1e-3:
        record["identified"] = False
        record["warning"] = (
            f"the fitted temperature {record['temperature']:.3g} sits at the end of the searched range {bounds}: "
            "the validation NLL has no minimum inside it, so the temperature is not identified; report the "
            "uncalibrated numbers or use a larger validation set"
        )
    return record


def _separable(logits: np.ndarray, labels: np.ndarray) -> bool:
    """Whether every validation decision is right (multi-label: every logit on its label's side of 0)."""
    if labels.ndim == 2:
        return bool(np.all((logits > 0) == (labels > 0)))
    return bool(np.all(logits.argmax(axis=1) == labels))


def calibration_report(logits: np.ndarray, labels: np.ndarray, temperature: float | None = None,
                       n_bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """The test set's ECE, Brier and NLL before (`before`) and, with a fitted temperature, after (`after`) it."""
    report: dict[str, Any] = {"bins": n_bins, "before": calibration_metrics(logits, labels, 1.0, n_bins)}
    if temperature is not None:
        report["temperature"] = float(temperature)
        report["after"] = calibration_metrics(logits, labels, temperature, n_bins)
    return report


def calibration_intervals(
    logits: np.ndarray, labels: np.ndarray, groups: Sequence[Any] | None = None, *, temperature: float = 1.0,
    n_bins: int = CALIBRATION_BINS, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
    method: str = "bca", seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Bootstrap intervals of the ECE, Brier score and NLL (over patients with `groups`, else images), from per-bin
    and per-image sums.

    Returns:
        `dict[str, dict]`: `ece`, `brier`, `nll` -> record as in `bootstrap_metrics`. The ECE always takes the
        percentile interval: its bootstrap distribution lies above the estimate on small sets (|.| of noise is
        positive), which the BCa correction turns into an interval that can exclude the estimate.
    """
    logits, labels = _arrays(logits, labels, temperature)
    confidence, hit = _confidence_and_hit(logits, labels)
    per_image = len(confidence) // len(labels)  # 1, or the number of labels (multi-label)
    index = _bin_index(confidence, n_bins)
    onehot = np.eye(n_bins)[index]
    columns = [onehot, onehot * confidence[:, None], onehot * hit[:, None]]
    binned = np.concatenate(columns, axis=1).reshape(len(labels), per_image, 3 * n_bins).sum(axis=1)
    nll = _nll_per_item(logits, labels)[:, None]
    parts = [binned, nll, np.ones((len(labels), 1)), _brier_per_item(logits, labels)[:, None]]
    sums, unit, num_units = unit_sums(np.concatenate(parts, axis=1), groups)

    def statistic(t: np.ndarray) -> dict[str, np.ndarray]:
        b = n_bins
        return {"ece": _ece_from_sums(t[:, :b], t[:, b:2 * b], t[:, 2 * b:3 * b]),
                "brier": t[:, 3 * b + 2] / t[:, 3 * b + 1], "nll": t[:, 3 * b] / t[:, 3 * b + 1]}

    point, resampled, jackknife = additive_bootstrap(sums, statistic, np.random.default_rng(seed), resamples,
                                                     method == "bca")
    out = {}
    for key in point:  # the ECE takes the percentile interval: its bootstrap is biased upward, which BCa misreads
        how = "percentile" if key == "ece" else method
        out[key] = interval_record(point[key], resampled[key], None if jackknife is None else jackknife[key], None,
                                   unit, num_units, resamples, level, how, seed)
    return out
