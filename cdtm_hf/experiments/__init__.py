"""Experiment grids: the cartesian product of named axes x seeds, each run through `run_finetuning`, one table.

A grid file (YAML or JSON) names a base configuration, the axes whose product gives the cells, and the seeds::

    name: cdtm_table8
    paper_table: table8                  # rows of cdtm_hf/paper/paper_results.json to print beside ours
    base: {dataset: breakhis, dataset_config: malignant_200x, split_strategy: paper, image_size: 224}
    axes:
      backbone: [convnextb.laion2b, vitb16.laion2b]
      recipe: [scratch, lp, lp_cdtm, fft, sft_cdtm]
    seeds: [0, 1, 2]

Which file to open:

- `spec.py`: the vocabulary of a grid file (`GRID_KEYS`, `RECIPE_FIELDS`), `Cell`, `GridError`.
- `reading.py`: reading a file's parts into cells, every problem with its place.
- `grid.py`: `Grid` and `load_grid`.
- `fields.py`: the fields a grid may set and how their values are typed (`transformers.HfArgumentParser`).
- `checks.py`: a cell's argument dataclasses' own checks and its data folder, before anything trains.
- `runner.py`: `run_grid` (resume, `accelerate.PartialState`); its command line is `cdtm_hf.cli.grid` (`cdtm-grid`).
- `tables.py`: `results.csv` and `results.md` (through `cdtm_hf.evaluation.reporting`), paper values beside ours.

See docs/experiments.md.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["field_names"], ".fields"),
    **dict.fromkeys(["Grid", "load_grid"], ".grid"),
    **dict.fromkeys(["GridRun", "check_recorded_cells", "has_checkpoint", "run_grid", "run_status"], ".runner"),
    **dict.fromkeys(["GRID_KEYS", "RECIPE_FIELDS", "Cell", "GridError", "canonical_recipe"], ".spec"),
    **dict.fromkeys(["TABLE_METRICS", "collect_results", "summarize", "to_markdown", "write_tables"], ".tables"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
