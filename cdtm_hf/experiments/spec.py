"""The vocabulary of a grid file (its keys, the named recipes, the fields a grid controls) and its cells."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..training.knobs import KNOB_FIELDS
from .fields import ARGUMENT_CLASSES, field_default

__all__ = ["GRID_CONTROLLED", "GRID_KEYS", "RECIPE_FIELDS", "SEED_FIELDS", "Cell", "GridError", "Problems",
           "canonical_recipe"]

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
    # issue 18: SFT + CDTM with timm's fine-tuning knobs, a histology recipe (tiles have no up or down)
    "sft_cdtm_timm": {"finetune_mode": "sft", "use_cdtm": True, "layer_decay": 0.75, "drop_path_rate": 0.1,
                      "model_ema": True, "mixup": 0.8, "cutmix": 1.0, "label_smoothing_factor": 0.1, "vflip": 0.5,
                      "auto_augment": "rand-m9-mstd0.5-inc1"},
}

#: Top-level keys of a grid file.
GRID_KEYS: dict[str, str] = {
    "name": "the grid's name (default: the file name)",
    "description": "free text, copied into results.md",
    "paper_table": "a table of cdtm_hf/paper/paper_results.json whose values are printed beside ours",
    "base": "fields shared by every cell (ModelArguments, DataArguments, CDTMTrainingArguments, or `recipe`)",
    "recipes": "extra named recipes: name -> fields",
    "axes": "axis -> list of values (a field, or `recipe`) or mapping label -> fields; cells = their product",
    "seeds": "training seeds; every cell runs once per seed (default [42])",
    "seed_fields": "fields that receive the seed (default [seed]; also data_seed, split_seed)",
    "output_dir": "where runs and tables go (default grids/<name>)",
    # issue 19
    "compare": "paired comparisons on the same test images: a baseline label (every other label of its axis vs it) "
               "or a list of 'A vs B' labels of one axis, e.g. [lp_cdtm vs lp, sft_cdtm vs fft]",
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
NOT_A_FIELD = f"unknown key: not a field of {', '.join(c.__name__ for c in ARGUMENT_CLASSES)}"

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

    A non-scratch run whose backbone does not start from pretrained weights gets `_random_init` (and matches none);
    a run with any of timm's fine-tuning knobs on (`cdtm_hf.training.knobs.KNOB_FIELDS`) gets `_timm`.
    """
    mode = fields.get("finetune_mode", field_default("finetune_mode"))
    use_cdtm = fields.get("use_cdtm", field_default("use_cdtm"))
    pretrained = fields.get("backbone_pretrained", field_default("backbone_pretrained"))
    key = f"{mode}{'_cdtm' if use_cdtm else ''}"
    if mode != "scratch" and not pretrained and not fields.get("model_name_or_path"):
        key += "_random_init"
    if any(k in fields and fields[k] != field_default(k) for k in KNOB_FIELDS):
        key += "_timm"  # issue 18: timm's fine-tuning knobs on; not the paper's recipe
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
