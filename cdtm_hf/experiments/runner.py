"""Running a grid: every cell x seed through `run_finetuning`, resumable, then the tables (`cdtm-grid` is
`cdtm_hf.cli.grid`).

A run whose `test_results.json` exists is skipped; one with a `checkpoint-*` folder but no results continues from
it (`resume_from_checkpoint=True`); every other run starts from the beginning. Under `accelerate launch` every
process walks the grid in step and `accelerate.PartialState` decides which one writes the grid's own files.

    python examples/run_grid.py examples/grids/cdtm_table8.yaml     # or: cdtm-grid examples/grids/...
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from accelerate import PartialState

from .. import run as _run
from ..training.run_arguments import SECRET_FIELDS, redact_secrets
from .grid import Grid, load_grid
from .spec import Cell, GridError, Problems
from .tables import cell_line, read_results, write_tables

logger = logging.getLogger(__name__)

CELL_FILE = "cell.json"
#: Fields that may change between invocations of one grid without invalidating finished runs.
NON_RESULT_FIELDS = frozenset({
    "data_dir", "cache_dir", "feature_cache_dir", "disable_tqdm", "report_to", "logging_steps", "logging_strategy",
    "logging_dir", "logging_first_step", "log_level", "dataloader_num_workers", "dataloader_pin_memory",
    "dataloader_persistent_workers", "per_device_eval_batch_size", "save_total_limit", "push_to_hub", "hub_model_id",
    "hub_private_repo", "hub_strategy", "explain", "keep_checkpoints", "verify_images",
    *SECRET_FIELDS,  # a token changes no result (and is recorded as "<TOKEN>")
})
_CHECKPOINT = re.compile(r"checkpoint-\d+")


def has_checkpoint(run_dir: Path) -> bool:
    """A `checkpoint-<step>` folder in the run (single-stage modes) or in one of its stages (SFT)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    for folder in (run_dir, *(p for p in run_dir.glob("stage*") if p.is_dir())):
        if any(p.is_dir() and _CHECKPOINT.fullmatch(p.name) for p in folder.iterdir()):
            return True
    return False


def run_status(run_dir: Path) -> str:
    """'done' (test_results.json exists), 'resume' (checkpoints, no results) or 'new'."""
    if read_results(Path(run_dir)) is not None:
        return "done"
    return "resume" if has_checkpoint(Path(run_dir)) else "new"


def finish_run(run_dir: Path, model_args, data_args, training_args, run_args, data=None, **changes: Any) -> dict:
    """One sub-run of a run (a cross-validation fold, a learning rate of a sweep) in `run_dir`: trained and tested
    unless it is done, resumed from its last checkpoint if it has one; returns its `test_results.json`.

    `changes` are `training_args` fields set for this sub-run (e.g. `learning_rate`); `data`, the fold's
    `(DatasetDict, manifest)` (`run_finetuning`'s `data`).
    """
    import copy
    import dataclasses

    from ..run import run_finetuning

    status = run_status(run_dir)
    if status != "done":
        args = copy.copy(training_args)
        for name, value in {**changes, "output_dir": str(run_dir)}.items():
            setattr(args, name, value)
        args.resume_from_checkpoint = True if status == "resume" else None
        run_finetuning(model_args, data_args, args, dataclasses.replace(run_args, overwrite_output_dir=status == "new"),
                       data=data)
    return json.loads((Path(run_dir) / "test_results.json").read_text())


def _result_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that decide a run's results, as JSON would store them."""
    return json.loads(json.dumps({k: v for k, v in fields.items() if k not in NON_RESULT_FIELDS}, default=str))


def check_recorded_cells(grid: Grid) -> None:
    """Refuse to mix runs of a changed cell into one table: every cell folder records the fields it ran with.

    Raises:
        `GridError`: naming every cell whose recorded fields differ, and the fields that changed.
    """
    problems = Problems()
    for cell in grid.cells:
        path = grid.output_dir / cell.cell_id / CELL_FILE
        if not path.is_file():
            continue
        recorded = _result_fields(json.loads(path.read_text()).get("fields", {}))
        current = _result_fields(cell.fields)
        unset = object()
        changed = sorted(k for k in set(recorded) | set(current) if recorded.get(k, unset) != current.get(k, unset))
        if changed:
            diff = ", ".join(f"{k}: {recorded.get(k, '<unset>')!r} -> {current.get(k, '<unset>')!r}" for k in changed)
            problems.add(f"cell {cell.cell_id}", f"its runs in {path.parent} used other settings ({diff}); delete "
                         "that folder or choose another output_dir")
    problems.raise_if_any(f"grid {grid.name!r} in {str(grid.output_dir)!r}")


def _write_cell_file(grid: Grid, cell: Cell) -> None:
    folder = grid.output_dir / cell.cell_id
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"grid": grid.name, "cell_id": cell.cell_id, "labels": cell.labels, "recipe": cell.recipe,
               "fields": redact_secrets(cell.fields)}
    (folder / CELL_FILE).write_text(json.dumps(payload, indent=2, default=str) + "\n")


@dataclass
class GridRun:
    """What `run_grid` did: the runs it trained, resumed, skipped or lost, and the tables it wrote."""

    grid: Grid
    ran: list[tuple[str, int]] = field(default_factory=list)  # (cell_id, seed) trained in this call
    resumed: list[tuple[str, int]] = field(default_factory=list)  # the subset of `ran` resumed from a checkpoint
    skipped: list[tuple[str, int]] = field(default_factory=list)  # finished before this call
    failed: list[tuple[str, int, str]] = field(default_factory=list)  # (cell_id, seed, error) with keep_going
    stopped_early: bool = False  # max_cells reached with cells left
    runs: pd.DataFrame | None = None
    cells: pd.DataFrame | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.runs is not None and len(self.runs) == len(self.grid.cells) * len(self.grid.seeds)


def _select(grid: Grid, only: Sequence[str] | None) -> list[Cell]:
    if not only:
        return grid.cells
    unmatched = [p for p in only if not any(fnmatch.fnmatchcase(c.cell_id, p) for c in grid.cells)]
    if unmatched:
        raise GridError(f"--only {', '.join(map(repr, unmatched))} matches no cell of grid {grid.name!r}; cells: "
                        f"{', '.join(c.cell_id for c in grid.cells)}")
    return [c for c in grid.cells if any(fnmatch.fnmatchcase(c.cell_id, p) for p in only)]


def _run_one(grid: Grid, cell: Cell, seed: int, resume: bool, result: GridRun, keep_going: bool,
             runner: Callable[..., Any] | None) -> None:
    """One cell x seed; with `keep_going` a failure is recorded in `error.txt` instead of raised."""
    run_dir = grid.run_dir(cell, seed)
    if resume:
        logger.info("Resuming %s seed %d from its last checkpoint", cell.cell_id, seed)
    (run_dir / "error.txt").unlink(missing_ok=True)
    try:
        arguments = grid.arguments(cell, seed, resume=resume)
        if runner is None and getattr(arguments[-1], "cv_folds", 0):  # issue 19: a cross-validated cell
            from .cross_validation import run_cross_validation

            run_cross_validation(*arguments)
        elif runner is None and getattr(arguments[-1], "lr_sweep", None):  # issue 19: lr chosen on validation
            from .lr_sweep import run_lr_sweep

            run_lr_sweep(*arguments)
        else:
            (runner or _run.run_finetuning)(*arguments)
    except Exception as err:
        if not keep_going:
            raise
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        result.failed.append((cell.cell_id, seed, f"{type(err).__name__}: {err}"))
        logger.error("%s seed %d failed (%s: %s); see %s", cell.cell_id, seed, type(err).__name__, err,
                     run_dir / "error.txt")
        return
    result.ran.append((cell.cell_id, seed))
    if resume:
        result.resumed.append((cell.cell_id, seed))


def _walk(grid: Grid, cells: list[Cell], result: GridRun, main: bool, options: dict[str, Any]) -> None:
    """Run the unfinished seeds of each cell in grid order, stopping after `max_cells` started cells."""
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    max_cells = options["max_cells"]
    started = 0
    bar = tqdm(total=len(cells), desc=f"grid {grid.name}", unit="cell", disable=not (options["progress"] and main))
    try:
        with logging_redirect_tqdm():
            for position, cell in enumerate(cells, 1):
                statuses = {seed: run_status(grid.run_dir(cell, seed)) for seed in grid.seeds}
                todo = [s for s in grid.seeds if statuses[s] != "done"]
                result.skipped += [(cell.cell_id, s) for s in grid.seeds if statuses[s] == "done"]
                if todo and max_cells is not None and started >= max_cells:
                    result.stopped_early = True
                    logger.info("Stopping after %d cell(s) (max_cells); run the grid again to continue", started)
                    break
                if todo:
                    started += 1
                    if main:
                        _write_cell_file(grid, cell)
                for seed in todo:
                    bar.set_postfix_str(f"{cell.cell_id} seed {seed}")
                    _run_one(grid, cell, seed, statuses[seed] == "resume", result, options["keep_going"],
                             options["runner"])
                bar.update(1)
                if main:
                    logger.info("[%d/%d] %s", position, len(cells), cell_line(grid, cell, todo))
    finally:
        bar.close()


def run_grid(
    grid: Grid | str | os.PathLike | Mapping[str, Any],
    *,
    output_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    max_cells: int | None = None,
    only: Sequence[str] | None = None,
    keep_going: bool = False,
    progress: bool = True,
    runner: Callable[..., dict[str, Any]] | None = None,
) -> GridRun:
    """Run every cell x seed of `grid` that has no results yet, then write results.csv and results.md.

    The tables are written even when a run fails or is interrupted, from every result on disk.

    Args:
        grid (`Grid | str | os.PathLike | Mapping`): a loaded grid, or what `load_grid` reads.
        output_dir (`str | os.PathLike`, *optional*): for a grid still to load: replaces its `output_dir`.
        overrides (`Mapping`, *optional*): for a grid still to load: fields set in every cell (`--set`).
        max_cells (`int`, *optional*): train at most this many unfinished cells in this call, then stop.
        only (`Sequence[str]`, *optional*): run only the cells whose id matches one of these shell patterns.
        keep_going (`bool`, *optional*, defaults to `False`): log a failed run (and write `error.txt` beside it)
            and go on, instead of raising.
        progress (`bool`, *optional*, defaults to `True`): show a progress bar over the cells.
        runner (`Callable`, *optional*): replaces `cdtm_hf.run.run_finetuning`.

    Returns:
        `GridRun`: what ran, resumed, was skipped or failed, and the tables.
    """
    if not isinstance(grid, Grid):
        grid = load_grid(grid, output_dir=output_dir, overrides=overrides)
    elif output_dir is not None or overrides:
        raise ValueError("pass output_dir/overrides to load_grid, not with an already loaded Grid")
    if max_cells is not None and max_cells < 0:
        raise ValueError(f"max_cells must be >= 0, got {max_cells}")
    cells = _select(grid, only)
    check_recorded_cells(grid)

    result = GridRun(grid)
    main = PartialState().is_main_process
    if main:
        grid.output_dir.mkdir(parents=True, exist_ok=True)
        (grid.output_dir / "grid.json").write_text(json.dumps(grid.to_dict(), indent=2, default=str) + "\n")
    options = {"max_cells": max_cells, "keep_going": keep_going, "progress": progress, "runner": runner}
    try:
        _walk(grid, cells, result, main, options)
    finally:
        if main:
            result.runs, result.cells, result.paths = write_tables(grid)
    if result.failed:
        logger.error("%d run(s) failed: %s", len(result.failed),
                     "; ".join(f"{c} seed {s}: {e}" for c, s, e in result.failed))
    done = 0 if result.runs is None else len(result.runs)
    logger.info("Grid %s: %d/%d runs finished (%d trained now, %d resumed, %d skipped); table: %s", grid.name,
                done, len(grid.cells) * len(grid.seeds), len(result.ran), len(result.resumed), len(result.skipped),
                result.paths.get("markdown", "-"))
    return result


def __getattr__(name: str):  # the names that moved out of this module in 0.3 (cdtm_hf._compat)
    from .._compat import removed_attribute

    return removed_attribute(__name__, name)
