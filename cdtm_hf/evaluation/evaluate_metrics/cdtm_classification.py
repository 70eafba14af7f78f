"""CDTM classification metrics as an `evaluate` module (Li et al., Eq. 9-12), computed with scikit-learn.

This file is an `evaluate` script: `evaluate.load(path_to_this_file)` copies it into the modules cache and imports it
from there, so it imports nothing from cdtm_hf. It loads offline from its path; nothing is fetched from the Hub.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

_DESCRIPTION = """\
Classification metrics of the CDTM paper (Li et al., "Embracing Large Natural Data: Enhancing Medical Image Analysis
via Cross-domain Fine-tuning", Eq. 9-12), as fractions in [0, 1].

Single-label (config "default"): accuracy; macro precision, recall and F1 over all `num_labels` classes (classes
absent from both predictions and references count with score 0); `f1` is scikit-learn's macro-F1 (the mean of the
per-class F1 scores); `f1_eq12` is the paper's Eq. 12, the harmonic mean of macro precision and macro recall, which
the authors report as "F1" (Table IV: P 92.74, R 91.08 -> F1 91.91). The two differ whenever the per-class scores
differ. Also the per-class scores and the confusion matrix (rows: true class, columns: predicted class).

Multi-label (config "multilabel"): macro AUROC over the labels whose references hold both values (NaN when none
does), and, thresholded at `threshold`, element-wise accuracy, macro precision, recall, `f1` (macro-F1) and `f1_eq12`,
with per-label scores.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list[int]`): predicted class ids (config "default").
    prediction_scores (`list[list[float]]`): per-label probabilities in [0, 1] (config "multilabel").
    references (`list[int]` or `list[list[float]]`): true class ids, or 0/1 per label for "multilabel".
    num_labels (`int`, *optional*): number of classes ("default"); defaults to 1 + the largest id seen. Pass it so
        that a class missing from a small evaluation set still counts in the macro averages.
    threshold (`float`, *optional*, defaults to 0.5): decision threshold on the scores ("multilabel").
Returns:
    "default": accuracy, precision, recall, f1, f1_eq12 (floats), per_class_precision, per_class_recall,
    per_class_f1, per_class_support (lists, one entry per class), confusion_matrix (list of lists).
    "multilabel": auroc, accuracy, precision, recall, f1, f1_eq12 (floats), per_label_auroc (None where a label has
    one value only), per_label_precision, per_label_recall, per_label_f1, per_label_support (lists).
Examples:
    >>> metric = evaluate.load("path/to/cdtm_classification.py")
    >>> metric.compute(predictions=[0, 0, 1, 1], references=[0, 0, 0, 1], num_labels=2)["f1_eq12"]
    0.7777777777777778
"""

_CITATION = """\
@article{li2025cdtm,
  title={Embracing Large Natural Data: Enhancing Medical Image Analysis via Cross-domain Fine-tuning},
  author={Li, Qiankun and Huang, Xiaolong and Fang, Bo and Chen, Huabao and Ding, Siyuan and Liu, Xu},
  journal={IEEE Journal of Biomedical and Health Informatics},
  year={2025}
}
"""

CONFIG_NAMES = ("default", "multilabel")


def eq12_f1(precision: float, recall: float) -> float:
    """The paper's Eq. 12: `2 * P * R / (P + R)` of macro precision and macro recall (0 when both are 0)."""
    total = precision + recall
    return float(2.0 * precision * recall / total) if total > 0 else 0.0


def _check_ids(name: str, ids: np.ndarray, num_labels: int) -> None:
    bad = sorted({int(v) for v in ids if v < 0 or v >= num_labels})
    if bad:
        raise ValueError(
            f"{name} hold class ids {bad[:10]} outside 0..{num_labels - 1} (num_labels={num_labels}); pass "
            "num_labels = the number of classes, and class ids in 0..num_labels-1"
        )


def single_label_scores(predictions: np.ndarray, references: np.ndarray, num_labels: int | None = None) -> dict:
    """Accuracy, macro P/R/F1, Eq. 12 F1, per-class scores and the confusion matrix of class-id arrays."""
    predictions, references = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
    if predictions.shape != references.shape or predictions.ndim != 1 or len(predictions) == 0:
        raise ValueError(
            f"predictions {predictions.shape} and references {references.shape} must be two non-empty 1-D arrays of "
            "class ids of the same length; for multi-hot labels load the 'multilabel' config"
        )
    if num_labels is None:
        num_labels = int(max(predictions.max(), references.max())) + 1
    _check_ids("predictions", predictions, num_labels)
    _check_ids("references", references, num_labels)
    classes = np.arange(num_labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        references, predictions, labels=classes, average=None, zero_division=0
    )
    macro_p, macro_r = float(precision.mean()), float(recall.mean())
    return {
        "accuracy": float((predictions == references).mean()),
        "precision": macro_p,  # Eq. 9, averaged over classes
        "recall": macro_r,  # Eq. 10, averaged over classes
        "f1": float(f1.mean()),  # scikit-learn's macro-F1
        "f1_eq12": eq12_f1(macro_p, macro_r),  # Eq. 12
        "per_class_precision": precision.tolist(),
        "per_class_recall": recall.tolist(),
        "per_class_f1": f1.tolist(),
        "per_class_support": [int(s) for s in support],
        "confusion_matrix": confusion_matrix(references, predictions, labels=classes).tolist(),
    }


def multilabel_scores(prediction_scores: np.ndarray, references: np.ndarray, threshold: float = 0.5) -> dict:
    """Macro AUROC and thresholded accuracy, macro P/R/F1 and Eq. 12 F1 of multi-hot references."""
    scores, references = np.asarray(prediction_scores, dtype=np.float64), np.asarray(references)
    if scores.shape != references.shape or scores.ndim != 2 or len(scores) == 0:
        raise ValueError(
            f"prediction_scores {scores.shape} and references {references.shape} must be two non-empty 2-D arrays "
            "(examples x labels) of the same shape; for class ids load the 'default' config"
        )
    values = set(np.unique(references).tolist())
    if not values <= {0, 1}:
        raise ValueError(
            f"multi-label references must be 0 or 1, got {sorted(values)}; map uncertain labels first "
            "(e.g. the CheXpert builder's uncertainty_policy)"
        )
    references = references.astype(np.int64)
    aurocs = [
        float(roc_auc_score(references[:, j], scores[:, j])) if 0 < references[:, j].sum() < len(references) else None
        for j in range(references.shape[1])
    ]
    defined = [a for a in aurocs if a is not None]
    predicted = (scores >= threshold).astype(np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(
        references, predicted, average=None, zero_division=0
    )
    macro_p, macro_r = float(precision.mean()), float(recall.mean())
    return {
        "auroc": float(np.mean(defined)) if defined else float("nan"),
        "accuracy": float((predicted == references).mean()),  # element-wise, over examples x labels
        "precision": macro_p,
        "recall": macro_r,
        "f1": float(f1.mean()),
        "f1_eq12": eq12_f1(macro_p, macro_r),
        "per_label_auroc": aurocs,
        "per_label_precision": precision.tolist(),
        "per_label_recall": recall.tolist(),
        "per_label_f1": f1.tolist(),
        "per_label_support": [int(s) for s in support],
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CdtmClassification(evaluate.Metric):
    """Accuracy, macro P/R/F1, the paper's Eq. 12 F1 and the confusion matrix; AUROC for multi-label."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name == "multilabel":
            features = datasets.Features(
                {
                    "prediction_scores": datasets.Sequence(datasets.Value("float32")),
                    # float, so that a soft or uncertain label (0.5, -1) reaches the 0/1 check instead of being cast
                    "references": datasets.Sequence(datasets.Value("float32")),
                }
            )
        elif self.config_name == "default":
            features = datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            )
        else:
            raise ValueError(
                f"config_name {self.config_name!r} is not a config of cdtm_classification; use one of {CONFIG_NAMES}"
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=features,
            format="numpy" if self.config_name == "default" else None,  # numpy format takes scalar features only
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html"],
        )

    def _compute(
        self,
        predictions=None,
        references=None,
        prediction_scores=None,
        num_labels: int | None = None,
        threshold: float = 0.5,
    ) -> dict:
        if self.config_name == "multilabel":
            return multilabel_scores(prediction_scores, references, threshold=threshold)
        return single_label_scores(predictions, references, num_labels=num_labels)
