"""Checks of a grid cell before anything trains: its argument dataclasses' own checks, and its data folder.

A cell's values are checked by building its argument dataclasses, which hold the one check of every field
(`cdtm_hf.training.run_arguments`, `CDTMTrainingArguments`). A `FieldError` names the field, so the problem is
reported at the place in the grid file that set it (`axes.backbone[1]`, `base.learning_rate`, ...), and one
`GridError` lists every problem of the file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..core.configuration_cdtm import FieldError
from .fields import ARGUMENT_CLASSES

AddProblem = Callable[[str, str], None]

__all__ = ["check_cell_values"]


def check_cell_values(
    values: Mapping[str, Any], where: Callable[[str], str], add: AddProblem, check_paths: bool = True
) -> None:
    """Build each argument dataclass of one cell from `values` and report what its checks refuse.

    Args:
        values (`Mapping[str, Any]`): the cell's fields as one run receives them (typed, seed and output folder set).
        where (`Callable[[str], str]`): field name -> the place in the grid file that set it.
        add (`Callable[[str, str], None]`): receives (place, message) for every problem.
        check_paths (`bool`, *optional*, defaults to `True`): whether `data_dir` must exist.
    """
    for cls in ARGUMENT_CLASSES:
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        try:
            cls(**{k: v for k, v in values.items() if k in names})
        except FieldError as err:
            add(where(err.field), str(err))
        except (ValueError, TypeError) as err:  # TrainingArguments' own checks name no field
            add(where(""), f"{type(err).__name__}: {err}")
    data_dir = values.get("data_dir")
    if check_paths and data_dir and not Path(data_dir).exists():
        add(where("data_dir"), f"data_dir {data_dir!r} does not exist (relative paths are relative to the working "
            f"directory, {os.getcwd()}); fix the path, or pass --set data_dir=...")


def __getattr__(name: str):  # the names that moved out of this module in 0.3 (cdtm_hf._compat)
    from .._compat import removed_attribute

    return removed_attribute(__name__, name)
