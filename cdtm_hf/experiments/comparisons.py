"""A grid's statistics (issue 19): paired comparisons of recipes on the same test images, each run's intervals, the
per-class table, and the forest plots.

- `paired_comparisons(grid)`: for each `compare` pair (`lp_cdtm vs lp`), every cell A with its partner B (the same
  labels on every other axis), seed by seed: the difference of each metric on the same test images with its
  paired-bootstrap interval (`cdtm_hf.evaluation.uncertainty.paired_bootstrap`, over patients where the split has
  real patient ids), and across the seeds the mean ± std (n) of the differences.
- `statistics_sections(grid, runs, comparisons)`: the markdown sections results.md adds (comparisons, intervals per
  run, calibration and patient level, per class).
- `write_forest_plots(grid, runs, comparisons)`: `forest.png` (each run's metric with its interval) and
  `forest_differences.png` (each paired difference with its interval, 0 marked).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..evaluation.reporting import markdown_table
from ..evaluation.run_statistics import load_predictions
from ..evaluation.uncertainty import format_difference, format_interval, format_runs, summarize_runs
from .grid import Grid

logger = logging.getLogger(__name__)

__all__ = ["COMPARED_METRICS", "comparison_lines", "paired_comparisons", "statistics_sections", "training_flags",
           "write_forest_plots"]

#: the metrics a comparison reports (the table's F1s and accuracy), in that order
COMPARED_METRICS = ("f1", "f1_eq12", "accuracy")
METRIC_NAMES = {"f1": "Macro-F1", "f1_eq12": "F1 Eq. 12", "accuracy": "Acc", "auroc": "AUROC"}
COMPARISONS_FILE = "comparisons.json"


def _partner(grid: Grid, cell, axis: str, label: str):
    wanted = {**cell.labels, axis: label}
    return next((c for c in grid.cells if c.labels == wanted), None)


def _resamples(cell) -> int:
    value = cell.fields.get("bootstrap_resamples", 1000)
    return int(value) if value else 1000


def _compare_seed(grid: Grid, a, b, seed: int) -> dict[str, Any] | None:
    from ..evaluation.uncertainty import paired_bootstrap

    pa, pb = load_predictions(grid.run_dir(a, seed)), load_predictions(grid.run_dir(b, seed))
    if pa is None or pb is None:
        return None
    if pa["labels"].shape != pb["labels"].shape or not np.array_equal(pa["labels"], pb["labels"]):
        logger.warning("%s and %s seed %d were tested on different images: no paired comparison", a.cell_id,
                       b.cell_id, seed)
        return {"seed": seed, "error": "different test images (another split or data set)"}
    groups = pa.get("patient_ids")
    diffs = paired_bootstrap(pa["logits"], pb["logits"], pa["labels"], None if groups is None else groups.tolist(),
                             resamples=_resamples(a), seed=seed)
    return {"seed": seed, "differences": {k: diffs[k] for k in (*COMPARED_METRICS, "auroc") if k in diffs}}


def paired_comparisons(grid: Grid) -> list[dict[str, Any]]:
    """Every comparison of the grid's `compare` entry, per cell pair and seed (see the module docstring)."""
    out = []
    for axis, label_a, label_b in grid.comparisons or []:
        for a in grid.cells:
            if a.labels.get(axis) != label_a:
                continue
            b = _partner(grid, a, axis, label_b)
            if b is None:
                continue
            seeds = [r for r in (_compare_seed(grid, a, b, s) for s in grid.seeds) if r is not None]
            done = [r for r in seeds if "differences" in r]
            context = {k: v for k, v in a.labels.items() if k != axis}
            summary = summarize_runs([{k: r["differences"][k]["value"] for k in r["differences"]} for r in done])
            out.append({"name": f"{label_a} vs {label_b}", "axis": axis, "a": a.cell_id, "b": b.cell_id,
                        "context": context, "seeds": seeds, "summary": summary,
                        "unit": done[0]["differences"]["f1"]["unit"] if done else None})
    return out


def _difference_text(comparison: dict[str, Any], metric: str) -> str:
    done = [r for r in comparison["seeds"] if metric in r.get("differences", {})]
    if not done:
        return "–"
    if len(done) == 1:
        return format_difference(done[0]["differences"][metric])
    excluding = sum(1 for r in done if not (r["differences"][metric]["low"] <= 0 <= r["differences"][metric]["high"]))
    summary = comparison["summary"][metric]
    return (f"{100 * summary['mean']:+.1f} ± {100 * summary['std']:.1f} (n={summary['n']}); "
            f"{excluding}/{len(done)} seed intervals exclude 0")


def comparison_lines(comparisons: list[dict[str, Any]]) -> list[str]:
    """One line per comparison, e.g. `lp_cdtm vs lp (backbone=vitb16): Macro-F1 +1.2 [-3.1, +5.4], ...`."""
    lines = []
    for comp in comparisons:
        context = ", ".join(f"{k}={v}" for k, v in comp["context"].items())
        parts = ", ".join(f"{METRIC_NAMES[m]} {_difference_text(comp, m)}" for m in COMPARED_METRICS)
        lines.append(f"{comp['name']}{f' ({context})' if context else ''}: {parts}")
    return lines


def _comparison_table(comparisons: list[dict[str, Any]]) -> list[str]:
    if not comparisons:
        return []
    unit = next((c["unit"] for c in comparisons if c["unit"]), "image")
    rows = [[comp["name"], ", ".join(f"{k}={v}" for k, v in comp["context"].items()) or "–",
             len([r for r in comp["seeds"] if "differences" in r]),
             *(_difference_text(comp, m) for m in COMPARED_METRICS)] for comp in comparisons]
    return ["## Paired comparisons", "",
            "A minus B in percentage points, both scored on the same test images. One seed: the difference with its "
            f"95 % paired-bootstrap interval (resampling {unit}s); several seeds: mean ± std of the per-seed "
            "differences, n seeds, and how many per-seed intervals exclude 0. An interval that contains 0 means the "
            "test set cannot tell the two apart.", "",
            markdown_table(["Comparison", "Other axes", "Seeds", *(f"Δ {METRIC_NAMES[m]}" for m in COMPARED_METRICS)],
                           rows), ""]


def _interval_table(runs: pd.DataFrame) -> list[str]:
    if "f1_low" not in runs.columns:
        return []
    rows = []
    for _, r in runs.iterrows():
        def iv(key: str) -> str:
            low, high = r.get(f"{key}_low"), r.get(f"{key}_high")
            if low is None or (isinstance(low, float) and math.isnan(low)):
                return f"{100 * r[key]:.1f}" if isinstance(r.get(key), float) and not math.isnan(r[key]) else "–"
            return format_interval({"value": r[key], "low": low, "high": high})

        rows.append([r["cell_id"], r["seed"], iv("accuracy"), iv("f1"), iv("f1_eq12"), r.get("bootstrap_unit") or "–",
                     _fmt(r.get("ece"), 100, 1), _fmt(r.get("nll"), 1, 3), _fmt(r.get("patient_f1"), 100, 1),
                     _fmt(r.get("patient_recognition_rate"), 100, 1)])
    return ["## Each run with its 95 % bootstrap interval", "",
            "Test metrics in % with the run's bootstrap interval (resampled unit in the column); ECE (15 bins, %) and "
            "NLL uncalibrated; patient-level macro-F1 (argmax of the mean probability per patient) and the patient "
            "recognition rate where the split has patient ids.", "",
            markdown_table(["Cell", "Seed", "Acc", "Macro-F1", "F1 Eq. 12", "Resampled", "ECE", "NLL",
                            "Patient macro-F1", "Patient recognition rate"], rows), ""]


def _fmt(value: Any, scale: float, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{scale * float(value):.{digits}f}"


def _per_class_table(grid: Grid) -> list[str]:
    from .tables import read_results

    rows, classes, support = [], None, {}
    for cell in grid.cells:
        reports = [r for r in (read_results(grid.run_dir(cell, s)) for s in grid.seeds) if r and r.get("per_class")]
        if not reports:
            continue
        classes = classes or list(reports[0]["per_class"])
        support = support or reports[0]["per_class"]
        row = [cell.cell_id, len(reports)]
        for name in classes:
            for key in ("recall", "f1"):
                values = [r["per_class"].get(name, {}).get(key) for r in reports]
                summary = summarize_runs([{key: v} for v in values if v is not None], [key])[key]
                row.append(format_runs(summary, digits=1).split(" (n=")[0] if summary["n"] else "–")
        rows.append(row)
    if not rows:
        return []
    header = ["Cell", "Seeds", *(f"{name} {k}" for name in classes for k in ("recall", "F1"))]
    support_line = ", ".join(f"{name} {support[name].get('support')}" for name in classes)
    return ["## Per class", "",
            f"Recall and F1 per class in % (mean ± std over seeds). Test support (images): {support_line}. A class "
            "with few test images moves the macro averages most.", "", markdown_table(header, rows), ""]


def _training_flags(runs: pd.DataFrame) -> list[str]:
    """Runs whose validation metric was still rising at the last evaluation (not converged: an unfair baseline), or
    sat at its ceiling (selection ran on ties)."""
    lines = [f"- **{text}**: {runs_}." for text, runs_ in training_flags(runs)]
    return ["## Training flags", "", *lines, ""] if lines else []


def training_flags(runs: pd.DataFrame | None) -> list[tuple[str, str]]:
    """Each training flag with the runs it concerns, e.g. `("validation metric still rising ...", "lp seed 0")`;
    results.md's *Training flags* and the line `cdtm-grid` prints (issue 19 item 9)."""
    lines: list[tuple[str, str]] = []
    if runs is None or not len(runs):
        return lines
    for column, text in (("still_improving", "validation metric still rising at the last evaluation (not converged; "
                          "give this recipe more epochs or another learning rate before comparing)"),
                         ("validation_at_ceiling", "validation metric at its ceiling (100 %): the kept checkpoint "
                          "was chosen among ties")):
        if column in runs.columns:
            flagged = [f"{r['cell_id']} seed {r['seed']}" for _, r in runs.iterrows()
                       if r.get(column) == True]  # noqa: E712 (numpy bools; NaN for older runs)
            if flagged:
                lines.append((text, ", ".join(flagged)))
    return lines


def statistics_sections(grid: Grid, runs: pd.DataFrame, comparisons: list[dict[str, Any]]) -> list[str]:
    """The lines results.md adds after its main table."""
    if runs is None or not len(runs):
        return []
    return ["", *_training_flags(runs), *_comparison_table(comparisons), *_interval_table(runs), *_shift_table(runs),
            *_per_class_table(grid)]


def _shift_table(runs: pd.DataFrame) -> list[str]:
    """Macro-F1 on the run's own test split and on each extra test set (`--extra_test`), with intervals."""
    shifts = [c[len("extra_"):-len("_f1")] for c in runs.columns if c.startswith("extra_") and c.endswith("_f1")]
    if not shifts:
        return []

    def iv(r, key: str) -> str:
        value = r.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        return format_interval({"value": value, "low": r.get(f"{key}_low"), "high": r.get(f"{key}_high")})

    rows = [[r["cell_id"], r["seed"], iv(r, "f1"), *(iv(r, f"extra_{s}_f1") for s in shifts)]
            for _, r in runs.iterrows()]
    return ["## Shifted test sets", "",
            "Macro-F1 (%) with 95 % bootstrap intervals on the run's own test split and on each extra test set "
            "(`--extra_test`; a builder config keeps the test patients' images only).", "",
            markdown_table(["Cell", "Seed", "Own test", *shifts], rows), ""]


def write_forest_plots(grid: Grid, runs: pd.DataFrame, comparisons: list[dict[str, Any]]) -> dict[str, Path]:
    """`forest.png` (each run's macro-F1 with its interval) and `forest_differences.png` (each paired difference)."""
    from ..evaluation.plots import plot_forest

    paths: dict[str, Path] = {}
    if runs is not None and len(runs) and "f1_low" in runs.columns:
        rows = [(f"{r['cell_id']} (seed {r['seed']})", {"value": r["f1"], "low": r["f1_low"], "high": r["f1_high"],
                 "unit": r.get("bootstrap_unit"), "level": 0.95}) for _, r in runs.iterrows()]
        paths["forest"] = plot_forest(rows, grid.output_dir / "forest.png", "Macro-F1 on the test split (%)",
                                      title=f"{grid.name}: macro-F1 with 95 % bootstrap intervals")
    rows = [(f"{c['name']} ({', '.join(f'{k}={v}' for k, v in c['context'].items()) or 'all'}, seed {r['seed']})",
             r["differences"]["f1"]) for c in comparisons for r in c["seeds"] if "differences" in r]
    if rows:
        paths["forest_differences"] = plot_forest(
            rows, grid.output_dir / "forest_differences.png", "Difference in macro-F1, A minus B (points)",
            reference=0.0, reference_label="no difference",
            title=f"{grid.name}: paired differences with 95 % paired-bootstrap intervals")
    if comparisons:
        (grid.output_dir / COMPARISONS_FILE).write_text(json.dumps(comparisons, indent=2, default=float) + "\n")
        paths["comparisons"] = grid.output_dir / COMPARISONS_FILE
    return paths
