"""Patient-level results: what a clinician reads when the test set holds several images of each patient.

Three numbers, each with its own aggregation (`docs/evaluation.md` says the same):

- **Image-level** metrics (`test_results.json`'s `metrics`): every image counts once; a patient with 40 images
  weighs 40 times as much as one with 1. In the BreakHis literature, image-level accuracy is the *image recognition
  rate*.
- **Patient-level** metrics ([`patient_level_results`]'s `metrics`): each patient's prediction is the argmax of the
  *mean probability* (softmax of the logits; sigmoid for multi-label) over that patient's images, and accuracy,
  macro precision / recall, macro-F1 and the Eq. 12 F1 are computed over patients, each patient counting once.
- **Patient recognition rate** ([`patient_recognition_rate`], the BreakHis literature's, Spanhol et al. 2016): the
  mean over patients of the share of that patient's images classified correctly (each image by its own argmax). It
  is neither of the above: no vote, every patient weighs the same, and a patient's score is a fraction.

A patient whose images carry different classes (possible in CBIS-DDSM, where one patient can have a benign and a
malignant lesion) is split into one case per class, and the results say how many were (`split_patients`). For
multi-label data a patient's label is positive where any of the patient's images is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import expit, softmax

from .resampling import additive_bootstrap
from .uncertainty import DEFAULT_LEVEL, DEFAULT_RESAMPLES, bootstrap_metrics, interval_record

__all__ = [
    "PATIENT_AGGREGATION",
    "aggregate_by_patient",
    "patient_ids",
    "patient_level_results",
    "patient_recognition_rate",
]

#: the sentence the results, the docs and (later) the card use for the patient-level aggregation
PATIENT_AGGREGATION = "each patient's prediction is the argmax of the mean probability over the patient's images"


def patient_ids(dataset: Any, manifest: Mapping[str, Any]) -> list[str] | None:
    """The test split's patient ids where they are real, else `None` (resample and score images).

    Args:
        dataset: a split with a `patient_id` column (the medical builders' datasets).
        manifest (`Mapping`): its `split_manifest.json`: ids count as real where `has_patient_ids` is true.
    """
    if not manifest.get("has_patient_ids") or "patient_id" not in getattr(dataset, "column_names", ()):
        return None
    return [str(g) for g in dataset["patient_id"]]


def _probabilities(logits: np.ndarray, multi_label: bool, probabilities: bool) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if probabilities:
        return logits
    return expit(logits) if multi_label else softmax(logits, axis=-1)


def _check(logits: np.ndarray, labels: np.ndarray, groups: Sequence[Any]) -> None:
    if np.ndim(logits) != 2 or len(logits) != len(labels) or len(groups) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"scores {np.shape(logits)}, labels {np.shape(labels)} and {len(groups)} patient ids: pass one row of "
            "scores, one label and one patient id per test image"
        )


def aggregate_by_patient(logits: np.ndarray, labels: np.ndarray, groups: Sequence[Any], *,
                         probabilities: bool = False) -> dict[str, Any]:
    """Each patient's mean probability and label.

    Args:
        logits (`np.ndarray`): `(images, classes)` logits (or probabilities with `probabilities=True`).
        labels (`np.ndarray`): `(images,)` class ids, or `(images, labels)` 0/1 multi-labels.
        groups (`Sequence`): one patient id per image.
        probabilities (`bool`, *optional*, defaults to `False`): the scores are probabilities already.

    Returns:
        `dict`: `patients` (the case ids: the patient id, `"<id>|<class>"` for a split patient), `probabilities`
        `(patients, classes)`, `labels`, `num_images` per patient, `split_patients` (ids of the patients split by
        class), `item_patient` (the case of every image).
    """
    labels = np.asarray(labels)
    _check(logits, labels, groups)
    multi = labels.ndim == 2
    probs = _probabilities(logits, multi, probabilities)
    ids = np.asarray([str(g) for g in groups])
    split: list[str] = []
    if not multi:
        uniq, inverse = np.unique(ids, return_inverse=True)
        pairs = np.unique(inverse.reshape(-1) * (int(labels.max()) + 1) + labels) // (int(labels.max()) + 1)
        mixed = uniq[np.bincount(pairs, minlength=len(uniq)) > 1]
        if len(mixed):
            split, mixed_set = mixed.tolist(), set(mixed.tolist())
            ids = np.asarray([f"{g}|{y}" if g in mixed_set else g for g, y in zip(ids, labels)])
    cases, item_case, counts = np.unique(ids, return_inverse=True, return_counts=True)
    item_case = item_case.reshape(-1)
    sums = np.zeros((len(cases), probs.shape[1]))
    np.add.at(sums, item_case, probs)
    if multi:
        case_labels = np.zeros((len(cases), labels.shape[1]), dtype=np.int64)
        np.maximum.at(case_labels, item_case, labels.astype(np.int64))
    else:
        case_labels = np.zeros(len(cases), dtype=np.int64)
        case_labels[item_case] = labels
    return {"patients": cases.tolist(), "probabilities": sums / counts[:, None], "labels": case_labels,
            "num_images": counts, "split_patients": split, "item_patient": item_case}


def _share_correct(logits: np.ndarray, labels: np.ndarray, grouped: Mapping[str, Any]) -> np.ndarray:
    """Each patient's share of images whose own argmax is their class."""
    correct = (np.asarray(logits).argmax(axis=1) == labels).astype(np.float64)
    counts = grouped["num_images"]
    return np.bincount(grouped["item_patient"], weights=correct, minlength=len(counts)) / counts


def patient_recognition_rate(
    logits: np.ndarray, labels: np.ndarray, groups: Sequence[Any], *, resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL, method: str = "bca", seed: int = 0,
) -> dict[str, Any]:
    """The BreakHis patient recognition rate: the mean over patients of the share of each patient's images that are
    classified correctly (image-level argmax), with a bootstrap interval over patients.

    Args:
        logits (`np.ndarray`): `(images, classes)` scores (argmax = prediction).
        labels (`np.ndarray`): `(images,)` class ids.
        groups (`Sequence`): one patient id per image.
        resamples, level, method, seed: the bootstrap's, as in `bootstrap_metrics`.

    Returns:
        `dict`: a record (`value`, `low`, `high`, `unit: "patient"`, ...) plus `patient_scores` (patient id -> share
        correct) and `aggregation`.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError("the patient recognition rate is defined for single-label data (one class per image)")
    grouped = aggregate_by_patient(logits, labels, groups, probabilities=True)
    scores = _share_correct(logits, labels, grouped)
    sums = np.stack([scores, np.ones(len(scores))], axis=1)
    point, resampled, jackknife = additive_bootstrap(
        sums, lambda t: {"rate": t[:, 0] / t[:, 1]}, np.random.default_rng(seed), resamples, method == "bca")
    record = interval_record(point["rate"], resampled["rate"], None if jackknife is None else jackknife["rate"],
                             None, "patient", len(scores), resamples, level, method, seed)
    return {**record,
            "aggregation": "mean over patients of the share of each patient's images classified correctly",
            "patient_scores": dict(zip(grouped["patients"], scores.tolist()))}


def _metric_scalars(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """The shipped `evaluate` module's scalar metrics of per-patient probabilities (argmax, or thresholded)."""
    from .metrics import load_classification_metric

    if labels.ndim == 2:
        scores = load_classification_metric(True).compute(prediction_scores=probs, references=labels,
                                                          threshold=threshold)
    else:
        scores = load_classification_metric(False).compute(predictions=probs.argmax(axis=1), references=labels,
                                                           num_labels=probs.shape[1])
    return {k: float(v) for k, v in scores.items() if isinstance(v, (int, float))}


def patient_level_results(
    logits: np.ndarray, labels: np.ndarray, groups: Sequence[Any], *, class_names: Sequence[str] | None = None,
    resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, method: str = "bca", seed: int = 0,
    threshold: float = 0.5, per_patient: bool = False,
) -> dict[str, Any]:
    """Patient-level metrics with bootstrap intervals over patients, and (single-label) the patient recognition rate.

    Args:
        logits (`np.ndarray`): `(images, classes)` logits of the test images.
        labels (`np.ndarray`): `(images,)` class ids or `(images, labels)` 0/1 multi-labels.
        groups (`Sequence`): one (real) patient id per image.
        class_names (`Sequence[str]`, *optional*): for the per-patient rows.
        resamples, level, method, seed: the bootstrap's, as in `bootstrap_metrics`.
        threshold (`float`, *optional*, defaults to 0.5): multi-label decision threshold on the mean probabilities.
        per_patient (`bool`, *optional*, defaults to `False`): also list every patient (id, label, prediction,
            images, share of images correct).

    Returns:
        `dict`: `aggregation`, `num_patients`, `num_images`, `split_patients`, `metrics` (over patients, from the
        `evaluate` module), `intervals` (metric -> record, `unit: "patient"`), `patient_recognition_rate`
        (single-label) and `patients` (with `per_patient`).
    """
    labels = np.asarray(labels)
    grouped = aggregate_by_patient(logits, labels, groups)
    probs, case_labels = grouped["probabilities"], grouped["labels"]
    settings = {"resamples": resamples, "level": level, "method": method, "seed": seed}
    result: dict[str, Any] = {
        "aggregation": PATIENT_AGGREGATION if labels.ndim == 1 else
        "each patient's label is positive where any image is; its probability the mean over the patient's images",
        "num_patients": len(case_labels), "num_images": int(len(labels)), "split_patients": grouped["split_patients"],
        "metrics": _metric_scalars(probs, case_labels, threshold),
        "intervals": bootstrap_metrics(probs, case_labels, grouped["patients"], num_labels=probs.shape[1],
                                       probabilities=True, threshold=threshold, **settings),
    }
    if labels.ndim == 1:
        result["patient_recognition_rate"] = patient_recognition_rate(logits, labels, groups, **settings)
        result["patient_recognition_rate"].pop("patient_scores")
    if per_patient:
        shares = _share_correct(logits, labels, grouped) if labels.ndim == 1 else np.full(len(probs), np.nan)
        name = (lambda c: str(class_names[c])) if class_names is not None else int
        result["patients"] = [
            {"patient": pid, "num_images": int(n),
             **({"label": name(int(y)), "prediction": name(int(p.argmax())), "share_correct": float(share)}
                if labels.ndim == 1 else {"labels": y.tolist(), "mean_probabilities": p.round(6).tolist()})}
            for pid, n, y, p, share in zip(grouped["patients"], grouped["num_images"], case_labels, probs, shares)
        ]
    return result
