"""Checks of a grid cell's values before anything trains: backbone, choices, data set, data folder.

Each check reports through an `add(where, message)` callable, so that one `GridError` lists every problem of a grid
file by its place (`axes.backbone[1]`, `base.data_dir`, ...).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..configuration_cdtm import BACKBONE_LIBRARIES, CDTM_VARIANTS, HEAD_TYPES
from ..presets import BACKBONE_PRESETS, check_backbone_available
from ..trainer import FINETUNE_MODES

AddProblem = Callable[[str, str], None]


def suggest(word: Any, candidates: Sequence[str]) -> str:
    """' (did you mean 'a' or 'b'?)' for the close matches of `word`, '' when there are none."""
    close = difflib.get_close_matches(str(word), list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def check_backbone(name: Any, library: str | None = None) -> str | None:
    """Why `name` cannot be built as a backbone, or None when it can.

    Args:
        name (`Any`): a preset of `cdtm_hf.BACKBONE_PRESETS`, a timm model name or an open_clip model name.
        library (`str`, *optional*): `"timm"` or `"open_clip"`; None accepts a preset or a timm model.

    Returns:
        `str | None`: the explanation (with the close presets), or None.
    """
    if not isinstance(name, str) or not name:
        return f"backbone must be a preset or model name, got {name!r}"
    if name in BACKBONE_PRESETS:
        return None
    try:
        check_backbone_available(name)  # the core's one check for backbones no maintained library ships
    except ValueError as err:
        return str(err)
    if library in (None, "timm"):
        import timm

        if timm.is_model(name):
            return None
    if library in (None, "open_clip"):
        import open_clip

        if name in open_clip.list_models():
            if library == "open_clip":
                return None
            return f"{name!r} is an open_clip model: set backbone_library: open_clip (and backbone_pretrained_tag)"
    kind = {"timm": "a timm model", "open_clip": "an open_clip model"}.get(library or "timm", f"a {library} model")
    return (f"unknown backbone {name!r}: not a preset of cdtm_hf.BACKBONE_PRESETS nor {kind}"
            f"{suggest(name, list(BACKBONE_PRESETS))}; presets: {', '.join(BACKBONE_PRESETS)}")


def check_cell_values(
    value: Callable[[str], Any], where: Callable[[str], str], add: AddProblem, check_paths: bool = True
) -> None:
    """Check one cell's backbone, choice fields, data set, its config and split strategy, and its data folder.

    Args:
        value (`Callable[[str], Any]`): field name -> the cell's value (its default when the grid does not set it).
        where (`Callable[[str], str]`): field name -> the place in the grid file that set it.
        add (`Callable[[str, str], None]`): receives (place, message) for every problem.
        check_paths (`bool`, *optional*, defaults to `True`): whether `data_dir` must exist.
    """
    if not value("model_name_or_path"):
        library = value("backbone_library")
        if library is not None and library not in BACKBONE_LIBRARIES:
            add(where("backbone_library"), f"backbone_library {library!r} is not one of: "
                f"{', '.join(BACKBONE_LIBRARIES)}{suggest(library, BACKBONE_LIBRARIES)}")
        else:
            why = check_backbone(value("backbone"), library)
            if why:
                add(where("backbone"), why)
    for name, allowed in (("head_type", HEAD_TYPES), ("cdtm_variant", tuple(CDTM_VARIANTS)),
                          ("finetune_mode", FINETUNE_MODES)):
        if value(name) not in allowed:
            add(where(name), f"{name} {value(name)!r} is not one of: {', '.join(allowed)}"
                f"{suggest(value(name), allowed)}")
    _check_dataset(value, where, add)
    data_dir, dataset = value("data_dir"), value("dataset")
    if check_paths:
        if dataset == "imagefolder" and not data_dir:
            add(where("data_dir"), "dataset imagefolder needs data_dir")
        elif data_dir and not Path(data_dir).exists():
            add(where("data_dir"), f"data_dir {data_dir!r} does not exist (relative paths are relative to the "
                f"working directory, {os.getcwd()}); fix the path, or pass --set data_dir=...")


def _check_dataset(value: Callable[[str], Any], where: Callable[[str], str], add: AddProblem) -> None:
    dataset = value("dataset")
    if dataset == "imagefolder":
        return
    from ..data import SPLIT_STRATEGIES, get_builder_class

    try:
        builder = get_builder_class(dataset)
    except ValueError as err:
        add(where("dataset"), f"{err}; or imagefolder")
        return
    configs = [c.name for c in builder.BUILDER_CONFIGS]
    config = value("dataset_config")
    if config is not None and config not in configs:
        add(where("dataset_config"), f"{dataset} has no config {config!r}{suggest(config, configs)}; configs: "
            f"{', '.join(configs)}")
    strategy = value("split_strategy")
    if strategy not in SPLIT_STRATEGIES:
        add(where("split_strategy"), f"split_strategy {strategy!r} is not one of: {', '.join(SPLIT_STRATEGIES)}"
            f"{suggest(strategy, SPLIT_STRATEGIES)}")
