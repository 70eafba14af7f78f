"""The pictures a reader looks at: reliability diagram, ROC and precision-recall curves per class, the training curves
of both SFT stages, and a forest plot of recipes with their intervals.

Each draws on a `matplotlib.figure.Figure` saved through the Agg canvas: no display, no pyplot state, the caller's
backend left as it was. Each writes one PNG (creating its folder) and returns its path; the ROC/PR plot also returns
the per-class AUROC and average precision it drew, so that a report can quote the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.special import expit, softmax

from .calibration import CALIBRATION_BINS, expected_calibration_error, reliability_bins

__all__ = [
    "continuous_steps",
    "plot_forest",
    "plot_reliability_diagram",
    "plot_roc_pr_curves",
    "plot_training_curves",
]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def plot_reliability_diagram(logits: np.ndarray, labels: np.ndarray, path: str | Path, *,
                             temperature: float | None = None, n_bins: int = CALIBRATION_BINS,
                             title: str | None = None) -> Path:
    """A reliability diagram: per equal-width confidence bin, the share right against the mean confidence (the
    diagonal is perfect calibration), the ECE in the legend, and below it how many test images each bin holds.

    Args:
        logits (`np.ndarray`): `(images, classes)` test logits.
        labels (`np.ndarray`): class ids, or `(images, labels)` 0/1 multi-labels (then every label's probability is
            binned against whether the label is positive).
        path (`str` or `Path`): the PNG to write.
        temperature (`float`, *optional*): a fitted temperature: the diagram shows before and after it.
        n_bins (`int`, *optional*, defaults to 15): equal-width bins.
        title (`str`, *optional*): the figure title.
    """
    multi = np.ndim(labels) == 2
    fig = _figure(6.0, 6.4)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = 1.0 / n_bins
    series = [(1.0, "uncalibrated", "tab:gray" if temperature else "tab:blue")]
    if temperature is not None:
        series.append((float(temperature), f"temperature {float(temperature):.2f}", "tab:blue"))
    for k, (t, name, colour) in enumerate(series):
        bins = reliability_bins(logits, labels, n_bins, t)
        centres = np.asarray(bins["edges"][:-1]) + width / 2
        acc, count = np.asarray(bins["accuracy"], dtype=float), np.asarray(bins["count"], dtype=float)
        ece = expected_calibration_error(logits, labels, n_bins, t)
        shift = (k - (len(series) - 1) / 2) * width / len(series)
        top.bar(centres + shift, np.nan_to_num(acc), width=width / len(series), color=colour, alpha=0.75,
                edgecolor="black", linewidth=0.4, label=f"{name} (ECE {100 * ece:.1f} %)")
        top.plot(bins["confidence"], acc, "o", color=colour, markersize=3, markeredgecolor="black",
                 markeredgewidth=0.3)
        bottom.bar(centres + shift, count / max(count.sum(), 1), width=width / len(series), color=colour, alpha=0.75)
    top.plot([0, 1], [0, 1], "--", color="black", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("Observed frequency of positives" if multi else "Accuracy in bin (share correct)")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    top.set_title(title or f"Reliability diagram, {n_bins} equal-width bins\n(dot: a bin's mean confidence against its "
                  "accuracy; on the diagonal when calibrated)", fontsize=10)
    bottom.set_xlabel("Predicted probability of each label" if multi else "Confidence (largest softmax probability)")
    bottom.set_ylabel("Share of\nimages" if not multi else "Share of\npredictions")
    bottom.grid(alpha=0.3)
    return _save(fig, path)


def _one_vs_rest(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(probabilities, 0/1 targets)`, one column per class (softmax, one-vs-rest) or per label (sigmoid)."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if labels.ndim == 2:
        return expit(logits), labels.astype(np.int64)
    return softmax(logits, axis=1), np.eye(logits.shape[1], dtype=np.int64)[labels.astype(np.int64)]


def plot_roc_pr_curves(logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: str | Path,
                       title: str | None = None) -> tuple[Path, dict[str, dict[str, float | None]]]:
    """ROC and precision-recall curves per class (one-vs-rest on the softmax; per label for multi-label data),
    AUROC and average precision per class in the legends (`sklearn.metrics`).

    Returns:
        `(path, per_class)`: the PNG and class name -> `{"auroc", "average_precision", "prevalence"}` (`None` where
        the test set has no image, or only images, of that class).
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    probs, targets = _one_vs_rest(logits, labels)
    if len(class_names) != probs.shape[1]:
        raise ValueError(f"{len(class_names)} class names for {probs.shape[1]} score columns")
    fig = _figure(11.0, 4.8)
    roc_ax, pr_ax = fig.subplots(1, 2)
    colours = colormaps["tab10" if len(class_names) <= 10 else "tab20"].colors
    per_class: dict[str, dict[str, float | None]] = {}
    for c, name in enumerate(class_names):
        y, p = targets[:, c], probs[:, c]
        prevalence = float(y.mean())
        if not 0 < y.sum() < len(y):
            per_class[str(name)] = {"auroc": None, "average_precision": None, "prevalence": prevalence}
            continue
        colour = colours[c % len(colours)]
        auroc, ap = float(roc_auc_score(y, p)), float(average_precision_score(y, p))
        per_class[str(name)] = {"auroc": auroc, "average_precision": ap, "prevalence": prevalence}
        fpr, tpr, _ = roc_curve(y, p)
        roc_ax.plot(fpr, tpr, color=colour, linewidth=1.4, label=f"{name}: AUROC {auroc:.3f}")
        precision, recall, _ = precision_recall_curve(y, p)
        pr_ax.step(recall, precision, where="post", color=colour, linewidth=1.4,
                   label=f"{name}: AP {ap:.3f} (prevalence {prevalence:.2f})")
        pr_ax.axhline(prevalence, color=colour, linestyle=":", linewidth=0.8)
    roc_ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="chance")
    roc_ax.set_xlabel("False positive rate (1 - specificity)")
    roc_ax.set_ylabel("True positive rate (sensitivity)")
    roc_ax.set_title("ROC, one class vs the rest", fontsize=10)
    pr_ax.set_xlabel("Recall (sensitivity)")
    pr_ax.set_ylabel("Precision (positive predictive value)")
    pr_ax.set_title("Precision-recall (dotted: each class's prevalence)", fontsize=10)
    for ax in (roc_ax, pr_ax):
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc_ax else "lower left", fontsize=7)
    missing = [n for n, v in per_class.items() if v["auroc"] is None]
    suffix = f" (no curve for {', '.join(missing)}: one value only in the test set)" if missing else ""
    fig.suptitle((title or "ROC and precision-recall curves on the test set") + suffix, fontsize=11)
    return _save(fig, path), per_class


def continuous_steps(log_history: Sequence[Mapping[str, Any]]) -> list[tuple[int, int, Mapping[str, Any]]]:
    """`(stage, step across stages, entry)` for each entry of a Trainer `log_history` whose stages each restart
    `step` at 0: a stage's steps continue from the last step the stages before it reached.

    Entries without `stage` belong to stage 1; entries without `step` are left out.
    """
    entries = [e for e in log_history if "step" in e]
    last: dict[int, int] = {}
    for e in entries:
        stage = int(e.get("stage", 1))
        last[stage] = max(last.get(stage, 0), int(e["step"]))
    offset, offsets = 0, {}
    for stage in sorted(last):
        offsets[stage], offset = offset, offset + last[stage]
    return [(int(e.get("stage", 1)), offsets[int(e.get("stage", 1))] + int(e["step"]), e) for e in entries]


def plot_training_curves(log_history: Sequence[Mapping[str, Any]], path: str | Path, metric: str = "f1", *,
                         stage_names: Mapping[int, str] | None = None, title: str | None = None) -> Path:
    """The training curves of a run (both SFT stages): training and validation loss, and the validation metric, over
    the optimizer step continued across stages, with each stage shaded and its boundary marked.

    Args:
        log_history (`Sequence[Mapping]`): Trainer `log_history` entries (`loss`, `eval_loss`, `eval_<metric>`,
            `step`, and `stage` as the runs log it), the stages' lists concatenated in order.
        path (`str` or `Path`): the PNG to write.
        metric (`str`, *optional*, defaults to `"f1"`): the validation metric (without `eval_`), drawn in percent.
        stage_names (`Mapping[int, str]`, *optional*): stage -> what it trains (e.g. "backbone frozen").
        title (`str`, *optional*): the figure title.
    """
    points = continuous_steps(log_history)
    if not points:
        raise ValueError("the log history has no entry with a `step`; pass trainer.state.log_history")
    fig = _figure(11.0, 4.2)
    loss_ax, metric_ax = fig.subplots(1, 2, sharex=True)
    for key, ax, name, style, scale in (
        ("loss", loss_ax, "training loss", "-", 1.0), ("eval_loss", loss_ax, "validation loss", "o-", 1.0),
        (f"eval_{metric}", metric_ax, f"validation {metric}", "o-", 100.0),
    ):
        for stage in sorted({s for s, _, _ in points}):
            xy = [(x, e[key]) for s, x, e in points if s == stage and key in e]
            if xy:
                x, y = zip(*xy)
                colour = {"loss": "tab:blue", "eval_loss": "tab:orange"}.get(key, "tab:green")
                ax.plot(x, np.asarray(y) * scale, style, color=colour, markersize=3, linewidth=1.3,
                        label=name if stage == min(s for s, _, _ in points) else None)
    stages = sorted({s for s, _, _ in points})
    ends = {s: max(x for t, x, _ in points if t == s) for s in stages}
    start = 0
    for k, stage in enumerate(stages):
        label = (stage_names or {}).get(stage, f"stage {stage}")
        for ax in (loss_ax, metric_ax):
            ax.axvspan(start, ends[stage], color=("tab:gray" if k % 2 else "tab:blue"), alpha=0.06)
            if k:
                ax.axvline(start, color="black", linestyle="--", linewidth=1)
            ax.text((start + ends[stage]) / 2, 1.01, label, transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=8)
        start = ends[stage]
    loss_ax.set_ylabel("Loss (cross-entropy)")
    metric_ax.set_ylabel(f"Validation {metric} (%)")
    values = [100.0 * e[f"eval_{metric}"] for _, _, e in points if f"eval_{metric}" in e]
    if not values:
        metric_ax.text(0.5, 0.5, f"no eval_{metric} logged", transform=metric_ax.transAxes, ha="center")
    else:
        low = min(values)
        metric_ax.set_ylim(max(0.0, low - max(5.0, 0.1 * (100 - low))), 101.0 if max(values) >= 99.95 else None)
        if max(values) >= 99.95:  # a saturated validation set: model selection ran on ties
            metric_ax.text(0.03, 0.05, f"validation {metric} at its ceiling (100 %):\nthe kept checkpoint was "
                           "chosen among ties", transform=metric_ax.transAxes, fontsize=8, color="tab:red")
    for ax in (loss_ax, metric_ax):
        ax.set_xlabel("Optimizer step (continued across stages)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(title or "Training curves (dashed line: stage boundary)", fontsize=11, y=1.06)
    return _save(fig, path)


def plot_forest(rows: Sequence[tuple[str, Mapping[str, Any]]], path: str | Path, metric_label: str = "Macro-F1 (%)",
                *, reference: float | None = None, reference_label: str | None = None, scale: float = 100.0,
                title: str | None = None) -> Path:
    """A forest plot: one row per recipe (or comparison), its value as a dot and its interval as a line, the numbers
    written beside it.

    Args:
        rows (`Sequence[tuple[str, Mapping]]`): `(label, record)` pairs; a record has `value`, `low`, `high` (the
            records of `bootstrap_metrics` or `paired_bootstrap`), top row first.
        path (`str` or `Path`): the PNG to write.
        metric_label (`str`, *optional*): the x-axis label, with its unit.
        reference (`float`, *optional*): a vertical reference line (e.g. 0 for differences, or a baseline's value).
        reference_label (`str`, *optional*): its legend entry.
        scale (`float`, *optional*, defaults to 100): fractions are drawn in percent.
        title (`str`, *optional*): the figure title.
    """
    if not rows:
        raise ValueError("a forest plot needs at least one (label, record) row")
    fig = _figure(8.0, 1.2 + 0.45 * len(rows))
    ax = fig.add_subplot()
    unit = next((r["unit"] for _, r in rows if r.get("unit")), None)
    level = next((r["level"] for _, r in rows if r.get("level")), None)
    for y, (label, record) in enumerate(rows):
        value, low, high = (float(record.get(k, math.nan)) * scale for k in ("value", "low", "high"))
        if not math.isnan(low) and not math.isnan(high):
            ax.plot([low, high], [y, y], color="tab:blue", linewidth=2, solid_capstyle="butt")
            ax.plot([low, low], [y - 0.15, y + 0.15], color="tab:blue", linewidth=1)
            ax.plot([high, high], [y - 0.15, y + 0.15], color="tab:blue", linewidth=1)
            text = f"{value:.1f} [{low:.1f}, {high:.1f}]"
        else:
            text = f"{value:.1f}"
        ax.plot([value], [y], "D", color="tab:red", markersize=6, zorder=3)
        ax.annotate(text, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    if reference is not None:
        ax.axvline(reference * scale, color="gray", linestyle="--", linewidth=1, label=reference_label)
        if reference_label:
            ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(metric_label)
    ax.grid(axis="x", alpha=0.3)
    level_text = f"{100 * level:.0f} % " if level else ""
    unit_text = f", resampling {unit}s" if unit else ""
    ax.set_title(title or f"Point estimates and {level_text}bootstrap intervals{unit_text}", fontsize=10)
    return _save(fig, path)
