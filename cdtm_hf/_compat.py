"""Old import paths of cdtm_hf 0.2, kept working for one release (0.3) with a `FutureWarning`; removed in 0.4.

0.3 moved the flat row of modules into folders by concern (`docs/architecture.md`). `import cdtm_hf.trainer`,
`from cdtm_hf.recipe import run_finetuning` and the like still work: a module that moved whole is the new module
itself (so `monkeypatch.setattr("cdtm_hf.recipe.x", ...)` patches the real one); a module that was split is a view of
the modules its names went to. Names that were removed are listed in `REMOVED`, with what replaces them.
`CHANGELOG.md` lists every move.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

REMOVAL = "0.4"

#: old module -> the module(s) its names live in now (the first is named in the warning)
MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "cdtm_hf.configuration_cdtm": ("cdtm_hf.core.configuration_cdtm",),
    "cdtm_hf.modeling_cdtm": ("cdtm_hf.core.modeling_cdtm",),
    "cdtm_hf.backbones": ("cdtm_hf.core.backbones",),
    "cdtm_hf.image_processing_cdtm": ("cdtm_hf.core.image_processing_cdtm",),
    "cdtm_hf.presets": ("cdtm_hf.core.presets",),
    "cdtm_hf.trainer": ("cdtm_hf.training.trainer", "cdtm_hf.training.arguments", "cdtm_hf.training.stages",
                        "cdtm_hf.training.output_dir"),
    "cdtm_hf.training_args": ("cdtm_hf.training.arguments", "cdtm_hf.training.stages"),
    "cdtm_hf.run_args": ("cdtm_hf.training.run_arguments", "cdtm_hf.training.stages", "cdtm_hf.training.output_dir"),
    "cdtm_hf.feature_cache": ("cdtm_hf.training.feature_cache",),
    "cdtm_hf.recipe": ("cdtm_hf.run", "cdtm_hf.training.run_arguments", "cdtm_hf.training.model_builder",
                       "cdtm_hf.data.transforms", "cdtm_hf.data.splits"),
    "cdtm_hf.metrics": ("cdtm_hf.evaluation.metrics",),
    "cdtm_hf.reporting": ("cdtm_hf.evaluation.reporting",),
    "cdtm_hf.efficiency": ("cdtm_hf.evaluation.efficiency", "cdtm_hf.cli.efficiency"),
    "cdtm_hf.explain": ("cdtm_hf.evaluation.explain", "cdtm_hf.evaluation.explain_plots"),
    "cdtm_hf.export": ("cdtm_hf.evaluation.export", "cdtm_hf.cli.export"),
    "cdtm_hf.predict": ("cdtm_hf.evaluation.predict", "cdtm_hf.cli.predict"),
    "cdtm_hf.evaluate_metrics": ("cdtm_hf.evaluation.evaluate_metrics",),
    "cdtm_hf.checkpoint": ("cdtm_hf.hub.checkpoint",),
    "cdtm_hf.cards": ("cdtm_hf.hub.cards", "cdtm_hf.hub.card_sections"),
    "cdtm_hf.pipeline": ("cdtm_hf.hub.pipeline",),
    "cdtm_hf.published": ("cdtm_hf.paper.recipes", "cdtm_hf.hub.recipe_cards"),
}

#: (module, name) -> the module the name moved to, for names that left a module that is still there
MOVED_NAMES: dict[tuple[str, str], str] = {
    **{("cdtm_hf.experiments.grid", n): "cdtm_hf.experiments.spec" for n in (
        "GRID_CONTROLLED", "GRID_KEYS", "RECIPE_FIELDS", "SEED_FIELDS", "Cell", "GridError", "Problems",
        "canonical_recipe")},
    **{("cdtm_hf.experiments.runner", n): "cdtm_hf.cli.grid" for n in ("build_parser", "parse_set")},
    ("cdtm_hf.experiments.checks", "suggest"): "cdtm_hf.core.presets",
}


def _split_manifest_of(dataset):
    """0.2's `split_manifest_of`: the manifest beside a builder's Arrow files."""
    import os

    import datasets

    from .data.manifest import MANIFEST_FILENAME, read_manifest

    ds = dataset[next(iter(dataset))] if isinstance(dataset, datasets.DatasetDict) else dataset
    for cache in ds.cache_files:
        path = os.path.join(os.path.dirname(cache["filename"]), MANIFEST_FILENAME)
        if os.path.isfile(path):
            return read_manifest(path)
    return None


def _validate_training_args(args) -> None:
    """0.2's `validate_training_args`: `CDTMTrainingArguments` now checks every field when it is built."""


def _check_backbone(name, library=None):
    from .core.backbone_names import backbone_problem

    return backbone_problem(name, library)


def _grid_main(argv=None):
    from .cli.grid import main

    return main(argv)


#: (old module, name) -> (what replaces it, an object or a callable that gives the old behaviour)
REMOVED: dict[tuple[str, str], tuple[str, Callable[[], Any]]] = {
    ("cdtm_hf.data", "split_manifest_of"): (
        "the manifest load_medical_dataset returns beside the dataset", lambda: _split_manifest_of),
    ("cdtm_hf.run_args", "validate_training_args"): (
        "nothing: CDTMTrainingArguments checks its fields when it is built", lambda: _validate_training_args),
    ("cdtm_hf.trainer", "reinitialize_backbone"): (
        "model.backbone.reinitialize()", lambda: (lambda model: model.backbone.reinitialize())),
    **{(m, "check_backbone"): ("cdtm_hf.core.backbone_names.backbone_problem", lambda: _check_backbone)
       for m in ("cdtm_hf.experiments", "cdtm_hf.experiments.checks")},
    ("cdtm_hf.experiments", "main"): ("cdtm_hf.cli.grid.main", lambda: _grid_main),
    ("cdtm_hf.experiments.runner", "main"): ("cdtm_hf.cli.grid.main", lambda: _grid_main),
    ("cdtm_hf.experiments", "load_paper_results"): (
        "cdtm_hf.paper.load_paper_results", lambda: importlib.import_module("cdtm_hf.paper").load_paper_results),
    ("cdtm_hf.experiments", "paper_row"): (
        "cdtm_hf.paper.paper_row", lambda: importlib.import_module("cdtm_hf.paper").paper_row),
    ("cdtm_hf.hub", "main"): ("cdtm_hf.cli.hub.main", lambda: importlib.import_module("cdtm_hf.cli.hub").main),
}


def _caller_stacklevel() -> int:
    """The `stacklevel` of the first frame outside the compat shims (`warnings` itself skips the import machinery's
    frames when it counts, so they are not counted here either)."""
    frame, level = sys._getframe(2), 2  # level 1 is _warn, 2 its caller
    while frame is not None:
        code = frame.f_code
        internal = "importlib" in code.co_filename and "_bootstrap" in code.co_filename
        if not internal:
            if not (code.co_filename.endswith(("_compat.py", "_lazy.py")) or code.co_name == "__getattr__"):
                return level
            level += 1
        frame = frame.f_back
    return level


def _warn(old: str, new: str, removed: bool = False) -> None:
    what = f"is deprecated: use {new}" if removed else f"moved to {new}"
    warnings.warn(f"{old} {what} (cdtm_hf 0.3); the old name goes in {REMOVAL}", FutureWarning,
                  stacklevel=_caller_stacklevel())


def removed_attribute(module: str, name: str) -> Any:
    """A module's `__getattr__` for the names it no longer has: the replacement, with a `FutureWarning`."""
    if (module, name) in REMOVED:
        new, get = REMOVED[(module, name)]
        _warn(f"{module}.{name}", new, removed=True)
        return get()
    if (module, name) in MOVED_NAMES:
        new = MOVED_NAMES[(module, name)]
        _warn(f"{module}.{name}", f"{new}.{name}")
        return getattr(importlib.import_module(new), name)
    if f"{module}.{name}" in MOVED_MODULES:
        return importlib.import_module(f"{module}.{name}")
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


class _MovedModule(types.ModuleType):
    """An old module that was split: its names are looked up in the modules they went to."""

    def __init__(self, name: str, targets: tuple[str, ...]):
        super().__init__(name)
        self.__targets = targets

    def __getattr__(self, name: str) -> Any:
        if (self.__name__, name) in REMOVED:
            return removed_attribute(self.__name__, name)
        for target in self.__targets:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(
            f"module {self.__name__!r} has no attribute {name!r} (it moved: {', '.join(self.__targets)})")


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module names of `MOVED_MODULES` and loads them as their new modules."""

    def find_spec(self, fullname, path, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        targets = MOVED_MODULES[spec.name]
        _warn(spec.name, " and ".join(targets) if len(targets) < 3 else f"{targets[0]} (and {len(targets) - 1} more)")
        if len(targets) == 1:
            return importlib.import_module(targets[0])  # the module itself: patching the old name patches it
        return _MovedModule(spec.name, targets)

    def exec_module(self, module):
        pass


def install() -> None:
    """Make the old module names importable (once per process)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
