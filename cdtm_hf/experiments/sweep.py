"""What a grid table must not hide (issue 19, item 9): a learning-rate sweep per recipe chosen on validation, and a
flag on a run whose validation metric was still rising at its last epoch (an under-trained baseline).

A cell with `lr_sweep: [1e-4, 1e-3, 1e-2]` (on its recipe or on the grid) runs once per learning rate in
`<run>/lr_sweep/lr<value>/`, each a resumable run of its own (on the grid's shared feature cache, a frozen backbone is
run once for all of them). The run with the best *validation* metric of its kept checkpoint is moved into `<run>/`,
its `test_results.json` gains an `lr_sweep` record (the chosen lr, every candidate's validation score), and
`lr_sweep.json` holds the same. The test split plays no part in the choice.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers.trainer_utils import get_last_checkpoint

from .fields import build_arguments

logger = logging.getLogger(__name__)

__all__ = ["LR_SWEEP_FILE", "assign_lr_sweeps", "cell_flag", "check_lr_sweep", "run_flags", "run_lr_sweep",
           "still_rising", "sweep_dir", "training_notes", "validation_score"]

LR_SWEEP_FILE = "lr_sweep.json"
SWEEP_FOLDER = "lr_sweep"
RESULTS_FILE = "test_results.json"


def check_lr_sweep(value: Any, where: str, add: Callable[[str, str], None]) -> list[float] | None:
    """The learning rates of an `lr_sweep` entry, or None (each problem reported at `where`)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        rates = [float(v) for v in values]
    except (TypeError, ValueError):
        add(where, f"must be a list of learning rates, e.g. [1e-4, 1e-3, 1e-2]; got {value!r}")
        return None
    if not rates or not all(math.isfinite(r) and r > 0 for r in rates):
        add(where, f"must be a non-empty list of learning rates > 0, got {value!r}")
        return None
    if len(set(rates)) != len(rates):
        add(where, f"repeats a learning rate: {value!r}")
        return None
    return rates


def sweep_dir(run_dir: Path, lr: float) -> Path:
    """Where the sweep's run at learning rate `lr` goes, e.g. `<run>/lr_sweep/lr0.001`."""
    return Path(run_dir) / SWEEP_FOLDER / f"lr{lr:g}"


def validation_score(report: Mapping[str, Any]) -> float | None:
    """The best validation metric of the kept checkpoint, from the run's training record (None if not recorded)."""
    training = report.get("training") or {}
    stages = training.get("stages") or []
    kept = next((s for s in stages if s.get("stage") == training.get("selected_stage")), stages[-1] if stages else {})
    value = kept.get("best_metric")
    return float(value) if isinstance(value, (int, float)) else None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def run_lr_sweep(values: Mapping[str, Any], rates: Sequence[float], run: Callable[..., Any],
                 status: Callable[[Path], str]) -> dict[str, Any]:
    """Run one grid run once per learning rate, keep the best on validation in `values["output_dir"]`.

    Args:
        values (`Mapping`): the run's field values (`Grid.argument_values`); `output_dir` is the run folder.
        rates (`Sequence[float]`): the learning rates.
        run (`Callable`): `run_finetuning`'s signature.
        status (`Callable`): `runner.run_status` ('done', 'resume' or 'new' for a folder).

    Returns:
        `dict`: the `lr_sweep` record (metric, greater_is_better, scores by lr, chosen lr).
    """
    run_dir = Path(values["output_dir"])
    scores: dict[str, float | None] = {}
    greater, metric = True, None
    for lr in rates:
        folder = sweep_dir(run_dir, lr)
        state = status(folder)
        candidate = {k: v for k, v in values.items() if k not in ("resume_from_checkpoint", "overwrite_output_dir")}
        candidate.update(output_dir=str(folder), learning_rate=lr)
        candidate["resume_from_checkpoint" if state == "resume" else "overwrite_output_dir"] = True
        args = build_arguments(candidate)
        greater, metric = bool(args[2].greater_is_better), args[2].metric_for_best_model
        if state != "done":
            logger.info("lr sweep %s: learning rate %g", run_dir, lr)
            run(*args)
        scores[f"{lr:g}"] = validation_score(_read(folder / RESULTS_FILE) or {})
    ranked = [(s, lr) for lr, s in scores.items() if s is not None]
    if not ranked:
        raise RuntimeError(f"lr sweep in {run_dir}: no candidate recorded a validation {metric}; see its runs")
    best = max(ranked) if greater else min(ranked)
    chosen = next(lr for s, lr in ranked if s == best[0])  # the first (smallest listed) of tied rates
    record = {"metric": metric, "greater_is_better": greater, "scores": scores, "chosen": float(chosen),
              "chosen_at_edge": float(chosen) in (min(rates), max(rates)) and len(rates) > 1}
    _adopt(run_dir, sweep_dir(run_dir, float(chosen)), record)
    logger.info("lr sweep %s: chose lr %s on validation %s (%s)", run_dir, chosen, metric,
                ", ".join(f"{lr}: {s:.4f}" if s is not None else f"{lr}: -" for lr, s in scores.items()))
    return record


def _adopt(run_dir: Path, chosen: Path, record: dict[str, Any]) -> None:
    """Move the chosen candidate's files into the run folder; its test_results.json last (it marks the run done)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LR_SWEEP_FILE).write_text(json.dumps(record, indent=2) + "\n")
    for entry in sorted(chosen.iterdir(), key=lambda p: p.name == RESULTS_FILE):
        target = run_dir / entry.name
        if entry.name == RESULTS_FILE:
            report = json.loads(entry.read_text())
            report["lr_sweep"] = record
            tmp = run_dir / f".{RESULTS_FILE}.tmp"
            tmp.write_text(json.dumps(report, indent=2, default=str))
            os.replace(tmp, target)
            entry.unlink()
        elif not target.exists():
            os.replace(entry, target)


def still_rising(run_dir: Path, report: Mapping[str, Any]) -> bool | None:
    """Whether the last stage's validation metric rose at its last evaluation to a new best (None if unknown).

    Read from the `trainer_state.json` of that stage's last checkpoint (the Trainer's own log of every evaluation).
    """
    training = report.get("training") or {}
    metric = training.get("metric_for_best_model") or "f1"
    key = metric if metric.startswith("eval_") else f"eval_{metric}"
    stages = training.get("stages") or []
    folder = Path(run_dir) / ("stage2" if len(stages) > 1 else "")
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    state = _read(Path(last) / "trainer_state.json") if last else None
    if not state or key == "eval_loss":
        return None
    evals = [e[key] for e in state.get("log_history", []) if key in e]
    if len(evals) < 2:
        return None
    return evals[-1] > max(evals[:-1])


def assign_lr_sweeps(cells: Sequence[Any], grid_sweep: Any, problems: Any) -> None:
    """Give each cell its `lr_sweep`: its recipe's (carried in its fields), else the grid's; check the grid's."""
    default = check_lr_sweep(grid_sweep, "lr_sweep", problems.add) if grid_sweep is not None else None
    for cell in cells:
        own = cell.fields.pop("lr_sweep", None)
        cell.sources.pop("lr_sweep", None)
        cell.lr_sweep = own or default
        where = cell.sources.get("learning_rate", "")
        if cell.lr_sweep and where.startswith("axes.") and "(" not in where:
            problems.add(where, "an axis sets learning_rate while an lr_sweep applies to this cell: use one of them")


def _recipe_name(recipe: str) -> str:
    """'lp_cdtm' -> 'LP+CDTM', as the papers write the recipes ('lp_random_init' -> 'LP (random init)')."""
    core, random_init = recipe.removesuffix("_random_init"), recipe.endswith("_random_init")
    return "+".join(part.upper() for part in core.split("_")) + (" (random init)" if random_init else "")


def run_flags(run_dir: Path, report: Mapping[str, Any]) -> dict[str, Any]:
    """The columns results.csv gains per run: `val_still_rising`, and the sweep's `lr_chosen` and `lr_scores`."""
    sweep = report.get("lr_sweep") or {}
    return {"val_still_rising": still_rising(run_dir, report), "lr_chosen": sweep.get("chosen"),
            "lr_scores": json.dumps(sweep["scores"]) if sweep.get("scores") else None}


def training_notes(cells: Sequence[Any], runs: Any) -> list[str]:
    """results.md's notes: under-trained runs (validation still rising at the last epoch) and each sweep's choice."""
    if runs is None or not len(runs) or "val_still_rising" not in runs:
        return []
    notes = []
    for cell in cells:
        mine = runs[runs["cell_id"] == cell.cell_id]
        rising = [int(s) for s, r in zip(mine["seed"], mine["val_still_rising"]) if r is True or r == 1.0]
        if rising:
            notes.append(f"**{cell.cell_id}: {_recipe_name(cell.recipe)} may be under-trained**: val "
                         f"{cell.value('metric_for_best_model')} still rising at the last epoch (seed(s) "
                         f"{', '.join(map(str, rising))}); give it more epochs or another learning rate before "
                         "comparing it.")
        for seed, lr, scores in zip(mine["seed"], mine["lr_chosen"], mine["lr_scores"]):
            if isinstance(scores, str):
                tried = ", ".join(f"{k}: {v:.4f}" if v is not None else f"{k}: -"
                                  for k, v in json.loads(scores).items())
                notes.append(f"{cell.cell_id} seed {int(seed)}: learning rate {lr:g} chosen on validation "
                             f"{cell.value('metric_for_best_model')} (tried {tried}).")
    return notes


def cell_flag(cell: Any, reports: Sequence[tuple[Path, Mapping[str, Any]]]) -> str:
    """The printed summary's flag for a cell: '' or ' [LP may be under-trained: ...]' and the chosen lr."""
    parts = []
    if any(still_rising(d, r) for d, r in reports):
        parts.append(f"{_recipe_name(cell.recipe)} may be under-trained: val {cell.value('metric_for_best_model')} "
                     "still rising at the last epoch")
    chosen = sorted({(r.get("lr_sweep") or {}).get("chosen") for _, r in reports} - {None})
    if chosen:
        parts.append(f"lr {', '.join(f'{c:g}' for c in chosen)} chosen on validation")
    return f" [{'; '.join(parts)}]" if parts else ""
