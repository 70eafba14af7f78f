"""Validation of a saved CDTM checkpoint folder, and the exact list of files that may leave it.

A training run's output folder holds the best model (`config.json`, `model.safetensors`, the remote-code `*.py`
files, `preprocessor_config.json`), `test_results.json`, `confusion_matrix.png` and the model card, next to Trainer
bookkeeping (checkpoints, optimizer state, TensorBoard runs) that must never be published. This module tells the two
apart:

* `validate_checkpoint(dir)` checks that the folder is complete and pickle-free and returns the files to publish;
* `checkpoint_files(dir)` is the same list, under the name the push uses.

The remote code a checkpoint needs is found as transformers finds it when loading with `trust_remote_code=True`: the
modules named by `auto_map` in `config.json` and `preprocessor_config.json`, closed over their relative imports with
`transformers.dynamic_module_utils.get_relative_import_files`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers.dynamic_module_utils import get_relative_import_files
from transformers.utils import CONFIG_NAME, IMAGE_PROCESSOR_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from ..training.output_dir import TRAINER_STATE_PATTERNS, is_trainer_state

__all__ = [
    "CARD_NAME",
    "CONFUSION_MATRIX_NAME",
    "CheckpointError",
    "IGNORE_PATTERNS",
    "PICKLE_SUFFIXES",
    "RESULTS_NAME",
    "WEIGHTS_NAME",
    "check_model_source",
    "checkpoint_files",
    "read_json",
    "validate_checkpoint",
]

WEIGHTS_NAME = SAFE_WEIGHTS_NAME  # "model.safetensors"
WEIGHTS_INDEX_NAME = SAFE_WEIGHTS_INDEX_NAME  # "model.safetensors.index.json"
PREPROCESSOR_NAME = IMAGE_PROCESSOR_NAME  # "preprocessor_config.json"
CARD_NAME = "README.md"
RESULTS_NAME = "test_results.json"
CONFUSION_MATRIX_NAME = "confusion_matrix.png"

# Files published with the model when present (besides the weights and the remote-code *.py files).
OPTIONAL_FILES = (PREPROCESSOR_NAME, CARD_NAME, RESULTS_NAME, CONFUSION_MATRIX_NAME,
                  "reliability_diagram.png", "roc_pr_curves.png", "training_curves.png")  # issue 19: the card's plots
# Pickle formats: never published, and a checkpoint that holds one at its top level is refused.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
# A second guard for an upload, on top of the explicit allow-list of `checkpoint_files`. The Trainer's bookkeeping
# (pickles too, but no loader reads them as model weights) is tolerated in the folder and never published.
IGNORE_PATTERNS = [
    "checkpoint-*", "checkpoint-*/*", "checkpoints-*", "checkpoints-*/*", "runs/*", "*/runs/*", "_*",
    *TRAINER_STATE_PATTERNS, *(f"*{suffix}" for suffix in PICKLE_SUFFIXES),
]


class CheckpointError(ValueError):
    """The checkpoint folder is missing, incomplete, or holds a pickle."""


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON file of a checkpoint folder; a malformed one raises `CheckpointError` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}): re-save the checkpoint with save_pretrained") from err


def _auto_map_modules(checkpoint_dir: Path, config: Mapping[str, Any]) -> list[str]:
    """The module files named by the `auto_map` of config.json and preprocessor_config.json."""
    maps = [config.get("auto_map") or {}]
    if (checkpoint_dir / PREPROCESSOR_NAME).is_file():
        maps.append(read_json(checkpoint_dir / PREPROCESSOR_NAME).get("auto_map") or {})
    modules: list[str] = []
    for auto_map in maps:
        for ref in auto_map.values():
            for item in ref if isinstance(ref, (list, tuple)) else [ref]:
                if not item:
                    continue
                module = item.split("--")[-1].rsplit(".", 1)[0]  # "repo--module.Class" -> "module"
                name = module.replace(".", "/") + ".py"
                if name not in modules:
                    modules.append(name)
    return modules


def _remote_code_files(checkpoint_dir: Path, modules: list[str]) -> tuple[list[str], list[str]]:
    """(present, missing) files: `modules` and everything they import relatively, as transformers resolves it."""
    present: list[str] = []
    missing: list[str] = []
    for name in modules:
        path = checkpoint_dir / name
        if not path.is_file():
            missing.append(name)
            continue
        present.append(name)
        try:
            imported = get_relative_import_files(path)
        except FileNotFoundError as err:  # a module imports a file the folder lacks
            imported = []
            missing.append(Path(err.filename or "?").relative_to(checkpoint_dir).as_posix())
        for file in imported:
            present.append(Path(file).relative_to(checkpoint_dir).as_posix())
    missing = sorted(set(missing))
    return sorted(set(present) - set(missing)), missing


def _weight_files(checkpoint_dir: Path) -> list[str]:
    if (checkpoint_dir / WEIGHTS_NAME).is_file():
        return [WEIGHTS_NAME]
    index = checkpoint_dir / WEIGHTS_INDEX_NAME
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        missing = [s for s in shards if not (checkpoint_dir / s).is_file()]
        if missing:
            raise CheckpointError(
                f"{checkpoint_dir} has {WEIGHTS_INDEX_NAME} but lacks the shard(s) {', '.join(missing)}: copy them "
                "back or re-save the model with save_pretrained"
            )
        return [WEIGHTS_INDEX_NAME, *shards]
    raise CheckpointError(
        f"{checkpoint_dir} has no {WEIGHTS_NAME}: save the model with model.save_pretrained(dir) "
        "(safetensors is the only weight format this package publishes or loads)"
    )


def _refuse_pickles(checkpoint_dir: Path) -> None:
    pickles = sorted(
        p.name for p in checkpoint_dir.iterdir()
        if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES and not is_trainer_state(p.name)
    )
    if pickles:
        raise CheckpointError(
            f"{checkpoint_dir} contains pickle file(s) {', '.join(pickles)}: refusing, no pickle is ever pushed or "
            f"loaded. Save the weights as {WEIGHTS_NAME} (model.save_pretrained) and delete the pickle(s)."
        )


def validate_checkpoint(checkpoint_dir: str | Path) -> list[str]:
    """Check that a folder is a complete, pickle-free CDTM checkpoint; return the files to publish.

    Args:
        checkpoint_dir (`str` or `Path`): the folder `save_pretrained` wrote (a run's `--output_dir`).

    Returns:
        `list[str]`: the sorted relative paths to publish: `config.json`, the weights (`model.safetensors`, or the
        index and its shards), the remote-code files `auto_map` names and those they import, and
        `preprocessor_config.json`, `README.md`, `test_results.json`, `confusion_matrix.png` where present.

    Raises:
        `CheckpointError`: naming the problem and the remedy, when the folder does not exist; when a pickle (`.bin`,
        `.pt`, `.pth`, `.pkl`, ...) lies at its top level (Trainer's own `training_args.bin` and optimizer, scheduler
        and RNG state are tolerated, and never published); when `config.json` or the weights are missing; when
        `config.json` has no `auto_map`; or when a remote-code file named by `auto_map`, or imported by one, is missing.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise CheckpointError(
            f"checkpoint folder {checkpoint_dir} does not exist: pass the --output_dir of a finished run"
        )
    _refuse_pickles(checkpoint_dir)
    if not (checkpoint_dir / CONFIG_NAME).is_file():
        raise CheckpointError(f"{checkpoint_dir} has no {CONFIG_NAME}: save the model with model.save_pretrained(dir)")
    config = read_json(checkpoint_dir / CONFIG_NAME)
    weights = _weight_files(checkpoint_dir)
    modules = _auto_map_modules(checkpoint_dir, config)
    if not modules:
        raise CheckpointError(
            f"{checkpoint_dir / CONFIG_NAME} has no auto_map: the checkpoint cannot load with trust_remote_code "
            "where cdtm_hf is not installed. Save it with cdtm_hf imported (it registers the auto classes)."
        )
    code, missing = _remote_code_files(checkpoint_dir, modules)
    if missing:
        raise CheckpointError(
            f"{checkpoint_dir} lacks the remote-code file(s) {', '.join(missing)} named in auto_map (or imported "
            "by them): re-save with model.save_pretrained(dir) and CDTMImageProcessor.save_pretrained(dir)"
        )
    optional = [name for name in OPTIONAL_FILES if (checkpoint_dir / name).is_file()]
    return sorted({CONFIG_NAME, *weights, *code, *optional})


def checkpoint_files(checkpoint_dir: str | Path) -> list[str]:
    """The exact files (relative paths) that a push uploads from `checkpoint_dir`; see `validate_checkpoint`.

    Args:
        checkpoint_dir (`str` or `Path`): the checkpoint folder.
    """
    return validate_checkpoint(checkpoint_dir)


# ---- issue 17: a model source named on a command line, checked before anything is loaded ---------------------------
def _looks_local(name: str) -> bool:
    """Whether `name` can only be a local path: a Hub id is `name` or `namespace/name` (no leading `.`, `/`, `~`)."""
    return (name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or name.endswith(("/", "\\"))
            or "\\" in name or Path(name).exists())


def check_model_source(name: str | Path) -> None:
    """Refuse a model folder that does not exist, or whose `config.json` / `model.safetensors` is damaged.

    A Hub id (`namespace/name`) that is no local folder is left to `from_pretrained`.

    Raises:
        `FileNotFoundError`: `name` is a local path and no such folder exists ("no such folder").
        `CheckpointError`: `config.json` is not valid JSON, or `model.safetensors` is truncated or garbled; the
            message names the file and says to download or save it again.
    """
    text = str(name)
    if not _looks_local(text):
        return
    folder = Path(text).expanduser()
    if not folder.is_dir():
        kind = "is a file, not a model folder" if folder.exists() else "is no such folder"
        raise FileNotFoundError(
            f"model {text} {kind}: pass a folder written by save_pretrained (a run's --output_dir) or a Hub id "
            "namespace/name"
        )
    config = folder / CONFIG_NAME
    if config.is_file():
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{config} is damaged (not valid JSON); download or save it again") from None
    safetensors = sorted(folder.glob("model*.safetensors"))
    for weights in safetensors:
        _check_safetensors(weights)
    if not safetensors:
        _check_pickled_weights(folder)


def _check_safetensors(path: Path) -> None:
    """Open `path` and check every tensor lies inside the file (a cut download fails here, not in the model)."""
    from safetensors import SafetensorError, safe_open

    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            header_len = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = json.loads(f.read(header_len)) if 0 < header_len <= size - 8 else None
        if not isinstance(header, dict):
            raise ValueError("no header")
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end > size:
            raise ValueError("truncated")
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        raise CheckpointError(
            f"{path} is damaged (truncated or not a safetensors file); download or save it again"
        ) from None


def _check_pickled_weights(folder: Path) -> None:
    """A folder with only `pytorch_model*.bin` weights: refuse one that is not plain tensors, naming it."""
    import pickle

    import torch

    for path in sorted(folder.glob("pytorch_model*.bin")):
        try:
            try:
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # not torch's zip format: mmap cannot read it, the weights-only unpickler can
                torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise CheckpointError(
                f"{path} is not a plain tensor file (it holds pickled objects that would run code) and will not be "
                "loaded; use safetensors (model.safetensors, written by save_pretrained)"
            ) from None
        except (RuntimeError, OSError, EOFError):
            raise CheckpointError(f"{path} is damaged; download or save it again") from None
