"""What a run adds to its test metrics: bootstrap intervals, calibration, patient-level scores, the plots, and the
predictions a grid compares runs on.

`statistics_report` gathers the library's numbers (`uncertainty`, `calibration`, `patients`) for one test set into
the keys `test_results.json` carries beside `metrics`:

- `bootstrap`: how the intervals were made (`unit`: `"patient"` where the split has real patient ids, else
  `"image"`; `reason` says why), or `{"resamples": 0}` when they are off;
- `intervals`: metric -> record (`value`, `low`, `high`, ...) of each scalar test metric;
- `per_class_intervals`: class -> precision / recall / F1 records and the test support (images, patients);
- `calibration`: ECE (15 bins), Brier and NLL before and (with a temperature) after temperature scaling, with their
  intervals;
- `patient_level`: where the split has real patient ids: the metrics over patients (argmax of the mean probability)
  and the patient recognition rate.

`write_statistics_plots` draws the reliability diagram, the ROC/PR curves and the training curves into the run
folder; `statistics_markdown` is the part of `test_results.md` that shows them. `save_predictions` /
`load_predictions` keep the test logits (`test_predictions.npz`, no pickles) for the grid's paired comparisons.
See `docs/evaluation.md` for how to read each number.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .reporting import markdown_table
from .uncertainty import DEFAULT_LEVEL, format_interval

logger = logging.getLogger(__name__)

__all__ = [
    "PLOT_FILES",
    "PREDICTIONS_NAME",
    "load_predictions",
    "save_predictions",
    "bootstrap_sentence",
    "calibration_table",
    "patient_table",
    "statistics_markdown",
    "statistics_report",
    "write_statistics_plots",
]

#: the test logits, labels and patient ids of a run (numpy arrays, loaded with `allow_pickle=False`)
PREDICTIONS_NAME = "test_predictions.npz"
#: plot key -> the PNG a run writes into its folder (the card links them)
PLOT_FILES = {"reliability": "reliability_diagram.png", "roc_pr": "roc_pr_curves.png",
              "training": "training_curves.png"}
_SCALARS = ("accuracy", "precision", "recall", "f1", "f1_eq12", "auroc")


def _bootstrap_settings(resamples: int, groups: Sequence[Any] | None, seed: int, n: int) -> dict[str, Any]:
    if groups is not None:
        unit, reason = "patient", ("the split has real patient ids: patients are resampled with all their images "
                                   "(a cluster bootstrap), as images of one patient are not independent")
    else:
        unit, reason = "image", "the split has no real patient ids: test images are resampled"
    if resamples == 0:
        return {"resamples": 0, "unit": None, "reason": "bootstrap off (--bootstrap_resamples 0)"}
    return {"resamples": int(resamples), "level": DEFAULT_LEVEL, "method": "bca", "seed": int(seed), "unit": unit,
            "num_units": len(set(map(str, groups))) if groups is not None else int(n), "reason": reason}


def statistics_report(
    logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str], groups: Sequence[Any] | None = None, *,
    resamples: int = 1000, seed: int = 0, temperature: float | None = None,
) -> dict[str, Any]:
    """The report keys a test set adds beside its `metrics` (see the module docstring).

    Args:
        logits (`np.ndarray`): `(images, classes)` test logits (before any temperature).
        labels (`np.ndarray`): `(images,)` class ids or `(images, labels)` 0/1 multi-labels.
        class_names (`Sequence[str]`): the class names in id order.
        groups (`Sequence`, *optional*): the real patient ids of the test images (`patients.patient_ids`), or None.
        resamples (`int`, *optional*, defaults to 1000): bootstrap resamples; 0 turns the intervals off.
        seed (`int`, *optional*, defaults to 0): the bootstrap seed.
        temperature (`float`, *optional*): a temperature fitted on validation: calibration is reported before and
            after it.
    """
    from .calibration import calibration_intervals, calibration_report
    from .patients import patient_level_results
    from .uncertainty import bootstrap_metrics, bootstrap_per_class

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if resamples and (not isinstance(resamples, (int, np.integer)) or resamples < 2):
        raise ValueError(f"bootstrap_resamples={resamples!r}: pass 0 (off) or at least 2 (1000 by default)")
    out: dict[str, Any] = {"bootstrap": _bootstrap_settings(resamples, groups, seed, len(labels))}
    settings = {"resamples": int(resamples) if resamples else 2, "seed": seed}
    if resamples:
        out["intervals"] = bootstrap_metrics(logits, labels, groups, num_labels=logits.shape[1], **settings)
        out["per_class_intervals"] = bootstrap_per_class(logits, labels, list(class_names), groups, **settings)
    calibration = calibration_report(logits, labels, temperature)
    if resamples:
        calibration["intervals"] = {"before": calibration_intervals(logits, labels, groups, **settings)}
        if temperature is not None:
            calibration["intervals"]["after"] = calibration_intervals(logits, labels, groups,
                                                                      temperature=temperature, **settings)
    out["calibration"] = calibration
    if groups is not None:
        patient = patient_level_results(logits, labels, groups, class_names=class_names, **settings)
        if not resamples:  # point estimates only
            patient.pop("intervals", None)
            rate = patient.get("patient_recognition_rate")
            if rate:
                patient["patient_recognition_rate"] = {"value": rate["value"], "aggregation": rate["aggregation"]}
        out["patient_level"] = patient
    return out


def write_statistics_plots(
    output_dir: str | Path, logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *,
    temperature: float | None = None, log_history: Sequence[Mapping[str, Any]] | None = None, metric: str = "f1",
    stage_names: Mapping[int, str] | None = None, title: str | None = None,
) -> dict[str, str]:
    """Write the reliability diagram, the ROC/PR curves and (with a log history) the training curves.

    Returns:
        `dict[str, str]`: plot key (`PLOT_FILES`) -> file name in `output_dir`, for the plots that were drawn; the
        ROC/PR plot's per-class AUROC and AP under `"roc_pr_per_class"`.
    """
    from .plots import plot_reliability_diagram, plot_roc_pr_curves, plot_training_curves

    output_dir = Path(output_dir)
    written: dict[str, Any] = {}
    suffix = f" ({title})" if title else ""
    plot_reliability_diagram(logits, labels, output_dir / PLOT_FILES["reliability"], temperature=temperature,
                             title=f"Reliability on the test split{suffix}")
    written["reliability"] = PLOT_FILES["reliability"]
    _, per_class = plot_roc_pr_curves(logits, labels, class_names, output_dir / PLOT_FILES["roc_pr"],
                                      title=f"ROC and precision-recall per class, test split{suffix}")
    written["roc_pr"] = PLOT_FILES["roc_pr"]
    written["roc_pr_per_class"] = per_class
    entries = [e for e in (log_history or []) if "step" in e]
    if entries:
        metric_key = metric[5:] if metric.startswith("eval_") else metric
        plot_training_curves(entries, output_dir / PLOT_FILES["training"], metric=metric_key,
                             stage_names=stage_names, title=f"Training curves{suffix} (dashed line: stage boundary)")
        written["training"] = PLOT_FILES["training"]
    return written


def save_predictions(output_dir: str | Path, logits: np.ndarray, labels: np.ndarray,
                     groups: Sequence[Any] | None = None, name: str = PREDICTIONS_NAME) -> Path:
    """Keep a test set's logits, labels and patient ids (`.npz` of plain arrays) for paired comparisons."""
    path = Path(output_dir) / name
    arrays = {"logits": np.asarray(logits, dtype=np.float32), "labels": np.asarray(labels)}
    if groups is not None:
        arrays["patient_ids"] = np.asarray([str(g) for g in groups])
    np.savez_compressed(path, **arrays)
    return path


def load_predictions(run_dir: str | Path, name: str = PREDICTIONS_NAME) -> dict[str, np.ndarray] | None:
    """A run's saved test predictions (`save_predictions`), or None where the run kept none."""
    path = Path(run_dir) / name
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _pct(value: Any, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.{digits}f}"


def statistics_markdown(report: Mapping[str, Any]) -> str:
    """The intervals, calibration and patient-level tables of a report, as markdown (empty without them)."""
    from .metrics import METRIC_DISPLAY_NAMES

    parts = []
    intervals = report.get("intervals") or {}
    boot = report.get("bootstrap") or {}
    if intervals:
        keys = [k for k in _SCALARS if k in intervals]
        parts.append(f"Test metrics (%) with {100 * boot.get('level', DEFAULT_LEVEL):.0f} % bootstrap intervals "
                     f"({bootstrap_sentence(boot)}):")
        parts.append(markdown_table([METRIC_DISPLAY_NAMES.get(k, k) for k in keys],
                                    [[format_interval(intervals[k]) for k in keys]]))
    calibration = report.get("calibration") or {}
    if calibration:
        parts.append(calibration_table(calibration))
    patient = report.get("patient_level") or {}
    if patient:
        parts.append(patient_table(patient))
    return "\n\n".join(parts)


def bootstrap_sentence(boot: Mapping[str, Any]) -> str:
    """E.g. "BCa, 1000 resamples of 16 patients, seed 0; the split has real patient ids: ..."."""
    method = {"bca": "BCa", "percentile": "percentile"}.get(boot.get("method"), boot.get("method"))
    return (f"{method}, {boot.get('resamples')} resamples of {boot.get('num_units')} {boot.get('unit')}s, seed "
            f"{boot.get('seed')}; {boot.get('reason')}")


def calibration_table(calibration: Mapping[str, Any]) -> str:
    """ECE (%, 15 bins), Brier and NLL before (and after) temperature scaling, with intervals where recorded."""
    rows = []
    intervals = calibration.get("intervals") or {}
    temperature = calibration.get("temperature")
    for when in ("before", "after"):
        values = calibration.get(when)
        if not values:
            continue
        found = intervals.get(when) or {}
        label = "uncalibrated" if when == "before" else f"temperature T = {temperature:.3g}"

        def cell(key: str, scale: float, digits: int) -> str:
            if key in found:
                return format_interval(found[key], digits=digits, scale=scale)
            return f"{values[key] * scale:.{digits}f}"

        rows.append([label, cell("ece", 100.0, 1), cell("brier", 1.0, 3), cell("nll", 1.0, 3)])
    return markdown_table(["Calibration (test)", f"ECE (%, {calibration.get('bins', 15)} bins)", "Brier", "NLL"],
                          rows)


def patient_table(patient: Mapping[str, Any]) -> str:
    """The patient-level metrics (and the patient recognition rate), with intervals over patients."""
    metrics, intervals = patient.get("metrics") or {}, patient.get("intervals") or {}
    keys = [k for k in ("accuracy", "f1", "f1_eq12", "auroc") if k in metrics]
    headers = [f"Patient-level {k.replace('_', ' ')} (%)" for k in keys]
    row = [format_interval(intervals[k]) if k in intervals else _pct(metrics[k]) for k in keys]
    rate = patient.get("patient_recognition_rate")
    if rate:
        headers.append("Patient recognition rate (%)")
        row.append(format_interval(rate) if "low" in rate else _pct(rate.get("value")))
    note = (f"{patient.get('num_patients')} test patients; {patient.get('aggregation')}. The patient recognition "
            "rate is the mean over patients of the share of each patient's images classified correctly.")
    return markdown_table(headers, [row]) + "\n\n" + note
