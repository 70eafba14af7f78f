"""The one check of a backbone name, answered without importing torch or a backbone library where it can be.

[`backbone_problem`] says why a name cannot be built as a backbone (or None). A preset costs nothing. A timm or
open_clip name is looked up in that library's own registry (`timm.is_model`, `open_clip.list_models`). Importing either
takes seconds (each imports torch and registers every model it ships), which was most of the wait of a command line
that refuses `--backbone not_a_model` (issue 16). So the registry's names are remembered: one small JSON file per
installed library, `<HF_HOME>/cdtm_hf/model_names/<library>.json`, written the first time the registry is asked (or by
`remember_registries`, which `scripts/install.sh` calls) and keyed by where the library is installed, how many source
files it has and the newest of their modification times. An upgrade, a downgrade or an edited install changes the
key, and the registry is asked again. A library that is imported already is always asked itself (it may hold models
registered at run time); where the file cannot be written (a read-only home, a full disk), every check asks the
library.

`FieldError` (a bad value of one argument field) and `BACKBONE_LIBRARIES` live here too, so that the command lines
can raise the check's error before transformers is imported. This file imports nothing heavy at the top, and nothing
of cdtm_hf but `presets`; a checkpoint's remote code carries it beside `backbones.py`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from .presets import BACKBONE_PRESETS, check_backbone_available, suggest

logger = logging.getLogger(__name__)

BACKBONE_LIBRARIES = ("timm", "open_clip", "transformers")


class FieldError(ValueError):
    """A bad value of one argument field; `field` names it, so that a grid reports it at the place that set it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


#: what a missing library is told (timm is a dependency of transformers' TimmWrapper and of this package)
INSTALL_HINTS = {
    "timm": "timm backbones need timm: pip install timm",
    "open_clip": "open_clip backbones need open_clip_torch: pip install open_clip_torch",
}
#: library -> every model name its registry lists (architecture names: timm's carry no pretrained tag)
REGISTRY_LISTS: dict[str, Callable[[Any], list[str]]] = {
    "timm": lambda timm: timm.list_models(),
    "open_clip": lambda open_clip: open_clip.list_models(),
}
#: the file suffixes whose count and modification times key a library's remembered names
KEYED_SUFFIXES = (".py", ".json")


def backbone_problem(name: Any, library: str | None = None) -> str | None:
    """Why `name` cannot be built as a backbone of `library`, or None when it can: the one check of a backbone name.

    Args:
        name (`Any`): a preset of `cdtm_hf.BACKBONE_PRESETS`, a timm model name or an open_clip model name.
        library (`str`, *optional*): `"timm"`, `"open_clip"` or `"transformers"`; None accepts a preset or a timm
            model.

    Returns:
        `str | None`: the explanation (with the closest presets), or None. A preset costs no import; a timm or
        open_clip name is looked up in the library's registry (remembered across processes: this module's docstring).
    """
    if not isinstance(name, str) or not name:
        return f"backbone must be a preset or model name, got {name!r}"
    if name in BACKBONE_PRESETS:
        return None
    if library == "transformers":  # a model_type (AutoConfig.for_model), a local folder or a Hub id of a config
        return None if _transformers_name_ok(name) else (
            f"unknown transformers backbone {name!r}: pass a model_type of transformers' CONFIG_MAPPING (e.g. 'vit', "
            "'dinov2') with the config fields in backbone_kwargs, a folder holding a config.json, or a Hub id")
    try:
        check_backbone_available(name)
    except ValueError as err:
        return str(err)
    if library in (None, "timm") and is_timm_model(name):
        return None
    if library in (None, "open_clip") and is_open_clip_model(name, required=library == "open_clip"):
        if library == "open_clip":
            return None
        return f"{name!r} is an open_clip model: set backbone_library open_clip (and backbone_pretrained_tag)"
    kind = {"timm": "a timm model", "open_clip": "an open_clip model"}.get(library or "timm", f"a {library} model")
    return (f"unknown backbone {name!r}: not a preset of cdtm_hf.BACKBONE_PRESETS nor {kind}"
            f"{suggest(name, list(BACKBONE_PRESETS))}; presets: {', '.join(BACKBONE_PRESETS)}")


def backbone_arguments_problem(backbone: Any, library: str | None, model_name_or_path: str | None) -> str | None:
    """The check of a run's backbone arguments, for `ModelArguments` and the command line's early look at them: None
    with `model_name_or_path` (the checkpoint names its backbone) or where `library` is no library (the architecture
    check names that), else [`backbone_problem`]."""
    if model_name_or_path is not None or (library is not None and library not in BACKBONE_LIBRARIES):
        return None
    return backbone_problem(backbone, library)


def is_timm_model(name: str) -> bool:
    """`timm.is_model(name)`: whether the architecture, the name before any `.pretrained_tag`, is in timm's registry."""
    timm = sys.modules.get("timm")
    if timm is not None and hasattr(timm, "is_model"):
        return timm.is_model(name)
    return name.split(".", 1)[0] in registry_names("timm")  # timm's own rule (timm.models.split_model_name_tag)


def is_open_clip_model(name: str, required: bool = True) -> bool:
    """Whether `name` is in `open_clip.list_models()`; False where open_clip is not installed unless `required`."""
    open_clip = sys.modules.get("open_clip")
    if open_clip is not None and hasattr(open_clip, "list_models"):
        return name in open_clip.list_models()
    if not required and importlib.util.find_spec("open_clip") is None:
        return False
    return name in registry_names("open_clip")


def registry_names(library: str) -> frozenset[str]:
    """Every model name `library`'s registry lists, from the remembered file when its key still matches.

    Raises:
        `ImportError`: the library is not installed (the message says what to install).
    """
    root = _package_root(library)
    key = _install_key(root)
    path = os.path.join(memo_folder(), f"{library}.json")
    remembered = _read(path)
    if remembered is not None and remembered.get("key") == key and isinstance(remembered.get("names"), list):
        return frozenset(remembered["names"])
    names = frozenset(REGISTRY_LISTS[library](import_library(library)))
    _write(path, {"library": library, "key": key, "names": sorted(names)})
    return names


def remember_registries() -> dict[str, int]:
    """Ask every installed library's registry now and remember its names (what `scripts/install.sh` does after
    installing, so that even the first `--backbone` typo is refused at once); `{library: number of names}`."""
    return {library: len(registry_names(library)) for library in REGISTRY_LISTS if importlib.util.find_spec(library)}


def memo_folder() -> str:
    """Where the registries' names are remembered: `<HF_HOME>/cdtm_hf/model_names` (HF_HOME as huggingface_hub reads
    it: the environment variable, else `~/.cache/huggingface`)."""
    from huggingface_hub import constants

    return os.path.join(constants.HF_HOME, "cdtm_hf", "model_names")


def _package_root(library: str) -> str:
    spec = importlib.util.find_spec(library)  # finds a top-level package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(INSTALL_HINTS[library])
    return list(spec.submodule_search_locations)[0]


def _install_key(root: str) -> list:
    """`[folder, source files, newest modification time]` of an installed package: any change of the install changes
    it (a few milliseconds for timm's ~300 files)."""
    count, newest = 0, 0
    for folder, _, files in os.walk(root):
        for file in files:
            if file.endswith(KEYED_SUFFIXES):
                count += 1
                newest = max(newest, os.stat(os.path.join(folder, file)).st_mtime_ns)
    return [os.path.realpath(root), count, newest]


def import_library(library: str):
    """Import backbone library `library`; where it is absent, an ImportError that says what to install."""
    try:
        return importlib.import_module(library)
    except ImportError as err:  # pragma: no cover - exercised only where the library is absent
        raise ImportError(INSTALL_HINTS[library]) from err


def _read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):  # absent, unreadable or half-written by a process that died: ask the library
        return None
    return value if isinstance(value, dict) else None


def _write(path: str, value: dict) -> None:
    """Write `value` whole or not at all (a temporary file renamed over the old one); failing to is no error."""
    folder, temporary = os.path.dirname(path), None
    try:
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            json.dump(value, f)
        os.replace(temporary, path)
    except OSError as err:
        logger.debug("could not remember %s's model names in %s (%s); the registry is asked each time",
                     value.get("library"), path, err)
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _transformers_name_ok(name: str) -> bool:
    from transformers import CONFIG_MAPPING

    return name in CONFIG_MAPPING or os.path.isfile(os.path.join(name, "config.json")) or name.count("/") == 1
