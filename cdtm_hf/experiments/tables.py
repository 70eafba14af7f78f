"""A grid's results: one row per finished cell x seed (`results.csv`), one per cell (`results.md`).

Mean ± std and the markdown table go through `cdtm_hf.evaluation.reporting`. Where our F1 stands beside the paper's, it is
`f1_eq12`, the paper's Eq. 12 (the harmonic mean of macro precision and macro recall), not sklearn's macro-F1.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..evaluation.metrics import eq12_f1
from ..paper.numbers import load_paper_results, paper_row
from ..core.presets import BACKBONE_PRESETS
from ..evaluation.reporting import MISSING, format_mean_std, format_number, markdown_table, mean_std
from .grid import Grid
from .spec import Cell

logger = logging.getLogger(__name__)

RESULTS_FILE = "test_results.json"
#: The paper's columns, in its order; each has a "paper" column beside ours when the grid names a paper table.
TABLE_METRICS = ("precision", "recall", "accuracy", "f1_eq12")
#: Our columns after the paper's: sklearn's macro-F1 (what picks the best epoch by default), AUROC (multi-label).
EXTRA_METRICS = ("f1", "auroc")
METRIC_HEADERS = {"precision": "Pre", "recall": "Rec", "accuracy": "Acc", "f1_eq12": "F1 Eq. 12",
                  "f1": "Macro-F1", "auroc": "AUROC"}
#: Our metric -> its key in cdtm_hf/paper/paper_results.json (the paper's F1 is its Eq. 12), and that column's header.
PAPER_KEYS = {"precision": "precision", "recall": "recall", "accuracy": "accuracy", "f1_eq12": "f1"}
PAPER_HEADERS = {"precision": "Pre paper", "recall": "Rec paper", "accuracy": "Acc paper", "f1_eq12": "F1 paper"}
RUN_METRICS = ("precision", "recall", "accuracy", "f1", "f1_eq12", "loss")
#: How a run's `f1_eq12` was obtained: in its results, from its precision and recall, or its macro-F1 instead.
F1_EQ12_SOURCES = ("reported", "precision_recall", "macro_f1")


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """The run's `test_results.json`, or None when it is missing or cut short (a run killed while writing it)."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def f1_eq12(metrics: dict[str, Any]) -> tuple[float, str]:
    """The paper's Eq. 12 F1 of a run and where it comes from (one of `F1_EQ12_SOURCES`).

    Results written before `f1_eq12` existed have macro precision and recall, from which Eq. 12 is exact
    (2PR / (P + R)); results without them (multi-label) fall back to the macro-F1.
    """
    if metrics.get("f1_eq12") is not None:
        return float(metrics["f1_eq12"]), "reported"
    precision, recall = metrics.get("precision"), metrics.get("recall")
    if precision is not None and recall is not None:
        return float(eq12_f1(precision, recall)), "precision_recall"
    return float(metrics.get("f1", math.nan)), "macro_f1"


def _cell_info(cell: Cell) -> dict[str, Any]:
    backbone = cell.value("backbone")
    preset = BACKBONE_PRESETS.get(backbone)
    return {
        "method": cell.recipe, "backbone": backbone,
        "family": preset.family if preset else None, "pretraining": preset.pretraining if preset else None,
        "finetune_mode": cell.value("finetune_mode"), "use_cdtm": cell.value("use_cdtm"),
        "head_type": cell.value("head_type"), "dataset": cell.value("dataset"),
        "dataset_config": cell.value("dataset_config"),
    }


def collect_results(grid: Grid) -> pd.DataFrame:
    """One row per finished cell x seed, from the `test_results.json` files on disk (metrics as fractions)."""
    rows = []
    for cell in grid.cells:
        for seed in grid.seeds:
            report = read_results(grid.run_dir(cell, seed))
            if report is None:
                continue
            row: dict[str, Any] = {"cell_id": cell.cell_id, "seed": seed, **cell.labels}
            row.update({k: v for k, v in _cell_info(cell).items() if k not in row})
            metrics = report.get("metrics", {})
            for m in (*RUN_METRICS, *(["auroc"] if "auroc" in metrics else [])):
                row[m] = metrics.get(m, math.nan)
            row["f1_eq12"], row["f1_eq12_source"] = f1_eq12(metrics)
            row["num_test_examples"] = report.get("num_test_examples")
            row["params_m"] = (report.get("efficiency") or {}).get("params_m")
            row["selected_stage"] = (report.get("training") or {}).get("selected_stage")
            row.update(_statistics_columns(report))  # issue 19
            row["run_dir"] = str(Path(cell.cell_id) / f"seed{seed}")
            rows.append(row)
    return pd.DataFrame(rows)


def _statistics_columns(report: dict[str, Any]) -> dict[str, Any]:
    """Issue 19: a run's bootstrap interval bounds, calibration and patient-level scores, for results.csv."""
    row: dict[str, Any] = {}
    intervals = report.get("intervals") or {}
    for m in ("accuracy", "f1", "f1_eq12", "auroc"):
        if m in intervals:
            row[f"{m}_low"], row[f"{m}_high"] = intervals[m]["low"], intervals[m]["high"]
    if intervals:
        row["bootstrap_unit"] = (report.get("bootstrap") or {}).get("unit")
    before = (report.get("calibration") or {}).get("before") or {}
    row.update({k: before[k] for k in ("ece", "brier", "nll") if k in before})
    patient = report.get("patient_level") or {}
    for k in ("accuracy", "f1"):
        if k in (patient.get("metrics") or {}):
            row[f"patient_{k}"] = patient["metrics"][k]
    if patient.get("patient_recognition_rate"):
        row["patient_recognition_rate"] = patient["patient_recognition_rate"]["value"]
    for name, extra in (report.get("extra_tests") or {}).items():  # one column per shifted test set
        row[f"extra_{name}_f1"] = (extra.get("metrics") or {}).get("f1")
        found = (extra.get("intervals") or {}).get("f1") or {}
        row[f"extra_{name}_f1_low"], row[f"extra_{name}_f1_high"] = found.get("low"), found.get("high")
    stages = (report.get("training") or {}).get("stages") or []
    row["still_improving"] = any(s.get("still_improving") for s in stages)  # validation metric rising at the end
    row["validation_at_ceiling"] = any(isinstance(s.get("best_metric"), float) and s["best_metric"] >= 0.9999
                                       for s in stages)
    return row


def summarize(grid: Grid, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: its labels, finished seeds, mean and std (in %) of each metric, the paper's values."""
    metrics = [*TABLE_METRICS, "f1", *(["auroc"] if "auroc" in runs.columns else [])]
    rows = []
    for cell in grid.cells:
        mine = runs[runs["cell_id"] == cell.cell_id] if len(runs) else runs
        row: dict[str, Any] = {"cell_id": cell.cell_id, **cell.labels, "seeds": len(mine),
                               "seeds_total": len(grid.seeds)}
        for m in metrics:
            values = [100 * float(v) for v in mine[m]] if len(mine) and m in mine else []
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std(values)
        paper = paper_row(grid.paper_table, cell.value("backbone"), cell.recipe)
        for m in TABLE_METRICS:
            row[f"{m}_paper"] = paper.get(PAPER_KEYS[m]) if paper else None
        rows.append(row)
    return pd.DataFrame(rows)


def _notes(grid: Grid, runs: pd.DataFrame | None) -> list[str]:
    seeds = ", ".join(map(str, grid.seeds))
    notes = [f"Test-set metrics in %, macro-averaged over classes: mean ± sample standard deviation over the seeds "
             f"that finished (seeds {seeds}); a single seed shows its value alone. F1 Eq. 12 is the paper's F1, "
             "the harmonic mean of macro precision and macro recall; Macro-F1 is sklearn's mean of per-class F1."]
    if runs is not None and len(runs) and "f1_eq12_source" in runs:
        derived = int((runs["f1_eq12_source"] == "precision_recall").sum())
        fallback = int((runs["f1_eq12_source"] == "macro_f1").sum())
        if derived:
            notes.append(f"{derived} run(s) predate `f1_eq12` in test_results.json: their F1 Eq. 12 is computed "
                         "from their macro precision and recall.")
        if fallback:
            notes.append(f"{fallback} run(s) report neither `f1_eq12` nor precision and recall (e.g. multi-label): "
                         "their F1 Eq. 12 column shows their Macro-F1 instead.")
    if grid.paper_table is not None:
        table = load_paper_results()["tables"][grid.paper_table]
        notes.append(f"Paper columns: {table['source']} (cdtm_hf/paper/paper_results.json `{grid.paper_table}`); "
                     f"{MISSING} where the paper reports no value.")
    return notes


def _header(grid: Grid, summary: pd.DataFrame) -> tuple[list[str], bool]:
    pretrain_col = "backbone" in grid.axes  # the paper's Model / Pre-train columns
    header = [*grid.axes, "Seeds"]
    if pretrain_col:
        header.insert(list(grid.axes).index("backbone") + 1, "Pre-train")
    for m in TABLE_METRICS:
        header.append(f"{METRIC_HEADERS[m]} (%)")
        if grid.paper_table is not None:
            header.append(PAPER_HEADERS[m])
    header += [f"{METRIC_HEADERS[m]} (%)" for m in EXTRA_METRICS if f"{m}_mean" in summary.columns]
    return header, pretrain_col


def to_markdown(grid: Grid, summary: pd.DataFrame, runs: pd.DataFrame | None = None) -> str:
    """results.md: the paper's columns (Pre/Rec/Acc/F1 in %, mean ± std over seeds), paper values beside ours.

    Args:
        grid (`Grid`): the grid (its axes give the label columns; its paper table the paper columns).
        summary (`pd.DataFrame`): `summarize`'s output.
        runs (`pd.DataFrame`, *optional*): `collect_results`'s output, for the note on how F1 Eq. 12 was obtained.
    """
    header, pretrain_col = _header(grid, summary)
    rows = []
    for _, row in summary.iterrows():
        cells = [str(row[a]) for a in grid.axes] + [f"{int(row['seeds'])}/{int(row['seeds_total'])}"]
        if pretrain_col:
            preset = BACKBONE_PRESETS.get(grid.cell(row["cell_id"]).value("backbone"))
            cells.insert(list(grid.axes).index("backbone") + 1, preset.pretraining if preset else MISSING)
        for m in TABLE_METRICS:
            cells.append(format_mean_std(row[f"{m}_mean"], row[f"{m}_std"]))
            if grid.paper_table is not None:
                cells.append(format_number(row[f"{m}_paper"]))
        cells += [format_mean_std(row[f"{m}_mean"], row[f"{m}_std"]) for m in EXTRA_METRICS
                  if f"{m}_mean" in summary.columns]
        rows.append(cells)
    lines = [f"# {grid.name}", ""]
    if grid.description:
        lines += [str(grid.description).strip(), ""]
    lines += _notes(grid, runs)
    lines += ["", markdown_table(header, rows)]
    return "\n".join(lines) + "\n"


def cell_line(grid: Grid, cell: Cell, trained: Sequence[int]) -> str:
    """A log line for a cell: mean ± std of its finished seeds and the paper's values, e.g. after it ran."""
    reports = [r for r in (read_results(grid.run_dir(cell, s)) for s in grid.seeds) if r is not None]
    if not reports:
        return f"{cell.cell_id}: no results"
    parts = []
    for m in (*TABLE_METRICS, "auroc"):
        if m == "f1_eq12":
            values = [f1_eq12(r.get("metrics", {}))[0] for r in reports]
        elif m in reports[0].get("metrics", {}):
            values = [r["metrics"].get(m) for r in reports]
        else:
            continue
        mean, std = mean_std(100 * v for v in values if v is not None)
        parts.append(f"{METRIC_HEADERS[m]} {format_mean_std(mean, std)}")
    row = paper_row(grid.paper_table, cell.value("backbone"), cell.recipe)
    paper = ""
    if row:
        paper = " | " + ", ".join(f"{PAPER_HEADERS[m]} {format_number(row[PAPER_KEYS[m]])}"
                                        for m in TABLE_METRICS if PAPER_KEYS[m] in row)
    status = f"{len(reports)}/{len(grid.seeds)} seeds, {len(trained)} trained now"
    return f"{cell.cell_id}: {', '.join(parts)} ({status}){paper}"


def write_tables(grid: Grid) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Path]]:
    """Write results.csv (one row per cell x seed) and results.md (one row per cell) from the results on disk.

    Returns:
        `tuple`: (the runs, the per-cell summary, {"csv": path, "markdown": path}).
    """
    runs = collect_results(grid)
    summary = summarize(grid, runs)
    grid.output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": grid.output_dir / "results.csv", "markdown": grid.output_dir / "results.md"}
    runs.to_csv(paths["csv"], index=False)
    from .comparisons import comparison_lines, paired_comparisons, statistics_sections, write_forest_plots

    comparisons = paired_comparisons(grid)  # issue 19: paired differences, intervals, per class, forest plots
    for line in comparison_lines(comparisons):
        logger.info("Paired comparison: %s", line)
    sections = statistics_sections(grid, runs, comparisons)
    paths["markdown"].write_text(to_markdown(grid, summary, runs) + "\n".join(sections))
    paths.update(write_forest_plots(grid, runs, comparisons))
    return runs, summary, paths
