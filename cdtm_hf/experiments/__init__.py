"""Experiment grids: the cartesian product of named axes x seeds, each run through `run_finetuning`, one table.

A grid file (YAML or JSON) names a base configuration, the axes whose product gives the cells, and the seeds::

    name: cdtm_table8
    paper_table: table8                  # rows of cdtm_hf/paper_results.json to print beside ours
    base: {dataset: breakhis, dataset_config: malignant_200x, split_strategy: paper, image_size: 224}
    axes:
      backbone: [convnextb.laion2b, vitb16.laion2b]
      recipe: [scratch, lp, lp_cdtm, fft, sft_cdtm]
    seeds: [0, 1, 2]

Which file to open:

- `grid.py`: the file format, `load_grid`, `Grid`/`Cell`, `RECIPE_FIELDS`, `GridError`.
- `fields.py`: the fields a grid may set and how their values are typed (`transformers.HfArgumentParser`).
- `checks.py`: backbone, choice, data set and path checks before anything trains.
- `runner.py`: `run_grid` (resume, `accelerate.PartialState`) and the `cdtm-grid` command line (`main`).
- `tables.py`: `results.csv` and `results.md` (through `cdtm_hf.reporting`), paper values beside ours.

See docs/experiments.md.
"""

from __future__ import annotations

from ..paper import load_paper_results, paper_row
from .checks import check_backbone
from .fields import field_names
from .grid import GRID_KEYS, RECIPE_FIELDS, Cell, Grid, GridError, canonical_recipe, load_grid
from .runner import GridRun, check_recorded_cells, has_checkpoint, main, run_grid, run_status
from .tables import TABLE_METRICS, collect_results, summarize, to_markdown, write_tables

__all__ = [
    "GRID_KEYS",
    "RECIPE_FIELDS",
    "TABLE_METRICS",
    "Cell",
    "Grid",
    "GridError",
    "GridRun",
    "canonical_recipe",
    "check_backbone",
    "check_recorded_cells",
    "collect_results",
    "field_names",
    "has_checkpoint",
    "load_grid",
    "load_paper_results",
    "main",
    "paper_row",
    "run_grid",
    "run_status",
    "summarize",
    "to_markdown",
    "write_tables",
]
