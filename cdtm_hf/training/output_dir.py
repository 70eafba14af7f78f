"""A run's output folder: what a run writes into it, clearing a finished run, and pruning superseded optimizer state.

The Trainer's bookkeeping files are named here once (`OPTIMIZER_STATE_PATTERNS`, `TRAINER_STATE_PATTERNS`), as
patterns over what `Trainer` writes into a `checkpoint-<step>` folder; the Hub's upload guard reads them from here.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
from pathlib import Path

from .stages import STAGE1_BEST_DIR, STAGE_DIRS, list_checkpoints

logger = logging.getLogger(__name__)

__all__ = [
    "OPTIMIZER_STATE_PATTERNS", "RUN_FILES", "TRAINER_STATE_PATTERNS", "clear_output_dir", "is_trainer_state",
    "prune_optimizer_states",
]

#: the optimizer, scheduler and grad-scaler states `Trainer` saves in a checkpoint (what a resume needs besides the
#: weights, the RNG states and `trainer_state.json`)
OPTIMIZER_STATE_PATTERNS = ("optimizer.*", "scheduler.*", "scaler.*")
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
