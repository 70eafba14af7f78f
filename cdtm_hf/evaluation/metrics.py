"""Evaluation metrics of a run: the paper's macro Pre/Rec/Acc (Eq. 9-11), its Eq. 12 F1 beside scikit-learn's macro-F1,
per-class scores, the confusion matrix (Fig. 6) and, for multi-label data, macro AUROC.

Every number comes from the `evaluate` module shipped in `cdtm_hf/evaluate_metrics/cdtm_classification.py`, loaded
offline from its package path (`load_classification_metric`); `compute_metrics` plugs it into `transformers.Trainer`
and `evaluation_report` builds the metrics part of `test_results.json` from it.

Metric keys: `accuracy`, `precision`, `recall` (macro), `f1` (scikit-learn's macro-F1, the mean of the per-class F1
scores) and `f1_eq12` (the paper's Eq. 12, the harmonic mean of macro precision and macro recall, which is what the
paper's tables call F1); multi-label adds `auroc`. Wherever a number stands beside the paper's F1, use `f1_eq12`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .evaluate_metrics import CLASSIFICATION_METRIC_PATH
from .reporting import format_pct, markdown_table

if TYPE_CHECKING:
    import evaluate

#: how tables, cards and logs name each metric key (one home for these names)
METRIC_DISPLAY_NAMES = {
    "precision": "Precision (macro)",
    "recall": "Recall (macro)",
    "accuracy": "Accuracy",
    "f1": "Macro-F1",
    "f1_eq12": "F1 (Eq. 12)",
    "auroc": "AUROC (macro)",
    "loss": "Loss",
}

#: the columns of `test_results.md`: the paper's Table IV (Pre, Rec, Acc, F1 = Eq. 12) plus scikit-learn's macro-F1
TABLE_IV_COLUMNS = {
    "precision": "Pre (%)",
    "recall": "Rec (%)",
    "accuracy": "Acc (%)",
    "f1_eq12": "F1 Eq. 12 (%)",
    "f1": "Macro-F1 (%)",
}
#: the columns of a multi-label `test_results.md` (thresholded at 0.5 except AUROC)
MULTILABEL_COLUMNS = {
    "auroc": "AUROC (%)",
    "precision": "Pre (%)",
    "recall": "Rec (%)",
    "f1_eq12": "F1 Eq. 12 (%)",
    "f1": "Macro-F1 (%)",
}


@functools.lru_cache(maxsize=None)
def load_classification_metric(multilabel: bool = False) -> evaluate.EvaluationModule:
    """The shipped `cdtm_classification` `evaluate` module, loaded once per process from its package path.

    Args:
        multilabel (`bool`, *optional*, defaults to `False`): the "multilabel" config (inputs `prediction_scores`,
            multi-hot `references`) instead of the single-label one (inputs `predictions`, `references`).

    Returns:
        `evaluate.EvaluationModule`: kept in memory (no cache files, no locks); nothing is fetched from the Hub.
    """
    import evaluate

    return evaluate.load(
        str(CLASSIFICATION_METRIC_PATH), config_name="multilabel" if multilabel else "default", keep_in_memory=True
    )


def eq12_f1(precision: float, recall: float) -> float:
    """The paper's Eq. 12, `2 * P * R / (P + R)` of macro precision and recall (0 when both are 0), for a report
    that stores P and R only. The formula lives in the metric module; this imports it from there."""
    from .evaluate_metrics.cdtm_classification import eq12_f1 as formula

    return formula(precision, recall)


def _logits(predictions: Any) -> np.ndarray:
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    return np.asarray(predictions)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def _scores(logits: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """One call of the metric module: every scalar, per-class list and (single-label) the confusion matrix."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if labels.ndim == 2:
        return load_classification_metric(True).compute(
            prediction_scores=_sigmoid(logits), references=labels, threshold=threshold
        )
    return load_classification_metric(False).compute(
        predictions=logits.argmax(-1), references=labels, num_labels=logits.shape[-1]
    )


def _scalars(scores: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in scores.items() if isinstance(v, (int, float))}


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, macro precision / recall, macro-F1 (`f1`) and the paper's Eq. 12 F1 (`f1_eq12`), as fractions.

    Args:
        logits (`np.ndarray`): `(examples, classes)` scores; the prediction is their argmax.
        labels (`np.ndarray`): `(examples,)` class ids.
    """
    return _scalars(_scores(logits, labels))


def multilabel_metrics(logits: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Macro AUROC over the labels that have both values in `labels`, and, thresholded on the sigmoid of `logits`,
    element-wise accuracy, macro precision / recall, macro-F1 (`f1`) and the Eq. 12 F1 (`f1_eq12`).

    Args:
        logits (`np.ndarray`): `(examples, labels)` logits.
        labels (`np.ndarray`): `(examples, labels)` 0/1 targets.
        threshold (`float`, *optional*, defaults to 0.5): decision threshold on the probabilities.
    """
    return _scalars(_scores(logits, labels, threshold=threshold))


def compute_metrics(eval_pred) -> dict[str, float]:
    """`Trainer` hook: single-label metrics for 1-D labels, multi-label ones for 2-D labels (scalars only)."""
    return _scalars(_scores(_logits(eval_pred.predictions), np.asarray(eval_pred.label_ids)))


def _per_class(scores: dict[str, Any], names: Sequence[str]) -> dict[str, dict[str, float | int | None]]:
    prefix = "per_label_" if "per_label_f1" in scores else "per_class_"
    keys = ["precision", "recall", "f1", "support"] + (["auroc"] if prefix == "per_label_" else [])
    return {name: {k: scores[prefix + k][i] for k in keys} for i, name in enumerate(names)}


def save_confusion_matrix_png(matrix: np.ndarray, names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Write a row-normalised confusion matrix (counts annotated) as a PNG, as in the paper's Fig. 6.

    Draws on a `matplotlib.figure.Figure` with the Agg canvas directly, so the caller's matplotlib backend and
    pyplot state are left as they were.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.7 * len(names) + 2)
    fig = Figure(figsize=(size, size * 0.85), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{norm[i, j]:.0%}\n({matrix[i, j]})", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def evaluation_report(
    logits: np.ndarray, labels: np.ndarray, names: Sequence[str], loss: float | None = None
) -> dict[str, Any]:
    """The metrics, per-class scores and confusion matrix of one test set (the `test_results.json` core).

    Args:
        logits (`np.ndarray`): `(examples, classes)` logits.
        labels (`np.ndarray`): `(examples,)` class ids, or `(examples, labels)` 0/1 targets for multi-label data.
        names (`Sequence[str]`): the class (label) names, in id order.
        loss (`float`, *optional*): the test loss, stored as `metrics["loss"]`.

    Returns:
        `dict`: `metrics` (the scalar keys, `f1_eq12` included), `per_class` (by name), `confusion_matrix`
        (single-label only; rows are true classes), `labels` and `num_test_examples`.
    """
    logits, labels = np.asarray(logits), np.asarray(labels)
    if len(names) != logits.shape[-1]:
        raise ValueError(
            f"{len(names)} class names {list(names)[:10]} for logits of {logits.shape[-1]} classes; pass one name "
            "per model output (model.config.id2label in id order)"
        )
    scores = _scores(logits, labels)
    report: dict[str, Any] = {"metrics": _scalars(scores), "per_class": _per_class(scores, names)}
    if "confusion_matrix" in scores:
        report["confusion_matrix"] = scores["confusion_matrix"]
    if loss is not None:
        report["metrics"]["loss"] = float(loss)
    report["labels"] = list(names)
    report["num_test_examples"] = int(len(labels))
    return report


def results_table(rows: Sequence[tuple[str, dict[str, float]]], multilabel: bool = False) -> str:
    """A markdown table of runs in the paper's Table IV layout, in percent, through `reporting.markdown_table`.

    Args:
        rows (`Sequence[tuple[str, dict]]`): `(method, metrics)` pairs; a missing metric shows as "–".
        multilabel (`bool`, *optional*, defaults to `False`): AUROC first and no accuracy (`MULTILABEL_COLUMNS`).
    """
    columns = MULTILABEL_COLUMNS if multilabel else TABLE_IV_COLUMNS
    return markdown_table(
        ["Method", *columns.values()],
        [[method, *(format_pct(metrics.get(k)) for k in columns)] for method, metrics in rows],
    )


def write_results(report: dict[str, Any], output_dir: str | Path, method: str) -> dict[str, Path]:
    """Write `test_results.json`, `test_results.md` (the Table IV row, both F1s) and, for single-label data, the
    confusion-matrix PNG.

    Returns:
        `dict[str, Path]`: the written files under the keys `json`, `markdown` and `png` (single-label only).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": output_dir / "test_results.json", "markdown": output_dir / "test_results.md"}
    paths["json"].write_text(json.dumps(report, indent=2))
    table = results_table([(method, report["metrics"])], multilabel="auroc" in report["metrics"])
    from .run_statistics import statistics_markdown  # issue 19: intervals, calibration, patient level

    table = "\n\n".join(part for part in (table, statistics_markdown(report)) if part)
    paths["markdown"].write_text(table + "\n")
    if "confusion_matrix" in report:
        paths["png"] = save_confusion_matrix_png(
            np.array(report["confusion_matrix"]), report["labels"], output_dir / "confusion_matrix.png", method
        )
    return paths


__all__ = [
    "METRIC_DISPLAY_NAMES",
    "MULTILABEL_COLUMNS",
    "TABLE_IV_COLUMNS",
    "classification_metrics",
    "compute_metrics",
    "eq12_f1",
    "evaluation_report",
    "load_classification_metric",
    "multilabel_metrics",
    "results_table",
    "save_confusion_matrix_png",
    "write_results",
]
