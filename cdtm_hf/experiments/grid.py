"""Grid files: a base configuration, the axes whose cartesian product gives the cells, and the seeds.

`load_grid` reads a YAML (or JSON) file, checks all of it before anything trains and raises one `GridError` that
lists every problem by its place in the file (`axes.backbon`, `base.learning_rat`, ...). Field values are typed by
`transformers.HfArgumentParser` (see `fields.py`); the run arguments of a cell come from its `parse_dict`.
See docs/experiments.md for the format.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..paper import load_paper_results
from ..run_args import validate_training_args
from .checks import check_cell_values, suggest
from .fields import ARGUMENT_CLASSES, build_arguments, coerce_value, field_default, field_names, is_field

#: Recipe name -> the argument values that define it. Usable as values of the `recipe` axis or as `base.recipe`;
#: a grid may add its own (or redefine these) under `recipes:`. `backbone_pretrained` defaults to True
#: (ModelArguments) and only `scratch` turns it off.
RECIPE_FIELDS: dict[str, dict[str, Any]] = {
    # CDTM paper, Table VIII (fine-tuning strategies) and Table VI (LP+CDTM, SFT+CDTM)
    "scratch": {"finetune_mode": "scratch", "use_cdtm": False, "backbone_pretrained": False},
    "lp": {"finetune_mode": "lp", "use_cdtm": False},
    "lp_cdtm": {"finetune_mode": "lp", "use_cdtm": True},
    "fft": {"finetune_mode": "fft", "use_cdtm": False},
    "fft_cdtm": {"finetune_mode": "fft", "use_cdtm": True},
    "sft": {"finetune_mode": "sft", "use_cdtm": False},
    "sft_cdtm": {"finetune_mode": "sft", "use_cdtm": True},
    # Medical transfer study: a frozen or a trained backbone under a linear or attention (mha) head, no CDTM
    "frozen": {"finetune_mode": "lp", "use_cdtm": False},
    "unfrozen": {"finetune_mode": "fft", "use_cdtm": False},
}

#: Top-level keys of a grid file.
GRID_KEYS: dict[str, str] = {
    "name": "the grid's name (default: the file name)",
    "description": "free text, copied into results.md",
    "paper_table": "a table of cdtm_hf/paper_results.json whose values are printed beside ours",
    "base": "fields shared by every cell (ModelArguments, DataArguments, CDTMTrainingArguments, or `recipe`)",
    "recipes": "extra named recipes: name -> fields",
    "axes": "axis -> list of values (a field, or `recipe`) or mapping label -> fields; cells = their product",
    "seeds": "training seeds; every cell runs once per seed (default [42])",
    "seed_fields": "fields that receive the seed (default [seed]; also data_seed, split_seed)",
    "output_dir": "where runs and tables go (default grids/<name>)",
}

SEED_FIELDS = ("seed", "data_seed", "split_seed")
#: Fields the grid sets itself; a grid file may not set them.
GRID_CONTROLLED = {
    "output_dir": "the grid sets it to <output_dir>/<cell_id>/seed<k>; use the top-level `output_dir`",
    "resume_from_checkpoint": "the grid sets it when a run has checkpoints but no results",
    "seed": "the top-level `seeds` list sets it",
    "overwrite_output_dir": "the grid skips finished runs, resumes those with checkpoints and starts the others "
    "afresh (removing what a killed run left); to run a cell again delete its folder",
}
_NOT_A_FIELD = f"unknown key: not a field of {', '.join(c.__name__ for c in ARGUMENT_CLASSES)}"

# (label, fields, field -> place in the file) of one value of an axis
AxisEntry = tuple[str, dict[str, Any], dict[str, str]]


class GridError(ValueError):
    """A grid file that cannot run; the message lists every problem, each with the key that causes it."""


class Problems(list):
    """The problems found in a grid file, each as 'place: message', without repeats."""

    def add(self, where: str, message: str) -> None:
        line = f"{where}: {message}" if where else message
        if line not in self:
            self.append(line)

    def raise_if_any(self, label: str) -> None:
        if self:
            n = len(self)
            items = "\n".join(f"  - {p}" for p in self)
            raise GridError(f"{label} is invalid ({n} problem{'s' if n > 1 else ''}; nothing was run):\n{items}")


def canonical_recipe(fields: Mapping[str, Any]) -> str:
    """The recipe a set of fields amounts to, e.g. 'lp_cdtm' or 'scratch'; it matches the paper's rows.

    A non-scratch run whose backbone does not start from pretrained weights gets `_random_init` (and matches none).
    """
    mode = fields.get("finetune_mode", field_default("finetune_mode"))
    use_cdtm = fields.get("use_cdtm", field_default("use_cdtm"))
    pretrained = fields.get("backbone_pretrained", field_default("backbone_pretrained"))
    key = f"{mode}{'_cdtm' if use_cdtm else ''}"
    if mode != "scratch" and not pretrained and not fields.get("model_name_or_path"):
        key += "_random_init"
    return key


@dataclass
class Cell:
    """One point of the grid: its id (a folder name), its label on every axis and its resolved fields."""

    index: int
    cell_id: str
    labels: dict[str, str]  # axis -> label, in axis order
    fields: dict[str, Any]  # base < axes (in axis order) < overrides
    sources: dict[str, str] = field(default_factory=dict, repr=False)  # field -> the place that set it

    def value(self, name: str) -> Any:
        """The field's value in this cell, its dataclass default when the grid does not set it."""
        return self.fields[name] if name in self.fields else field_default(name)

    @property
    def recipe(self) -> str:
        return canonical_recipe(self.fields)


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
        values = dict(cell.fields)
        values.update({name: seed for name in self.seed_fields})
        values["output_dir"] = str(self.run_dir(cell, seed))
        if resume:
            values["resume_from_checkpoint"] = True
        else:
            values["overwrite_output_dir"] = True  # never a finished run: run_grid skips those
        return build_arguments(values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "source": self.source,
            "paper_table": self.paper_table, "seeds": self.seeds, "seed_fields": list(self.seed_fields),
            "axes": self.axes, "output_dir": str(self.output_dir),
            "cells": [{"cell_id": c.cell_id, "labels": c.labels, "fields": c.fields} for c in self.cells],
        }


# ----------------------------------------------------------------------------------------------------------------
# Reading the parts of a grid file
def _read_source(source: str | os.PathLike | Mapping[str, Any]) -> tuple[Any, Path | None, str]:
    if isinstance(source, Mapping):
        return dict(source), None, "grid"
    path = Path(source)
    label = f"grid file {str(path)!r}"
    if not path.is_file():
        raise GridError(f"{label} does not exist")
    is_json = path.suffix.lower() == ".json"
    try:
        raw = json.loads(path.read_text()) if is_json else yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise GridError(f"{label} is not valid {'JSON' if is_json else 'YAML'}: {err}") from None
    if raw is None:
        raise GridError(f"{label} is empty: it needs at least `axes` (see docs/experiments.md)")
    if not isinstance(raw, Mapping):
        raise GridError(f"{label} must be a mapping with keys {', '.join(GRID_KEYS)}; got {type(raw).__name__}")
    return raw, path, label


def _read_fields(
    mapping: Any, where: str, problems: Problems, recipes: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """A mapping of fields (and `recipe`, where `recipes` is given) -> (typed fields, field -> place)."""
    out: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if mapping is None:
        return out, sources
    if not isinstance(mapping, Mapping):
        problems.add(where, f"must be a mapping of field: value, got {type(mapping).__name__}")
        return out, sources
    if recipes is not None and "recipe" in mapping:
        name = mapping["recipe"]
        if not isinstance(name, str) or name not in recipes:
            problems.add(f"{where}.recipe", f"unknown recipe {name!r}{suggest(name, list(recipes))}; recipes are: "
                         f"{', '.join(recipes)}")
        else:
            out.update(recipes[name])
            sources.update({k: f"{where}.recipe ({name})" for k in recipes[name]})
    for key, value in mapping.items():
        place = f"{where}.{key}"
        if key == "recipe":
            if recipes is None:
                problems.add(place, "a recipe cannot be used here (a recipe may not include another recipe)")
        elif key in GRID_CONTROLLED:
            problems.add(place, f"may not be set in a grid file: {GRID_CONTROLLED[key]}")
        elif not is_field(key):
            also = "" if recipes is None else " (nor `recipe`)"
            problems.add(place, f"{_NOT_A_FIELD}{also}{suggest(key, [*field_names(), 'recipe'])}")
        else:
            try:
                out[key] = coerce_value(key, value)
            except ValueError as err:
                problems.add(place, str(err))
                out[key] = value
            sources[key] = place
    return out, sources


def _read_recipes(raw: Mapping[str, Any], problems: Problems) -> dict[str, dict[str, Any]]:
    recipes = {k: dict(v) for k, v in RECIPE_FIELDS.items()}
    extra = raw.get("recipes") or {}
    if not isinstance(extra, Mapping):
        problems.add("recipes", "must be a mapping of recipe name -> fields")
        return recipes
    for name, body in extra.items():
        recipes[str(name)] = _read_fields(body, f"recipes.{name}", problems)[0]
    return recipes


def _label(axis: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    return f"{axis}=none" if value is None else f"{axis}={value}"


def _read_axis(axis: str, values: Any, recipes: Mapping[str, Any], problems: Problems) -> list[AxisEntry] | None:
    """The entries of one axis; None for an axis that cannot be one (reported)."""
    place = f"axes.{axis}"
    if values is None or (isinstance(values, (list, tuple, Mapping)) and len(values) == 0):
        problems.add(place, "is empty: the grid has no cells (give the axis at least one value)")
        return None
    if isinstance(values, Mapping):  # a bundle axis: label -> fields
        return [(str(lbl), *_read_fields(body, f"{place}.{lbl}", problems, recipes)) for lbl, body in values.items()]
    values = values if isinstance(values, (list, tuple)) else [values]
    entries: list[AxisEntry] = []
    if axis == "recipe":
        for i, name in enumerate(values):
            if not isinstance(name, str) or name not in recipes:
                problems.add(f"{place}[{i}]", f"unknown recipe {name!r}{suggest(name, list(recipes))}; recipes are: "
                             f"{', '.join(recipes)}")
                continue
            entries.append((name, dict(recipes[name]), {k: f"{place}[{i}] ({name})" for k in recipes[name]}))
        return entries
    if axis in GRID_CONTROLLED:
        problems.add(place, f"may not be an axis: {GRID_CONTROLLED[axis]}")
        return None
    if not is_field(axis):
        problems.add(place, f"{_NOT_A_FIELD}, nor `recipe`{suggest(axis, [*field_names(), 'recipe'])} (an axis of "
                     "named bundles is a mapping label -> fields)")
        return None
    for i, value in enumerate(values):
        try:
            value = coerce_value(axis, value)
        except ValueError as err:
            problems.add(f"{place}[{i}]", str(err))
        entries.append((_label(axis, value), {axis: value}, {axis: f"{place}[{i}]"}))
    return entries


def _read_axes(raw: Mapping[str, Any], recipes: Mapping[str, Any], problems: Problems) -> list[tuple[str, list]]:
    axes_raw = raw.get("axes")
    if axes_raw is None or (isinstance(axes_raw, Mapping) and not axes_raw):
        problems.add("axes", "the grid is empty: it has no axis, so no cell (cells are the product of the axes; "
                     "e.g. `axes: {recipe: [sft_cdtm]}`)")
        return []
    if not isinstance(axes_raw, Mapping):
        problems.add("axes", f"must be a mapping of axis -> values, got {type(axes_raw).__name__}")
        return []
    axes = []
    for axis, values in axes_raw.items():
        entries = _read_axis(str(axis), values, recipes, problems)
        if entries is None:
            continue
        labels = [e[0] for e in entries]
        dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
        if dupes:
            problems.add(f"axes.{axis}", f"repeats {', '.join(map(repr, dupes))}")
        axes.append((str(axis), entries))
    return axes


def _read_seeds(raw: Mapping[str, Any], problems: Problems) -> tuple[list[int], tuple[str, ...]]:
    seeds = raw.get("seeds", [42])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, (list, tuple)) or not seeds:
        problems.add("seeds", "must be a non-empty list of integers (the grid runs every cell once per seed)")
        seeds = [42]
    elif not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        problems.add("seeds", f"must be integers, got {seeds!r}")
    elif len(set(seeds)) != len(seeds):
        problems.add("seeds", f"repeats a seed: {seeds!r}")
    seed_fields = raw.get("seed_fields", ["seed"])
    if isinstance(seed_fields, str):
        seed_fields = [seed_fields]
    if not isinstance(seed_fields, (list, tuple)) or not all(s in SEED_FIELDS for s in seed_fields):
        problems.add("seed_fields", f"must be a list of {', '.join(SEED_FIELDS)}; got {seed_fields!r}")
        seed_fields = ["seed"]
    return list(seeds), tuple(seed_fields)


def _read_head(raw: Mapping[str, Any], path: Path | None, problems: Problems) -> tuple[str, str | None]:
    """Check the top-level keys and the paper table; return (name, paper_table)."""
    for key in raw:
        if key not in GRID_KEYS:
            hint = " (a field: put it under `base`)" if is_field(key) else suggest(key, list(GRID_KEYS))
            problems.add(str(key), f"unknown top-level key{hint}; grid keys are: {', '.join(GRID_KEYS)}")
    name = raw.get("name") or (path.stem if path else "grid")
    if not isinstance(name, str):
        problems.add("name", f"must be a string, got {name!r}")
        name = str(name)
    table = raw.get("paper_table")
    tables = load_paper_results()["tables"]
    if table is not None and table not in tables:
        problems.add("paper_table", f"unknown table {table!r}{suggest(table, list(tables))}; "
                     f"cdtm_hf/paper_results.json has: {', '.join(tables)}")
    return name, table


def _read_overrides(
    overrides: Mapping[str, Any] | None, axes: list[tuple[str, list[AxisEntry]]], problems: Problems
) -> tuple[dict[str, Any], dict[str, str]]:
    overrides = dict(overrides or {})
    if "recipe" in overrides:
        problems.add("overrides.recipe", "a recipe cannot be overridden (the cells' labels would no longer say what "
                     "ran); change the grid's recipe axis or set the fields themselves")
        overrides.pop("recipe")
    over, sources = _read_fields(overrides, "overrides", problems)
    for axis, entries in axes:
        for key in sorted({k for _, values, _ in entries for k in values} & set(over)):
            problems.add(f"overrides.{key}", f"axes.{axis} sets {key}; overriding it would make the axis labels lie")
    return over, sources


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", text) or "_"


def _build_cells(
    base: tuple[dict[str, Any], dict[str, str]],
    axes: list[tuple[str, list[AxisEntry]]],
    over: tuple[dict[str, Any], dict[str, str]],
    seed_fields: tuple[str, ...],
    problems: Problems,
) -> list[Cell]:
    """The cartesian product of the axes; fields: base < axes (in file order) < overrides."""
    cells: list[Cell] = []
    ids: dict[str, tuple[str, ...]] = {}
    # An axis whose every value was rejected still lets the other values be checked (its problem is reported).
    checked_only = any(not entries for _, entries in axes)
    product = [entries or [("<invalid>", {}, {})] for _, entries in axes]
    for i, combo in enumerate(itertools.product(*product)):
        fields_, sources = dict(base[0]), dict(base[1])
        set_by: dict[str, str] = {}
        for (axis, _), (_, values, srcs) in zip(axes, combo):
            for key, value in values.items():
                if key in set_by and set_by[key] != axis:
                    problems.add(f"axes.{axis}", f"sets {key}, which axes.{set_by[key]} sets too; one field belongs "
                                 "to one axis")
                set_by[key] = axis
                fields_[key], sources[key] = value, srcs[key]
        fields_.update(over[0])
        sources.update(over[1])
        for name in seed_fields:
            if name in fields_:
                problems.add(sources[name], f"{name} is set by the seeds (seed_fields: {list(seed_fields)})")
        labels = {axis: lbl for (axis, _), (lbl, _, _) in zip(axes, combo)}
        cell_id = "__".join(_safe_id(lbl) for lbl in labels.values())
        if cell_id in ids and not checked_only:
            problems.add("axes", f"two cells get the folder name {cell_id!r} ({ids[cell_id]} and "
                         f"{tuple(labels.values())}); rename a label")
        ids[cell_id] = tuple(labels.values())
        cells.append(Cell(i, cell_id, labels, fields_, sources))
    return cells


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
    raw, path, label = _read_source(source)
    problems = Problems()
    name, paper_table = _read_head(raw, path, problems)
    recipes = _read_recipes(raw, problems)
    base = _read_fields(raw.get("base"), "base", problems, recipes)
    axes = _read_axes(raw, recipes, problems)
    seeds, seed_fields = _read_seeds(raw, problems)
    out = output_dir if output_dir is not None else raw.get("output_dir") or os.path.join("grids", _safe_id(name))
    if not isinstance(out, (str, os.PathLike)):
        problems.add("output_dir", f"must be a path, got {out!r}")
        out = os.path.join("grids", _safe_id(name))
    over = _read_overrides(overrides, axes, problems)
    cells = _build_cells(base, axes, over, seed_fields, problems)
    grid = Grid(
        name=name, cells=cells, seeds=seeds, output_dir=Path(out),
        axes={axis: [e[0] for e in entries] for axis, entries in axes}, paper_table=paper_table,
        description=raw.get("description"), seed_fields=seed_fields, source=str(path) if path else None,
    )
    for cell in cells:
        check_cell_values(cell.value, lambda n, c=cell: c.sources.get(n, f"base.{n}"), problems.add, check_paths)
    if not problems:  # the dataclasses' own checks, once every value is known to be of the right kind
        for cell in cells:
            try:
                validate_training_args(grid.arguments(cell, grid.seeds[0])[2])
            except Exception as err:  # e.g. "sft needs stage2_epochs > 0"
                problems.add(f"cell {cell.cell_id}", f"{type(err).__name__}: {err}")
    problems.raise_if_any(label)
    return grid
