"""Reading the parts of a grid file (head, recipes, base, axes, seeds, overrides) into cells, every problem recorded
with its place in the file."""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..core.presets import suggest
from ..paper.numbers import load_paper_results
from .fields import coerce_value, field_names, is_field
from .spec import NOT_A_FIELD, GRID_CONTROLLED, GRID_KEYS, RECIPE_FIELDS, SEED_FIELDS, AxisEntry, Cell, GridError, Problems

def read_source(source: str | os.PathLike | Mapping[str, Any]) -> tuple[Any, Path | None, str]:
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


def read_fields(
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
            problems.add(place, f"{NOT_A_FIELD}{also}{suggest(key, [*field_names(), 'recipe'])}")
        else:
            try:
                out[key] = coerce_value(key, value)
            except ValueError as err:  # reported; the field is left out, so its dataclass checks the others
                problems.add(place, str(err))
            sources[key] = place
    return out, sources


def read_recipes(raw: Mapping[str, Any], problems: Problems) -> dict[str, dict[str, Any]]:
    recipes = {k: dict(v) for k, v in RECIPE_FIELDS.items()}
    extra = raw.get("recipes") or {}
    if not isinstance(extra, Mapping):
        problems.add("recipes", "must be a mapping of recipe name -> fields")
        return recipes
    for name, body in extra.items():
        # a built-in name is extended, not replaced: `lp: {learning_rate: 1e-3}` stays LP at its own lr
        recipes[str(name)] = {**recipes.get(str(name), {}), **read_fields(body, f"recipes.{name}", problems)[0]}
    return recipes


def axis_label(axis: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    return f"{axis}=none" if value is None else f"{axis}={value}"


def read_axis(axis: str, values: Any, recipes: Mapping[str, Any], problems: Problems) -> list[AxisEntry] | None:
    """The entries of one axis; None for an axis that cannot be one (reported)."""
    place = f"axes.{axis}"
    if values is None or (isinstance(values, (list, tuple, Mapping)) and len(values) == 0):
        problems.add(place, "is empty: the grid has no cells (give the axis at least one value)")
        return None
    if isinstance(values, Mapping):  # a bundle axis: label -> fields
        return [(str(lbl), *read_fields(body, f"{place}.{lbl}", problems, recipes)) for lbl, body in values.items()]
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
        problems.add(place, f"{NOT_A_FIELD}, nor `recipe`{suggest(axis, [*field_names(), 'recipe'])} (an axis of "
                     "named bundles is a mapping label -> fields)")
        return None
    for i, value in enumerate(values):
        try:
            typed = {axis: coerce_value(axis, value)}
        except ValueError as err:  # reported; the cell is checked without the field
            problems.add(f"{place}[{i}]", str(err))
            typed = {}
        entries.append((axis_label(axis, typed.get(axis, value)), typed, {axis: f"{place}[{i}]"}))
    return entries


def read_axes(raw: Mapping[str, Any], recipes: Mapping[str, Any], problems: Problems) -> list[tuple[str, list]]:
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
        entries = read_axis(str(axis), values, recipes, problems)
        if entries is None:
            continue
        labels = [e[0] for e in entries]
        for lb in labels:  # issue 17: a label names a folder under output_dir; "..", "." would leave it
            if safe_id(lb).strip(".") == "":
                problems.add(f"axes.{axis}", f"label {lb!r} is not a plain name: it would name a folder outside the "
                             "grid's output_dir; rename it (letters, digits, . _ + = -)")
        dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
        if dupes:
            problems.add(f"axes.{axis}", f"repeats {', '.join(map(repr, dupes))}")
        axes.append((str(axis), entries))
    return axes


def read_seeds(raw: Mapping[str, Any], problems: Problems) -> tuple[list[int], tuple[str, ...]]:
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


def read_head(raw: Mapping[str, Any], path: Path | None, problems: Problems) -> tuple[str, str | None]:
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
                     f"cdtm_hf/paper/paper_results.json has: {', '.join(tables)}")
    return name, table


def read_overrides(
    overrides: Mapping[str, Any] | None, axes: list[tuple[str, list[AxisEntry]]], problems: Problems
) -> tuple[dict[str, Any], dict[str, str]]:
    overrides = dict(overrides or {})
    if "recipe" in overrides:
        problems.add("overrides.recipe", "a recipe cannot be overridden (the cells' labels would no longer say what "
                     "ran); change the grid's recipe axis or set the fields themselves")
        overrides.pop("recipe")
    over, sources = read_fields(overrides, "overrides", problems)
    for axis, entries in axes:
        for key in sorted({k for _, values, _ in entries for k in values} & set(over)):
            problems.add(f"overrides.{key}", f"axes.{axis} sets {key}; overriding it would make the axis labels lie")
    return over, sources


def safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", text) or "_"


def build_cells(
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
        cell_id = "__".join(safe_id(lbl) for lbl in labels.values())
        if cell_id in ids and not checked_only:
            problems.add("axes", f"two cells get the folder name {cell_id!r} ({ids[cell_id]} and "
                         f"{tuple(labels.values())}); rename a label")
        ids[cell_id] = tuple(labels.values())
        cells.append(Cell(i, cell_id, labels, fields_, sources))
    return cells


def read_comparisons(raw: Mapping[str, Any], axes: dict[str, list[str]],
                     problems: Problems) -> list[tuple[str, str, str]]:
    """Issue 19: the grid's `compare` entry as `(axis, label A, label B)` triples, each A compared with B.

    `compare: lp` compares every other label of the axis that holds `lp` with it; `compare: [lp_cdtm vs lp, ...]`
    names the pairs, both labels of one axis.
    """
    spec = raw.get("compare")
    if spec is None:
        return []

    def axis_of(label: str) -> str | None:
        return next((axis for axis, labels in axes.items() if label in labels), None)

    out: list[tuple[str, str, str]] = []
    if isinstance(spec, str) and " vs " not in spec:
        axis = axis_of(spec)
        if axis is None:
            problems.add("compare", f"{spec!r} is no label of any axis; labels: "
                         f"{', '.join(f'{a}: {ls}' for a, ls in axes.items())}")
            return []
        return [(axis, label, spec) for label in axes[axis] if label != spec]
    for i, item in enumerate([spec] if isinstance(spec, str) else spec if isinstance(spec, list) else [None]):
        parts = [p.strip() for p in item.split(" vs ")] if isinstance(item, str) else []
        if len(parts) != 2:
            problems.add(f"compare[{i}]", f"must read 'A vs B' (two labels of one axis), got {item!r}")
            continue
        axis_a, axis_b = axis_of(parts[0]), axis_of(parts[1])
        if axis_a is None or axis_a != axis_b:
            problems.add(f"compare[{i}]", f"{item!r}: both sides must be labels of one axis; labels: "
                         f"{', '.join(f'{a}: {ls}' for a, ls in axes.items())}")
            continue
        out.append((axis_a, parts[0], parts[1]))
    return out
