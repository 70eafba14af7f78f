"""Evaluation metrics through sklearn: the paper's macro Pre/Rec/Acc/F1 (Eq. 9-12), confusion matrix, AUROC.

Works offline (no `evaluate.load`). `compute_metrics` plugs into `transformers.Trainer`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)


def _logits(predictions: Any) -> np.ndarray:
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    return np.asarray(predictions)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 (Eq. 9-12 averaged over classes), as fractions."""
    preds = logits.argmax(-1)
    classes = np.arange(logits.shape[-1])
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, labels=classes, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def multilabel_metrics(logits: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Macro AUROC over the labels that have both classes in `labels`, plus thresholded macro F1."""
    probs = 1.0 / (1.0 + np.exp(-logits))
    labels = labels.astype(int)
    valid = [j for j in range(labels.shape[1]) if 0 < labels[:, j].sum() < len(labels)]
    aurocs = [roc_auc_score(labels[:, j], probs[:, j]) for j in valid]
    preds = (probs >= threshold).astype(int)
    return {
        "auroc": float(np.mean(aurocs)) if aurocs else float("nan"),
        "f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
        "accuracy": float((preds == labels).mean()),
    }


def compute_metrics(eval_pred) -> dict[str, float]:
    """`Trainer` hook: single-label metrics for 1-D labels, multi-label ones for 2-D labels."""
    logits, labels = _logits(eval_pred.predictions), np.asarray(eval_pred.label_ids)
    if labels.ndim == 2:
        return multilabel_metrics(logits, labels)
    return classification_metrics(logits, labels)


def per_class_report(logits: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    preds = logits.argmax(-1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=np.arange(len(names)), zero_division=0
    )
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support)
    }


def save_confusion_matrix_png(matrix: np.ndarray, names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Write a row-normalised confusion matrix (counts annotated) as a PNG, as in the paper's Fig. 6."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.7 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=120)
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
    plt.close(fig)
    return path


def evaluation_report(
    logits: np.ndarray, labels: np.ndarray, names: Sequence[str], loss: float | None = None
) -> dict[str, Any]:
    """The metrics, per-class scores and confusion matrix of one test set (the `test_results.json` core)."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if labels.ndim == 2:
        report: dict[str, Any] = {"metrics": multilabel_metrics(logits, labels)}
    else:
        report = {
            "metrics": classification_metrics(logits, labels),
            "per_class": per_class_report(logits, labels, names),
            "confusion_matrix": confusion_matrix(labels, logits.argmax(-1), labels=np.arange(len(names))).tolist(),
        }
    if loss is not None:
        report["metrics"]["loss"] = float(loss)
    report["labels"] = list(names)
    report["num_test_examples"] = int(len(labels))
    return report


def table_iv_row(method: str, metrics: dict[str, float]) -> str:
    """A markdown row in the paper's Table IV format: Method | Pre (%) | Rec (%) | Acc (%) | F1 (%)."""
    cells = [f"{100 * metrics[k]:.2f}" for k in ("precision", "recall", "accuracy", "f1")]
    return f"| {method} | " + " | ".join(cells) + " |"


TABLE_IV_HEADER = "| Method | Pre (%) | Rec (%) | Acc (%) | F1 (%) |\n|---|---|---|---|---|"


def write_results(report: dict[str, Any], output_dir: str | Path, method: str) -> dict[str, Path]:
    """Write `test_results.json`, `test_results.md` (Table IV row) and, for single-label, the confusion PNG."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": output_dir / "test_results.json", "markdown": output_dir / "test_results.md"}
    paths["json"].write_text(json.dumps(report, indent=2))
    if "precision" in report["metrics"]:
        paths["markdown"].write_text(TABLE_IV_HEADER + "\n" + table_iv_row(method, report["metrics"]) + "\n")
    else:
        paths["markdown"].write_text(
            "| Method | AUROC | F1 |\n|---|---|---|\n"
            f"| {method} | {100 * report['metrics']['auroc']:.2f} | {100 * report['metrics']['f1']:.2f} |\n"
        )
    if "confusion_matrix" in report:
        paths["png"] = save_confusion_matrix_png(
            np.array(report["confusion_matrix"]), report["labels"], output_dir / "confusion_matrix.png", method
        )
    return paths
