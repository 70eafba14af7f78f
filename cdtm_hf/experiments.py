"""Experiment grids: the cartesian product of named axes x seeds, each run through `run_finetuning`, one table.

A grid file (YAML or JSON) names a base configuration, the axes whose product gives the cells, and the seeds::

    name: cdtm_table8
    paper_table: table8                  # rows of cdtm_hf/paper_results.json to print beside ours
    base: {dataset: breakhis, dataset_config: malignant_200x, split_strategy: paper, image_size: 224}
    axes:
      backbone: [convnextb.laion2b, vitb16.laion2b]
      recipe: [scratch, lp, lp_cdtm, fft, sft_cdtm]
    seeds: [0, 1, 2]
    output_dir: grids/cdtm_table8

`load_grid` validates the whole file before anything trains (unknown keys, backbones, recipes, datasets, values,
an empty grid) and raises one `GridError` (a `ValueError`) that names every bad key by its place, e.g.
`axes.backbon` or `base.learning_rat`. `run_grid` runs every cell x seed in `<output_dir>/<cell_id>/seed<k>`,
skips runs whose `test_results.json` exists, resumes runs that have checkpoints but no results, and writes
`results.csv` (one row per cell x seed) and `results.md` (one row per cell, mean +- std over seeds, paper values
beside ours). See docs/experiments.md.

    python examples/run_grid.py examples/grids/cdtm_table8.yaml
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import itertools
import json
import logging
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field
from dataclasses import fields as dataclass_fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from . import recipe as _recipe
from .paper import load_paper_results, paper_row
from .presets import BACKBONE_PRESETS, UNAVAILABLE_BACKBONES
from .recipe import DataArguments, ModelArguments
from .trainer import FINETUNE_MODES, CDTMTrainingArguments

logger = logging.getLogger(__name__)

#: Named recipes: bundles of fields, usable as values of the `recipe` axis or as `base.recipe`. A grid may add its
#: own (or redefine these) under `recipes:`. A recipe sets only what defines it; `backbone_pretrained` defaults to
#: True (ModelArguments) and only `scratch` turns it off.
RECIPES: dict[str, dict[str, Any]] = {
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
}
#: Fields that may change between invocations of one grid without invalidating finished runs.
NON_RESULT_FIELDS = frozenset({
    "data_dir", "cache_dir", "feature_cache_dir", "disable_tqdm", "report_to", "logging_steps", "logging_strategy",
    "logging_dir", "logging_first_step", "log_level", "dataloader_num_workers", "dataloader_pin_memory",
    "dataloader_persistent_workers", "per_device_eval_batch_size", "save_total_limit", "push_to_hub", "hub_model_id",
    "hub_token", "hub_private_repo", "hub_strategy", "explain",
})

#: The paper's columns, in its order, and their headers.
TABLE_METRICS = ("precision", "recall", "accuracy", "f1")
METRIC_HEADERS = {"precision": "Pre", "recall": "Rec", "accuracy": "Acc", "f1": "F1", "auroc": "AUROC"}
RUN_METRICS = ("precision", "recall", "accuracy", "f1", "loss")
RESULTS_FILE = "test_results.json"
CELL_FILE = "cell.json"


class GridError(ValueError):
    """A grid file that cannot run; the message lists every problem, each with the key that causes it."""


# ----------------------------------------------------------------------------------------------------------------
# Fields
@lru_cache(maxsize=1)
def _field_index() -> dict[str, tuple[type, Any]]:
    """field name -> (owning dataclass, dataclasses.Field) over the three argument classes."""
    index: dict[str, tuple[type, Any]] = {}
    for cls in (ModelArguments, DataArguments, CDTMTrainingArguments):
        for f in dataclass_fields(cls):
            if f.init and not f.name.startswith("_"):
                index.setdefault(f.name, (cls, f))
    return index


def field_names() -> list[str]:
    """Every field a grid may set (besides `recipe`)."""
    return sorted(_field_index())


def field_default(name: str) -> Any:
    """The default value of a field, as its dataclass defines it."""
    f = _field_index()[name][1]
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


_SIMPLE_TYPES = {"int", "float", "bool", "str", "None", "NoneType"}


def _type_tokens(tp: Any) -> set[str] | None:
    """{'float', 'None'} for 'float | None'; None for any type this module does not check (lists, enums...)."""
    text = tp.__name__ if isinstance(tp, type) else str(tp)
    tokens = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", text)) - {"Optional", "Union", "typing"}
    tokens = {"None" if t == "NoneType" else t for t in tokens}
    return tokens if tokens and tokens <= _SIMPLE_TYPES else None


def _coerce(name: str, value: Any) -> tuple[Any, str | None]:
    """Check `value` against the field's declared type; YAML's '1e-4' (a string) becomes a float. (value, problem)."""
    tokens = _type_tokens(_field_index()[name][1].type)
    if tokens is None:
        return value, None
    if value is None:
        return (None, None) if "None" in tokens else (value, f"{name} may not be null")
    if isinstance(value, bool):
        ok = "bool" in tokens
    elif isinstance(value, int):
        ok = "int" in tokens or "float" in tokens
        if ok and "int" not in tokens:
            value = float(value)
    elif isinstance(value, float):
        ok = "float" in tokens or ("int" in tokens and value.is_integer())
        if ok and "float" not in tokens:
            value = int(value)
    elif isinstance(value, str):
        ok = "str" in tokens
        if not ok and "float" in tokens:
            try:
                return float(value), None
            except ValueError:
                pass
        if not ok and "int" in tokens and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value), None
    else:
        ok = False
    if ok:
        return value, None
    wanted = " or ".join(sorted(t for t in tokens if t != "None"))
    return value, f"{name} expects {wanted}, got {value!r}"


def _suggest(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def canonical_recipe(fields: Mapping[str, Any]) -> str:
    """The recipe a set of fields amounts to, e.g. 'lp_cdtm' or 'scratch'; used to match paper rows."""
    mode = fields.get("finetune_mode", field_default("finetune_mode"))
    use_cdtm = fields.get("use_cdtm", field_default("use_cdtm"))
    pretrained = fields.get("backbone_pretrained", field_default("backbone_pretrained"))
    key = f"{mode}{'_cdtm' if use_cdtm else ''}"
    if mode != "scratch" and not pretrained and not fields.get("model_name_or_path"):
        key += "_random_init"
    return key


# ----------------------------------------------------------------------------------------------------------------
# The grid
@dataclass
class Cell:
    """One point of the grid: its id (a folder name), its label on every axis and its resolved fields."""

    index: int
    cell_id: str
    labels: dict[str, str]  # axis -> label, in axis order
    fields: dict[str, Any]  # base < axes (in axis order) < overrides
    sources: dict[str, str] = field(default_factory=dict, repr=False)  # field -> where it was set

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

    def arguments(
        self, cell: Cell, seed: int, resume: bool = False
    ) -> tuple[ModelArguments, DataArguments, CDTMTrainingArguments]:
        """The three argument dataclasses of one run, as `run_finetuning` takes them."""
        kwargs: dict[type, dict[str, Any]] = {ModelArguments: {}, DataArguments: {}, CDTMTrainingArguments: {}}
        index = _field_index()
        for name, value in cell.fields.items():
            kwargs[index[name][0]][name] = value
        for name in self.seed_fields:
            kwargs[index[name][0]][name] = seed
        train = kwargs[CDTMTrainingArguments]
        train["output_dir"] = str(self.run_dir(cell, seed))
        if resume:
            train["resume_from_checkpoint"] = True
        return (ModelArguments(**kwargs[ModelArguments]), DataArguments(**kwargs[DataArguments]),
                CDTMTrainingArguments(**train))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "source": self.source,
            "paper_table": self.paper_table, "seeds": self.seeds, "seed_fields": list(self.seed_fields),
            "axes": self.axes, "output_dir": str(self.output_dir),
            "cells": [{"cell_id": c.cell_id, "labels": c.labels, "fields": c.fields} for c in self.cells],
        }


def _read_grid_file(path: Path) -> Any:
    if not path.is_file():
        raise GridError(f"grid file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise GridError(f"grid file {str(path)!r} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}")


class _Problems(list):
    def add(self, where: str, message: str) -> None:
        line = f"{where}: {message}" if where else message
        if line not in self:
            self.append(line)

    def raise_if_any(self, label: str) -> None:
        if self:
            n = len(self)
            items = "\n".join(f"  - {p}" for p in self)
            raise GridError(f"{label} is invalid ({n} problem{'s' if n > 1 else ''}; nothing was run):\n{items}")


def _read_fields(
    mapping: Any, where: str, problems: _Problems, recipes: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """A mapping of fields (and `recipe`, where `recipes` is given) -> (fields, field -> where)."""
    out: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if mapping is None:
        return out, sources
    if not isinstance(mapping, Mapping):
        problems.add(where, f"must be a mapping of field: value, got {type(mapping).__name__}")
        return out, sources
    index = _field_index()
    if recipes is not None and "recipe" in mapping:
        name = mapping["recipe"]
        if not isinstance(name, str) or name not in recipes:
            problems.add(f"{where}.recipe", f"unknown recipe {name!r}{_suggest(name, list(recipes))}; recipes are: "
                         f"{', '.join(recipes)}")
        else:
            out.update(recipes[name])
            sources.update({k: f"{where}.recipe ({name})" for k in recipes[name]})
    for key, value in mapping.items():
        place = f"{where}.{key}"
        if key == "recipe" and recipes is not None:
            continue
        if key == "recipe":
            problems.add(place, "a recipe cannot be used here (a recipe may not include another recipe)")
        elif key in GRID_CONTROLLED:
            problems.add(place, f"may not be set in a grid file: {GRID_CONTROLLED[key]}")
        elif key == "seed":
            problems.add(place, "may not be set in a grid file: the top-level `seeds` list sets it")
        elif key not in index:
            problems.add(place, "unknown key: not a field of ModelArguments, DataArguments or CDTMTrainingArguments"
                         f"{'' if recipes is None else ' (nor `recipe`)'}{_suggest(key, [*index, 'recipe'])}")
        else:
            value, problem = _coerce(key, value)
            if problem:
                problems.add(place, problem)
            out[key], sources[key] = value, place
    return out, sources


def _label(axis: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return f"{axis}=none"
    return f"{axis}={value}"


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", text) or "_"


def load_grid(
    source: str | os.PathLike | Mapping[str, Any],
    *,
    output_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    check_paths: bool = True,
) -> Grid:
    """Read and validate a grid file (or an already parsed mapping); raise `GridError` before anything trains.

    `overrides` (the command line's `--set key=value`) apply to every cell, after the axes. `check_paths=False`
    skips the existence check of `data_dir` (for inspecting a grid on a machine without the data).
    """
    if isinstance(source, Mapping):
        raw, path, label = dict(source), None, "grid"
    else:
        path = Path(source)
        raw, label = _read_grid_file(path), f"grid file {str(path)!r}"
    problems = _Problems()
    if raw is None:
        raise GridError(f"{label} is empty: it needs at least `axes` (see docs/experiments.md)")
    if not isinstance(raw, Mapping):
        raise GridError(f"{label} must be a mapping with keys {', '.join(GRID_KEYS)}; got {type(raw).__name__}")

    for key in raw:
        if key not in GRID_KEYS:
            hint = " (a field: put it under `base`)" if key in _field_index() else _suggest(key, list(GRID_KEYS))
            problems.add(str(key), f"unknown top-level key{hint}; grid keys are: {', '.join(GRID_KEYS)}")
    name = raw.get("name") or (path.stem if path else "grid")
    if not isinstance(name, str):
        problems.add("name", f"must be a string, got {name!r}")
        name = str(name)
    description = raw.get("description")

    # recipes
    recipes: dict[str, dict[str, Any]] = {k: dict(v) for k, v in RECIPES.items()}
    user_recipes = raw.get("recipes") or {}
    if not isinstance(user_recipes, Mapping):
        problems.add("recipes", "must be a mapping of recipe name -> fields")
        user_recipes = {}
    for rname, body in user_recipes.items():
        fields_, _ = _read_fields(body, f"recipes.{rname}", problems)
        recipes[str(rname)] = fields_

    base, base_sources = _read_fields(raw.get("base"), "base", problems, recipes)

    # axes
    axes_raw = raw.get("axes")
    axes: list[tuple[str, list[tuple[str, dict[str, Any], dict[str, str]]]]] = []
    index = _field_index()
    if axes_raw is None or (isinstance(axes_raw, Mapping) and not axes_raw):
        problems.add("axes", "the grid is empty: it has no axis, so no cell (cells are the product of the axes; "
                     "e.g. `axes: {recipe: [sft_cdtm]}`)")
    elif not isinstance(axes_raw, Mapping):
        problems.add("axes", f"must be a mapping of axis -> values, got {type(axes_raw).__name__}")
    else:
        for axis, values in axes_raw.items():
            place = f"axes.{axis}"
            entries: list[tuple[str, dict[str, Any], dict[str, str]]] = []
            if values is None or (isinstance(values, (list, tuple, Mapping)) and len(values) == 0):
                problems.add(place, "is empty: the grid has no cells (give the axis at least one value)")
                continue
            if axis == "recipe":
                if isinstance(values, str):
                    values = [values]
                if not isinstance(values, (list, tuple)):
                    problems.add(place, "must be a list of recipe names")
                    continue
                for i, rname in enumerate(values):
                    if not isinstance(rname, str) or rname not in recipes:
                        problems.add(f"{place}[{i}]", f"unknown recipe {rname!r}{_suggest(rname, list(recipes))}; "
                                     f"recipes are: {', '.join(recipes)}")
                        continue
                    sources = {k: f"{place}[{i}] ({rname})" for k in recipes[rname]}
                    entries.append((rname, dict(recipes[rname]), sources))
            elif isinstance(values, Mapping):  # a bundle axis: label -> fields
                for lbl, body in values.items():
                    fields_, sources = _read_fields(body, f"{place}.{lbl}", problems, recipes)
                    entries.append((str(lbl), fields_, sources))
            elif axis in GRID_CONTROLLED or axis == "seed":
                why = GRID_CONTROLLED.get(axis, "use the top-level `seeds` list")
                problems.add(place, f"may not be an axis: {why}")
                continue
            elif axis not in index:
                problems.add(place, "unknown key: not a field of ModelArguments, DataArguments or "
                             f"CDTMTrainingArguments, nor `recipe`{_suggest(axis, [*index, 'recipe'])} (an axis of "
                             "named bundles is a mapping label -> fields)")
                continue
            else:
                if not isinstance(values, (list, tuple)):
                    values = [values]
                for i, value in enumerate(values):
                    value, problem = _coerce(axis, value)
                    if problem:
                        problems.add(f"{place}[{i}]", problem)
                    entries.append((_label(axis, value), {axis: value}, {axis: f"{place}[{i}]"}))
            labels = [e[0] for e in entries]
            dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
            if dupes:
                problems.add(place, f"repeats {', '.join(map(repr, dupes))}")
            axes.append((str(axis), entries))

    # seeds
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

    paper_table = raw.get("paper_table")
    if paper_table is not None:
        tables = load_paper_results()["tables"]
        if paper_table not in tables:
            problems.add("paper_table", f"unknown table {paper_table!r}{_suggest(paper_table, list(tables))}; "
                         f"cdtm_hf/paper_results.json has: {', '.join(tables)}")

    out = output_dir if output_dir is not None else raw.get("output_dir") or os.path.join("grids", _safe_id(name))
    if not isinstance(out, (str, os.PathLike)):
        problems.add("output_dir", f"must be a path, got {out!r}")
        out = os.path.join("grids", _safe_id(name))

    overrides = dict(overrides or {})
    if "recipe" in overrides:
        problems.add("overrides.recipe", "a recipe cannot be overridden (the cells' labels would no longer say what "
                     "ran); change the grid's recipe axis or set the fields themselves")
        overrides.pop("recipe")
    over, over_sources = _read_fields(overrides, "overrides", problems)
    for axis, entries in axes:
        for key in sorted({k for _, values, _ in entries for k in values} & set(over)):
            problems.add(f"overrides.{key}", f"axes.{axis} sets {key}; overriding it would make the axis labels lie")

    # cells
    cells: list[Cell] = []
    ids: dict[str, tuple[str, ...]] = {}
    # An axis whose every value was rejected above still lets the other values be checked (its problem is reported).
    checked_only = any(not entries for _, entries in axes)
    product = [entries or [("<invalid>", {}, {})] for _, entries in axes]
    for i, combo in enumerate(itertools.product(*product)):
        fields_, sources = dict(base), dict(base_sources)
        set_by: dict[str, str] = {}
        for (axis, _), (lbl, values, srcs) in zip(axes, combo):
            for key, value in values.items():
                if key in set_by and set_by[key] != axis:
                    problems.add(f"axes.{axis}", f"sets {key}, which axes.{set_by[key]} sets too; one field belongs "
                                 "to one axis")
                set_by[key] = axis
                fields_[key], sources[key] = value, srcs[key]
        fields_.update(over)
        sources.update(over_sources)
        for sf in seed_fields:
            if sf in fields_:
                problems.add(sources[sf], f"{sf} is set by the seeds (seed_fields: {list(seed_fields)})")
        labels = {axis: lbl for (axis, _), (lbl, _, _) in zip(axes, combo)}
        cell_id = "__".join(_safe_id(lbl) for lbl in labels.values())
        if cell_id in ids and not checked_only:
            problems.add("axes", f"two cells get the folder name {cell_id!r} ({ids[cell_id]} and "
                         f"{tuple(labels.values())}); rename a label")
        ids[cell_id] = tuple(labels.values())
        cells.append(Cell(i, cell_id, labels, fields_, sources))

    grid = Grid(
        name=name, cells=cells, seeds=list(seeds), output_dir=Path(out),
        axes={axis: [e[0] for e in entries] for axis, entries in axes}, paper_table=paper_table,
        description=description, seed_fields=tuple(seed_fields), source=str(path) if path else None,
    )
    for cell in cells:
        _check_values(cell, problems, check_paths)
    if not problems:  # the dataclasses' own checks, once every value is known to be of the right kind
        for cell in cells:
            try:
                grid.arguments(cell, grid.seeds[0])
            except Exception as err:  # e.g. "sft needs stage2_epochs > 0"
                problems.add(f"cell {cell.cell_id}", f"{type(err).__name__}: {err}")
    problems.raise_if_any(label)
    return grid


# ----------------------------------------------------------------------------------------------------------------
# Value checks (before any training)
def check_backbone(name: Any, library: str | None = None) -> str | None:
    """None if `name` is a preset or a model of `library` (timm when None); otherwise why not."""
    if not isinstance(name, str) or not name:
        return f"backbone must be a preset or model name, got {name!r}"
    if name in BACKBONE_PRESETS:
        return None
    for key, why in UNAVAILABLE_BACKBONES.items():
        if key in name.lower():
            return why
    if library in (None, "timm"):
        import timm

        if timm.is_model(name):
            return None
    if library in (None, "open_clip"):
        try:
            import open_clip

            if name in open_clip.list_models():
                return None if library == "open_clip" else (
                    f"{name!r} is an open_clip model: set backbone_library: open_clip (and backbone_pretrained_tag)"
                )
        except ImportError:  # pragma: no cover - open_clip is a dependency
            pass
    lib = {"timm": "a timm model", "open_clip": "an open_clip model"}.get(library or "timm", f"a {library} model")
    return (f"unknown backbone {name!r}: not a preset of cdtm_hf.BACKBONE_PRESETS nor {lib}"
            f"{_suggest(name, list(BACKBONE_PRESETS))}; presets: {', '.join(BACKBONE_PRESETS)}")


def _check_values(cell: Cell, problems: _Problems, check_paths: bool) -> None:
    from .configuration_cdtm import BACKBONE_LIBRARIES, CDTM_VARIANTS, HEAD_TYPES

    def where(name: str) -> str:
        return cell.sources.get(name, f"base.{name}")  # unset: base is where to add it

    if not cell.fields.get("model_name_or_path"):
        library = cell.value("backbone_library")
        if library is not None and library not in BACKBONE_LIBRARIES:
            problems.add(where("backbone_library"), f"backbone_library {library!r} is not one of: "
                         f"{', '.join(BACKBONE_LIBRARIES)}")
        else:
            why = check_backbone(cell.value("backbone"), library)
            if why:
                problems.add(where("backbone"), why)
    choices = (("head_type", HEAD_TYPES), ("cdtm_variant", CDTM_VARIANTS), ("finetune_mode", FINETUNE_MODES))
    for name, allowed in choices:
        value = cell.value(name)
        if value not in allowed:
            problems.add(where(name), f"{name} {value!r} is not one of: {', '.join(allowed)}{_suggest(value, allowed)}")
    dataset = cell.value("dataset")
    if dataset != "imagefolder":
        try:
            from .data import SPLIT_STRATEGIES, get_builder_class

            builder = get_builder_class(dataset)
        except ImportError as err:  # pragma: no cover - the builders ship with the package
            problems.add(where("dataset"), f"medical datasets need cdtm_hf.data ({err})")
        except ValueError as err:
            problems.add(where("dataset"), f"{err}; or imagefolder")
        else:
            configs = [c.name for c in builder.BUILDER_CONFIGS]
            config = cell.value("dataset_config")
            if config is not None and config not in configs:
                problems.add(where("dataset_config"), f"{dataset} has no config {config!r}; configs: "
                             f"{', '.join(configs)}")
            strategy = cell.value("split_strategy")
            if strategy not in SPLIT_STRATEGIES:
                problems.add(where("split_strategy"), f"split_strategy {strategy!r} is not one of: "
                             f"{', '.join(SPLIT_STRATEGIES)}")
    data_dir = cell.value("data_dir")
    if check_paths:
        if dataset == "imagefolder" and not data_dir:
            problems.add(where("data_dir"), "dataset imagefolder needs data_dir")
        elif data_dir and not Path(data_dir).exists():
            problems.add(where("data_dir"), f"data_dir {data_dir!r} does not exist (relative paths are relative to "
                         f"the working directory, {os.getcwd()})")


# ----------------------------------------------------------------------------------------------------------------
# Paper results
# ----------------------------------------------------------------------------------------------------------------
# Running
def _is_main_process() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def _read_results(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:  # a run killed while writing it: not finished
        return None


def has_checkpoint(run_dir: Path) -> bool:
    """A `checkpoint-<step>` folder in the run (single-stage modes) or in one of its stages (SFT)."""
    pattern = re.compile(r"checkpoint-\d+")
    for folder in (run_dir, *(p for p in run_dir.glob("stage*") if p.is_dir())) if run_dir.is_dir() else ():
        if any(p.is_dir() and pattern.fullmatch(p.name) for p in folder.iterdir()):
            return True
    return False


def run_status(run_dir: Path) -> str:
    """'done' (test_results.json exists), 'resume' (checkpoints, no results) or 'new'."""
    if _read_results(run_dir) is not None:
        return "done"
    return "resume" if has_checkpoint(run_dir) else "new"


def _result_fields(cell: Cell) -> dict[str, Any]:
    return {k: v for k, v in cell.fields.items() if k not in NON_RESULT_FIELDS}


def _check_recorded_cells(grid: Grid) -> None:
    """A cell folder holds the fields it was run with; refuse to mix runs of a changed cell into one table."""
    problems = _Problems()
    for cell in grid.cells:
        path = grid.output_dir / cell.cell_id / CELL_FILE
        if not path.is_file():
            continue
        recorded = json.loads(path.read_text()).get("fields", {})
        recorded = {k: v for k, v in recorded.items() if k not in NON_RESULT_FIELDS}
        current = json.loads(json.dumps(_result_fields(cell), default=str))
        changed = sorted(k for k in set(recorded) | set(current) if recorded.get(k, MISSING) != current.get(k, MISSING))
        if changed:
            diff = ", ".join(f"{k}: {recorded.get(k, '<unset>')!r} -> {current.get(k, '<unset>')!r}" for k in changed)
            problems.add(f"cell {cell.cell_id}", f"its runs in {path.parent} used other settings ({diff}); delete "
                         "that folder or choose another output_dir")
    problems.raise_if_any(f"grid {grid.name!r} in {str(grid.output_dir)!r}")


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

    A run whose `test_results.json` exists is skipped; one with checkpoints but no results restarts with
    `resume_from_checkpoint=True`. `max_cells` stops after training that many cells in this call (cells already
    finished do not count); `only` keeps the cells whose id matches one of these shell patterns; `keep_going` logs a
    failed run (and writes `error.txt` beside it) instead of stopping. `runner` replaces `run_finetuning`.
    The tables are written even when a run fails or is interrupted, from every result on disk.
    """
    if not isinstance(grid, Grid):
        grid = load_grid(grid, output_dir=output_dir, overrides=overrides)
    elif output_dir is not None or overrides:
        raise ValueError("pass output_dir/overrides to load_grid, not with an already loaded Grid")
    if max_cells is not None and max_cells < 0:
        raise ValueError(f"max_cells must be >= 0, got {max_cells}")
    cells = grid.cells
    if only:
        unmatched = [p for p in only if not any(fnmatch.fnmatchcase(c.cell_id, p) for c in cells)]
        if unmatched:
            raise GridError(f"--only {', '.join(map(repr, unmatched))} matches no cell of grid {grid.name!r}; cells: "
                            f"{', '.join(c.cell_id for c in cells)}")
        cells = [c for c in cells if any(fnmatch.fnmatchcase(c.cell_id, p) for p in only)]
    _check_recorded_cells(grid)

    result = GridRun(grid)
    main = _is_main_process()
    if main:
        grid.output_dir.mkdir(parents=True, exist_ok=True)
        (grid.output_dir / "grid.json").write_text(json.dumps(grid.to_dict(), indent=2, default=str) + "\n")
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    n_total = len(grid.seeds)
    bar = tqdm(total=len(cells), desc=f"grid {grid.name}", unit="cell", disable=not (progress and main))
    started = 0
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
                    run_dir = grid.run_dir(cell, seed)
                    resume = statuses[seed] == "resume"
                    if resume:
                        logger.info("Resuming %s seed %d from its last checkpoint", cell.cell_id, seed)
                    (run_dir / "error.txt").unlink(missing_ok=True)
                    args = grid.arguments(cell, seed, resume=resume)
                    try:
                        (runner or _recipe.run_finetuning)(*args)
                    except Exception as err:
                        if not keep_going:
                            raise
                        run_dir.mkdir(parents=True, exist_ok=True)
                        (run_dir / "error.txt").write_text(traceback.format_exc())
                        result.failed.append((cell.cell_id, seed, f"{type(err).__name__}: {err}"))
                        logger.error("%s seed %d failed (%s: %s); see %s", cell.cell_id, seed, type(err).__name__,
                                     err, run_dir / "error.txt")
                        continue
                    result.ran.append((cell.cell_id, seed))
                    if resume:
                        result.resumed.append((cell.cell_id, seed))
                bar.update(1)
                logger.info("[%d/%d] %s", position, len(cells), _cell_log_line(grid, cell, todo))
    finally:
        bar.close()
        if main:
            result.runs, result.cells, result.paths = write_tables(grid)
    if result.failed:
        logger.error("%d run(s) failed: %s", len(result.failed),
                     "; ".join(f"{c} seed {s}: {e}" for c, s, e in result.failed))
    done = 0 if result.runs is None else len(result.runs)
    logger.info("Grid %s: %d/%d runs finished (%d trained now, %d resumed, %d skipped); table: %s", grid.name,
                done, len(grid.cells) * n_total, len(result.ran), len(result.resumed), len(result.skipped),
                result.paths.get("markdown", "-"))
    return result


def _write_cell_file(grid: Grid, cell: Cell) -> None:
    folder = grid.output_dir / cell.cell_id
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"grid": grid.name, "cell_id": cell.cell_id, "labels": cell.labels, "recipe": cell.recipe,
               "fields": cell.fields}
    (folder / CELL_FILE).write_text(json.dumps(payload, indent=2, default=str) + "\n")


def _cell_log_line(grid: Grid, cell: Cell, trained: list[int]) -> str:
    reports = [r for r in (_read_results(grid.run_dir(cell, s)) for s in grid.seeds) if r is not None]
    if not reports:
        return f"{cell.cell_id}: no results"
    metrics = [m for m in (*TABLE_METRICS, "auroc") if m in reports[0]["metrics"]]
    parts = []
    for m in metrics:
        mean, std = _mean_std([100 * r["metrics"][m] for r in reports])
        parts.append(f"{METRIC_HEADERS[m]} {_fmt(mean, std)}")
    row = paper_row(grid.paper_table, cell.value("backbone"), cell.recipe)
    paper = ""
    if row:
        paper = " | paper " + ", ".join(f"{METRIC_HEADERS[m]} {row[m]:.2f}" for m in TABLE_METRICS if m in row)
    status = f"{len(reports)}/{len(grid.seeds)} seeds, {len(trained)} trained now"
    return f"{cell.cell_id}: {', '.join(parts)} ({status}){paper}"


# ----------------------------------------------------------------------------------------------------------------
# Tables
def collect_results(grid: Grid) -> pd.DataFrame:
    """One row per finished cell x seed, from the `test_results.json` files on disk (metrics as fractions)."""
    rows = []
    for cell in grid.cells:
        for seed in grid.seeds:
            report = _read_results(grid.run_dir(cell, seed))
            if report is None:
                continue
            backbone = cell.value("backbone")
            preset = BACKBONE_PRESETS.get(backbone)
            row: dict[str, Any] = {"cell_id": cell.cell_id, "seed": seed, **cell.labels}
            info = {
                "method": cell.recipe, "backbone": backbone,
                "family": preset.family if preset else None, "pretraining": preset.pretraining if preset else None,
                "finetune_mode": cell.value("finetune_mode"), "use_cdtm": cell.value("use_cdtm"),
                "head_type": cell.value("head_type"), "dataset": cell.value("dataset"),
                "dataset_config": cell.value("dataset_config"),
            }
            row.update({k: v for k, v in info.items() if k not in row})
            metrics = report.get("metrics", {})
            for m in (*RUN_METRICS, *(["auroc"] if "auroc" in metrics else [])):
                row[m] = metrics.get(m, math.nan)
            row["num_test_examples"] = report.get("num_test_examples")
            row["params_m"] = report.get("efficiency", {}).get("params_m")
            row["run_dir"] = str(Path(cell.cell_id) / f"seed{seed}")
            rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def summarize(grid: Grid, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: its labels, finished seeds, mean and std (in %) of each metric, the paper's values."""
    has_auroc = "auroc" in runs.columns
    metrics = [*TABLE_METRICS, *(["auroc"] if has_auroc else [])]
    rows = []
    for cell in grid.cells:
        mine = runs[runs["cell_id"] == cell.cell_id] if len(runs) else runs
        row: dict[str, Any] = {"cell_id": cell.cell_id, **cell.labels, "seeds": len(mine),
                               "seeds_total": len(grid.seeds)}
        for m in metrics:
            values = [100 * float(v) for v in mine[m]] if len(mine) and m in mine else []
            row[f"{m}_mean"], row[f"{m}_std"] = _mean_std(values)
        paper = paper_row(grid.paper_table, cell.value("backbone"), cell.recipe)
        for m in TABLE_METRICS:
            row[f"{m}_paper"] = paper.get(m) if paper else None
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(grid: Grid, summary: pd.DataFrame) -> str:
    """results.md: the paper's columns (Pre/Rec/Acc/F1 in %, mean ± std over seeds), paper values beside ours."""
    has_auroc = "auroc_mean" in summary.columns
    with_paper = grid.paper_table is not None
    pretrain_col = "backbone" in grid.axes  # the paper's Model / Pre-train columns
    header = [*grid.axes, "Seeds"]
    if pretrain_col:
        header.insert(list(grid.axes).index("backbone") + 1, "Pre-train")
    for m in TABLE_METRICS:
        header.append(f"{METRIC_HEADERS[m]} (%)")
        if with_paper:
            header.append(f"{METRIC_HEADERS[m]} paper")
    if has_auroc:
        header.append("AUROC (%)")
    lines = [f"# {grid.name}", ""]
    if grid.description:
        lines += [str(grid.description).strip(), ""]
    seeds = ", ".join(map(str, grid.seeds))
    lines.append(f"Test-set metrics in %, macro-averaged over classes: mean ± sample standard deviation over the "
                 f"seeds that finished (seeds {seeds}); a single seed shows its value alone.")
    if with_paper:
        table = load_paper_results()["tables"][grid.paper_table]
        lines.append(f"Paper columns: {table['source']} (cdtm_hf/paper_results.json `{grid.paper_table}`); "
                     "– where the paper reports no value.")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in summary.iterrows():
        cells = [str(row[a]) for a in grid.axes] + [f"{int(row['seeds'])}/{int(row['seeds_total'])}"]
        if pretrain_col:
            preset = BACKBONE_PRESETS.get(grid.cell(row["cell_id"]).value("backbone"))
            cells.insert(list(grid.axes).index("backbone") + 1, preset.pretraining if preset else "–")
        for m in TABLE_METRICS:
            cells.append(_fmt(row[f"{m}_mean"], row[f"{m}_std"]))
            if with_paper:
                value = row[f"{m}_paper"]
                missing = value is None or (isinstance(value, float) and math.isnan(value))
                cells.append("–" if missing else f"{value:.2f}")
        if has_auroc:
            cells.append(_fmt(row["auroc_mean"], row["auroc_std"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(grid: Grid) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Path]]:
    """Write results.csv (one row per cell x seed) and results.md (one row per cell) from the results on disk."""
    runs = collect_results(grid)
    summary = summarize(grid, runs)
    grid.output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": grid.output_dir / "results.csv", "markdown": grid.output_dir / "results.md"}
    runs.to_csv(paths["csv"], index=False)
    paths["markdown"].write_text(to_markdown(grid, summary))
    return runs, summary, paths


# ----------------------------------------------------------------------------------------------------------------
# Command line (examples/run_grid.py)
def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GridError(f"--set {item!r}: expected key=value")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        grid = load_grid(args.grid, output_dir=args.output_dir, overrides=_parse_set(args.overrides),
                         check_paths=not args.table_only)
        if args.dry_run:
            print(f"grid {grid.name}: {len(grid.cells)} cells x {len(grid.seeds)} seeds -> {grid.output_dir}")
            for cell in grid.cells:
                status = ", ".join(f"seed{s} {run_status(grid.run_dir(cell, s))}" for s in grid.seeds)
                print(f"  {cell.cell_id} [{cell.recipe}]: {status}")
            _check_recorded_cells(grid)
            return 0
        if args.table_only:
            _, _, paths = write_tables(grid)
            print(f"results: {paths['csv']}, {paths['markdown']}")
            return 0
        run = run_grid(grid, max_cells=args.max_cells, only=args.only, keep_going=args.keep_going,
                       progress=not args.no_progress)
    except GridError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if run.paths:
        print(f"results: {run.paths['csv']}, {run.paths['markdown']}")
    return 1 if run.failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
