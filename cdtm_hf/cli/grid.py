"""`cdtm-grid`: run an experiment grid (cells x seeds) through `run_finetuning`, resumable, and write its tables.

    cdtm-grid examples/grids/cdtm_table8.yaml [--set num_train_epochs=1] [--dry_run] [--table_only]
    python examples/run_grid.py examples/grids/cdtm_table8.yaml        # the same
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from ..logging import command_line_logging
from .boundary import command_line, one_line, one_line_errors

__all__ = ["build_parser", "main", "parse_set"]


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """`--set key=value` items -> {key: value}; the value is typed by the field, as `run_sft.py --key value` is.

    `null` and `~` give None (e.g. `--set data_dir=null`: BreakHis then downloads the public archive).
    """
    from ..experiments.spec import GridError

    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GridError(f"--set {item!r}: expected key=value, e.g. --set num_train_epochs=1")
        overrides[key.strip()] = None if value.strip() in ("null", "~") else value
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdtm-grid",
        description="Run an experiment grid (cells x seeds) through run_finetuning and write results.csv/results.md."
        " See docs/experiments.md.",
    )
    parser.add_argument("grid", help="grid file (.yaml, .yml or .json)")
    parser.add_argument("--output_dir", help="override the grid's output_dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="set a field in every cell, after the axes (repeatable), e.g. --set num_train_epochs=1")
    parser.add_argument("--max_cells", type=int, help="train at most this many unfinished cells, then stop")
    parser.add_argument("--only", nargs="+", metavar="PATTERN", help="run only cells whose id matches (shell pattern)")
    parser.add_argument("--keep_going", action="store_true", help="log a failed run and go on with the next")
    parser.add_argument("--dry_run", action="store_true", help="validate, list the cells and their status, run nothing")
    parser.add_argument("--table_only", action="store_true", help="rewrite results.csv/results.md from finished runs")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return one_line_errors(parser)


def _dry_run(grid) -> None:
    from ..experiments.runner import check_recorded_cells, run_status

    print(f"grid {grid.name}: {len(grid.cells)} cells x {len(grid.seeds)} seeds -> {grid.output_dir}")
    for cell in grid.cells:
        status = ", ".join(f"seed{s} {run_status(grid.run_dir(cell, s))}" for s in grid.seeds)
        print(f"  {cell.cell_id} [{cell.recipe}]: {status}")
    check_recorded_cells(grid)


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    """The `cdtm-grid` command: 0 when every run finished, 1 when a run failed (`--keep_going`), 2 for a bad grid."""
    args = build_parser().parse_args(argv)
    command_line_logging(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..experiments.grid import load_grid
    from ..experiments.spec import GridError
    from ..experiments.runner import run_grid
    from ..experiments.tables import write_tables

    try:
        grid = load_grid(args.grid, output_dir=args.output_dir, overrides=parse_set(args.overrides),
                         check_paths=not args.table_only)
        if args.dry_run:
            _dry_run(grid)
            return 0
        if args.table_only:
            runs, _, paths = write_tables(grid)
            print(f"results: {paths['csv']}, {paths['markdown']}")
            _print_comparisons(paths)  # issue 19
            _print_training_flags(runs)  # issue 19 item 9
            return 0
        run = run_grid(grid, max_cells=args.max_cells, only=args.only, keep_going=args.keep_going,
                       progress=not args.no_progress)
    except GridError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    if run.paths:
        print(f"results: {run.paths['csv']}, {run.paths['markdown']}")
        _print_comparisons(run.paths)  # issue 19
        _print_training_flags(run.runs)  # issue 19 item 9
    return 1 if run.failed else 0


def _print_comparisons(paths) -> None:
    """Issue 19: the grid's paired comparisons, one line each (also in results.md)."""
    if "comparisons" not in paths:
        return
    import json

    from ..experiments.comparisons import comparison_lines

    print("paired comparisons (A minus B, same test images, 95 % paired-bootstrap intervals):")
    for line in comparison_lines(json.loads(paths["comparisons"].read_text())):
        print(f"  {line}")


def _print_training_flags(runs) -> None:
    """Issue 19 item 9: the runs flagged in results.md's *Training flags* (still rising at the end, or at the ceiling)."""
    from ..experiments.comparisons import training_flags

    for text, flagged in training_flags(runs):
        print(f"training flag: {text}: {flagged}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
