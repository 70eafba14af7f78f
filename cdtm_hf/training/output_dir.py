"""A run's output folder: what a run writes into it, clearing a finished run, and pruning superseded optimizer state.

The Trainer's bookkeeping files are named here once (`OPTIMIZER_STATE_PATTERNS`, `TRAINER_STATE_PATTERNS`), as
patterns over what `Trainer` writes into a `checkpoint-<step>` folder; the Hub's upload guard reads them from here.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .stages import STAGE1_BEST_DIR, STAGE_DIRS, list_checkpoints

logger = logging.getLogger(__name__)

__all__ = [
    "LOCK_FILE", "OPTIMIZER_STATE_PATTERNS", "RUN_FILES", "TRAINER_STATE_PATTERNS", "check_disk_space",
    "check_output_dir", "clear_output_dir", "drop_incomplete_checkpoints", "is_trainer_state", "lock_output_dir",
    "prune_optimizer_states", "release_output_dir", "releases_output_dir_lock", "resume_hint",
]

#: the optimizer, scheduler and grad-scaler states `Trainer` saves in a checkpoint (what a resume needs besides the
#: weights, the RNG states and `trainer_state.json`)
#: (and the EMA of the weights of --model_ema, issue 18)
OPTIMIZER_STATE_PATTERNS = ("optimizer.*", "scheduler.*", "scaler.*", "model_ema.*")
#: every Trainer bookkeeping file of a checkpoint folder: pickles that no loader reads as model weights
TRAINER_STATE_PATTERNS = (*OPTIMIZER_STATE_PATTERNS, "rng_state*.pth", "training_args.bin", "trainer_state.json")

#: what a run writes into its output folder (besides the remote code files of the model core)
RUN_FILES = (
    "test_results.json", "test_results.md", "confusion_matrix.png", "README.md", "run_args.json", "training_args.json",
    "training_args.bin", "split_manifest.json", "config.json", "preprocessor_config.json", "model.safetensors",
    "model.safetensors.index.json", "all_results.json", "eval_results.json", "trainer_state.json",
    # issue 19: the plots and the test predictions the grid compares runs on
    "reliability_diagram.png", "roc_pr_curves.png", "training_curves.png", "test_predictions.npz",
)
RUN_DIRS = (*STAGE_DIRS, STAGE1_BEST_DIR, "runs", "explain")
RUN_MARKERS = ("test_results.json", "model.safetensors", "run_args.json", *STAGE_DIRS, "runs")


def is_trainer_state(name: str) -> bool:
    """Whether a file name is Trainer bookkeeping (`TRAINER_STATE_PATTERNS`)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in TRAINER_STATE_PATTERNS)


def _core_code_files() -> set[str]:
    """The remote-code files `save_pretrained` copies beside the weights: the model core's modules."""
    core = Path(__file__).resolve().parents[1] / "core"
    return {p.name for p in core.glob("*.py") if p.name != "__init__.py"}


def clear_output_dir(output_dir: str | os.PathLike, overwrite: bool) -> None:
    """Refuse an output folder that holds a run (finished or not) unless `overwrite`; then remove that run's files.

    The feature cache is kept: it is keyed by the data and the backbone's weights, so a new run can only reuse what
    matches it. Files that no run writes are left alone.

    Raises:
        `FileExistsError`: the folder holds a run and `overwrite` is False; the message names what was found.
    """
    root = Path(output_dir)
    found = [name for name in RUN_MARKERS if (root / name).exists()] + [p.name for p in list_checkpoints(root)[:1]]
    if not found:
        return
    if not overwrite:
        raise FileExistsError(
            f"output_dir {output_dir} already holds a run (found {', '.join(found)}). Pass --overwrite_output_dir to "
            "replace it (its files are removed first), --resume_from_checkpoint True to continue it, or another "
            "--output_dir"
        )
    code = _core_code_files()
    for path in root.iterdir():
        if path.is_dir() and (path.name in RUN_DIRS or path.name.startswith("checkpoint-")):
            shutil.rmtree(path)
        elif path.is_file() and (path.name in RUN_FILES or path.name in code or path.name.startswith("model-")):
            path.unlink()
    logger.info("Removed the previous run's files from %s (--overwrite_output_dir)", output_dir)


def prune_optimizer_states(output_dir: str | os.PathLike) -> int:
    """Delete the optimizer, scheduler and grad-scaler states of a finished run's checkpoints; return bytes freed.

    Looks at `output_dir/checkpoint-*` and `output_dir/<stage>/checkpoint-*`. The weights, `trainer_state.json` and
    RNG states stay, so each checkpoint can still be loaded and evaluated; resuming from one would start a fresh
    optimizer. Call it only after a run has finished.

    Args:
        output_dir (`str` or `os.PathLike`): the run's root output folder.
    """
    root = Path(output_dir)
    freed = 0
    for checkpoint in list_checkpoints(root):
        for path in checkpoint.iterdir():
            if path.is_file() and any(fnmatch.fnmatchcase(path.name, p) for p in OPTIMIZER_STATE_PATTERNS):
                freed += path.stat().st_size
                path.unlink()
    if freed:
        logger.info("Removed %.1f MB of optimizer states from the checkpoints under %s", freed / 2**20, root)
    return freed


# ---- issue 17: the output folder's pre-flight (where, writable, free space), its lock, the resume hint ----------
#: the lock file a running run holds (`fcntl.flock`) in its output folder; a crashed run's lock is released by the OS
LOCK_FILE = ".cdtm_run.lock"
_held_locks: dict[str, Any] = {}


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(output_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> None:
    """Refuse, before anything is written, an output folder inside the data folder, or one that cannot be written.

    Raises:
        `ValueError`: `output_dir` is `data_dir` or inside it (the run's files would be read as data next time).
        `PermissionError`: `output_dir` (or the folder it would be created in) is not writable; the message names it.
        `NotADirectoryError`: `output_dir` is a file.
    """
    out = Path(output_dir).resolve()
    if data_dir and Path(data_dir).is_dir():
        data = Path(data_dir).resolve()
        if out == data or data in out.parents:
            raise ValueError(
                f"--output_dir {output_dir} is inside --data_dir {data_dir}: the run's checkpoints, caches and PNGs "
                "would be written into the data set and read as images by the next run; pass an --output_dir "
                "outside the data folder"
            )
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output_dir {output_dir} is a file, not a folder; pass a folder")
    where = _existing_parent(out)
    try:
        tempfile.TemporaryFile(dir=where).close()
    except OSError as err:
        raise PermissionError(
            f"--output_dir {output_dir} cannot be written ({where} is read-only or not yours: "
            f"{err.strerror or err}); pass a writable --output_dir"
        ) from None


def check_disk_space(output_dir: str | os.PathLike, model: Any, checkpoints: int = 1) -> None:
    """Refuse a run whose final model and `checkpoints` checkpoints cannot fit on the free disk of `output_dir`.

    The estimate is float32 weights (the saved model and each checkpoint) plus AdamW's two moments of the trainable
    parameters (each checkpoint's optimizer state), against `shutil.disk_usage`, as the feature cache checks its own.

    Raises:
        `OSError` (ENOSPC): the message names the folder, the estimate and the free space.
    """
    weights = sum(p.numel() * 4 for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    needed = weights + max(1, checkpoints) * (weights + 8 * trainable)
    where = _existing_parent(Path(output_dir))
    free = shutil.disk_usage(where).free
    if needed > free:
        raise OSError(
            errno.ENOSPC,
            f"no space left in {output_dir}: the model ({weights / 2**20:.1f} MB) and {max(1, checkpoints)} "
            f"checkpoint(s) need about {needed / 2**20:.1f} MB, {free / 2**20:.1f} MB are free; free some space or "
            "pass another --output_dir",
        )


def lock_output_dir(output_dir: str | os.PathLike) -> None:
    """Hold `output_dir/LOCK_FILE` for this process (an exclusive `fcntl.flock`); refuse when another run holds it.

    The OS releases the lock when the process ends, however it ends, so a crashed run never leaves a stale lock.

    Raises:
        `FileExistsError`: another run is writing into `output_dir`; the message names its pid when recorded.
    """
    root = Path(output_dir)
    key = str(root.resolve())
    if key in _held_locks:
        return
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    path = root / LOCK_FILE
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            pid = handle.read().strip()
            handle.close()
            raise FileExistsError(
                f"another run{f' (pid {pid})' if pid else ''} is writing into --output_dir {output_dir}; wait for it "
                "to finish, or pass another --output_dir"
            ) from None
        try:  # the holder before us may have removed the file while we waited: lock the file that is there
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _held_locks[key] = handle


def resume_hint(output_dir: str | os.PathLike, train: bool = True) -> str:
    """One line for an interrupted run: what it kept in `output_dir` and the flag that continues it."""
    if not train:
        return f"stopped by Ctrl-C; nothing of the evaluation into {output_dir} is final, run the command again"
    kept = list_checkpoints(output_dir)
    if not kept:
        return (f"stopped by Ctrl-C before the first checkpoint; nothing to resume in {output_dir}: run the command "
                "again (add --overwrite_output_dir)")
    return (f"stopped by Ctrl-C; the last checkpoint {kept[-1]} is kept: run the same command with "
            "--resume_from_checkpoint True to continue")


def release_output_dir(output_dir: str | os.PathLike) -> None:
    """Release this process's lock of `output_dir` (`lock_output_dir`) and remove the lock file."""
    handle = _held_locks.pop(str(Path(output_dir).resolve()), None)
    if handle is not None:
        (Path(output_dir) / LOCK_FILE).unlink(missing_ok=True)
        handle.close()


def drop_incomplete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Remove the `checkpoint-*` folders a failed save left without `trainer_state.json` (the Trainer writes it last),
    so that `--resume_from_checkpoint True` continues from the last complete one; return the folders removed."""
    removed = [p for p in list_checkpoints(output_dir) if not (p / "trainer_state.json").is_file()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
        logger.warning("Removed the incomplete checkpoint %s (its save failed)", path)
    return removed


def releases_output_dir_lock(run):
    """Decorate a run function `(model_args, data_args, training_args, ...)`: when it returns or raises, the lock
    its pre-flight took on `training_args.output_dir` is released (a grid runs many in one process)."""
    import functools

    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        finally:
            training_args = kwargs.get("training_args", args[2] if len(args) > 2 else None)
            if training_args is not None:
                release_output_dir(training_args.output_dir)

    return wrapper
