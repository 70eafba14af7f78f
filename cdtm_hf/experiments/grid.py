"""Grid files: a base configuration, the axes whose cartesian product gives the cells, and the seeds.

`load_grid` reads a YAML (or JSON) file, checks all of it before anything trains and raises one `GridError` that
lists every problem by its place in the file (`axes.backbon`, `base.learning_rat`, ...). Field values are typed by
`transformers.HfArgumentParser` (see `fields.py`); the run arguments of a cell come from its `parse_dict`.
See docs/experiments.md for the format.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..training.run_arguments import redact_secrets
from .checks import check_cell_values
from .fields import build_arguments
from .reading import (
    build_cells,
    read_axes,
    read_comparisons,
    read_head,
    read_overrides,
    read_recipes,
    read_fields,
    read_seeds,
    read_source,
    safe_id,
)
from .spec import Cell, Problems

__all__ = ["Grid", "load_grid"]


@dataclass
class Grid:
    """A validated grid: cells x seeds, where they run, and which paper table they are compared with."""

    name: str
    cells: list[Cell]
    seeds: list[int]
    output_dir: Path
    axes: dict[str, list[str]]  # axis -> labels
    paper_table: str | None = None
    description: str | None = None
    seed_fields: tuple[str, ...] = ("seed",)
    source: str | None = None
    # issue 19: the paired comparisons (axis, label A, label B) of the grid's `compare` entry
    comparisons: list[tuple[str, str, str]] | None = None

    def run_dir(self, cell: Cell, seed: int) -> Path:
        return self.output_dir / cell.cell_id / f"seed{seed}"

    def cell(self, cell_id: str) -> Cell:
        for cell in self.cells:
            if cell.cell_id == cell_id:
                return cell
        raise KeyError(f"no cell {cell_id!r} in grid {self.name!r}; cells: {', '.join(c.cell_id for c in self.cells)}")

    def arguments(self, cell: Cell, seed: int, resume: bool = False) -> tuple[Any, ...]:
        """The argument dataclasses of one run (`fields.ARGUMENT_CLASSES`), in `run_finetuning`'s order.

        Args:
            cell (`Cell`): the cell.
            seed (`int`): the seed, given to every field of `seed_fields`.
            resume (`bool`, *optional*, defaults to `False`): continue from the run's last checkpoint; otherwise
                the run starts afresh, replacing what an interrupted run without checkpoints left in its folder.
        """
        return build_arguments(self.argument_values(cell, seed, resume))

    def argument_values(self, cell: Cell, seed: int, resume: bool = False) -> dict[str, Any]:
        """The field values of one run: the cell's, its seed, its output folder and how it starts (see
        `arguments`)."""
        values = dict(cell.fields)
        values.update({name: seed for name in self.seed_fields})
        values["output_dir"] = str(self.run_dir(cell, seed))
        # issue 19: one frozen-feature cache for the whole grid (keyed by data and weights), not one per run
        values.setdefault("feature_cache_dir", str(self.output_dir / "feature_cache"))
        if resume:
            values["resume_from_checkpoint"] = True
        else:
            values["overwrite_output_dir"] = True  # never a finished run: run_grid skips those
        return values

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "source": self.source,
            "paper_table": self.paper_table, "seeds": self.seeds, "seed_fields": list(self.seed_fields),
            "axes": self.axes, "output_dir": str(self.output_dir),
            "cells": [{"cell_id": c.cell_id, "labels": c.labels, "fields": redact_secrets(c.fields)}
                      for c in self.cells],  # a token set in the grid file is not written
            "comparisons": [list(c) for c in self.comparisons or []],
        }


def load_grid(
    source: str | os.PathLike | Mapping[str, Any],
    *,
    output_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    check_paths: bool = True,
) -> Grid:
    """Read and validate a grid file (or an already parsed mapping) before anything trains.

    Args:
        source (`str | os.PathLike | Mapping`): a `.yaml`/`.yml`/`.json` grid file, or its content.
        output_dir (`str | os.PathLike`, *optional*): replaces the file's `output_dir`.
        overrides (`Mapping`, *optional*): fields set in every cell after the axes (the command line's `--set`).
        check_paths (`bool`, *optional*, defaults to `True`): whether every `data_dir` must exist.

    Returns:
        `Grid`: the cells, seeds and output folder.

    Raises:
        `GridError`: one message listing every problem of the file, each by its place (`base.learning_rat`, ...).
    """
    raw, path, label = read_source(source)
    problems = Problems()
    name, paper_table = read_head(raw, path, problems)
    recipes = read_recipes(raw, problems)
    base = read_fields(raw.get("base"), "base", problems, recipes)
    axes = read_axes(raw, recipes, problems)
    seeds, seed_fields = read_seeds(raw, problems)
    out = output_dir if output_dir is not None else raw.get("output_dir") or os.path.join("grids", safe_id(name))
    if not isinstance(out, (str, os.PathLike)):
        problems.add("output_dir", f"must be a path, got {out!r}")
        out = os.path.join("grids", safe_id(name))
    over = read_overrides(overrides, axes, problems)
    cells = build_cells(base, axes, over, seed_fields, problems)
    grid = Grid(
        name=name, cells=cells, seeds=seeds, output_dir=Path(out),
        axes={axis: [e[0] for e in entries] for axis, entries in axes}, paper_table=paper_table,
        description=raw.get("description"), seed_fields=seed_fields, source=str(path) if path else None,
    )
    for cell in cells:  # the argument dataclasses' own checks, each problem at the place that set the field
        def where(name: str, c: Cell = cell) -> str:
            return c.sources.get(name, f"base.{name}") if name else f"cell {c.cell_id}"

        check_cell_values(grid.argument_values(cell, grid.seeds[0]), where, problems.add, check_paths)
    root = grid.output_dir.resolve()
    for cell in cells:  # issue 17: every run folder lies inside output_dir
        run_dir = grid.run_dir(cell, grid.seeds[0] if grid.seeds else 0).resolve()
        if root not in run_dir.parents:
            problems.add("axes", f"cell {cell.cell_id!r} would run in {run_dir}, outside output_dir {root}; rename "
                         "its labels")
    grid.comparisons = read_comparisons(raw, grid.axes, problems)  # issue 19
    problems.raise_if_any(label)
    return grid


def __getattr__(name: str):  # the names that moved out of this module in 0.3 (cdtm_hf._compat)
    from .._compat import removed_attribute

    return removed_attribute(__name__, name)
