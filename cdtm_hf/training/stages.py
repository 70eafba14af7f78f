"""The stage plan of a fine-tuning mode, the folders its stages write, and the one resolver of a resume point.

A single-stage mode (scratch, lp, fft) checkpoints into `<output_dir>/checkpoint-<step>`. SFT checkpoints stage 1 into
`<output_dir>/stage1/checkpoint-<step>` and stage 2 into `<output_dir>/stage2/checkpoint-<step>`, and saves the weights
stage 2 starts from into `<output_dir>/stage1_best`. Every place that needs these names reads them here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transformers.trainer_utils import get_last_checkpoint

if TYPE_CHECKING:
    from .arguments import CDTMTrainingArguments

FINETUNE_MODES = ("scratch", "lp", "fft", "sft")
#: the checkpoint folders of SFT's two stages, under `output_dir`
STAGE_DIRS = ("stage1", "stage2")
#: the weights SFT stage 2 starts from (stage 1's best on validation, or its last), under `output_dir`
STAGE1_BEST_DIR = "stage1_best"
TRAINER_STATE_NAME = "trainer_state.json"

__all__ = [
    "FINETUNE_MODES", "STAGE1_BEST_DIR", "STAGE_DIRS", "ResumePoint", "Stage", "list_checkpoints", "resolve_resume",
    "stage_plan",
]


@dataclass(frozen=True)
class Stage:
    """One stage of a fine-tuning mode, as planned."""

    index: int  # 1-based
    frozen_backbone: bool
    epochs: float
    learning_rate: float
    subdir: str  # "" for single-stage modes

    def output_dir(self, root: str | os.PathLike) -> str:
        """Where this stage's checkpoints go under the run's `root` output folder."""
        return os.path.join(root, self.subdir) if self.subdir else str(root)


def stage_plan(args: CDTMTrainingArguments) -> list[Stage]:
    """The stages of `args.finetune_mode`, with the epochs and peak learning rate each one is planned with."""
    if args.finetune_mode == "sft":
        lr2 = args.stage2_learning_rate if args.stage2_learning_rate is not None else args.learning_rate / 10
        return [
            Stage(1, True, args.stage1_epochs, args.learning_rate, STAGE_DIRS[0]),
            Stage(2, False, args.stage2_epochs, lr2, STAGE_DIRS[1]),
        ]
    return [Stage(1, args.finetune_mode == "lp", args.num_train_epochs, args.learning_rate, "")]


def _step(path: Path) -> int:
    tail = path.name.split("-")[-1]
    return int(tail) if tail.isdigit() else -1


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """A run's `checkpoint-<step>` folders in training order: single-stage ones, then stage 1's, then stage 2's."""
    root = Path(output_dir)
    found: list[Path] = []
    for folder in (root, *(root / d for d in STAGE_DIRS)):
        if folder.is_dir():
            found += sorted((p for p in folder.glob("checkpoint-*") if p.is_dir()), key=_step)
    return found


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues: the plan's stage (0-based index) and the checkpoint inside it."""

    stage_index: int
    checkpoint: str


def resolve_resume(
    value: str | bool | os.PathLike | None, output_dir: str | os.PathLike, plan: list[Stage]
) -> ResumePoint | None:
    """`resume_from_checkpoint` (from Python, or `"True"`/`"False"`/a path from a command line) as a resume point.

    `True` is the latest checkpoint of the latest stage that has one. A folder is the stage whose checkpoint folder
    holds it (stage 1 when it lies elsewhere). `None`, `False` and `"false"` start the run afresh.

    Raises:
        `FileNotFoundError`: `True` finds no checkpoint under `output_dir`, or the path is not a folder.
        `ValueError`: the folder holds no training state (such as `stage1_best`, stage 1's selected weights).
    """
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "none", ""):
        value = value.strip().lower() == "true"
    if value is None or value is False:
        return None
    if value is True:
        for index in reversed(range(len(plan))):
            folder = plan[index].output_dir(output_dir)
            last = get_last_checkpoint(folder) if os.path.isdir(folder) else None
            if last is not None:
                return ResumePoint(index, last)
        raise FileNotFoundError(
            f"--resume_from_checkpoint True found no checkpoint-* folder under {output_dir}; start without it, or "
            "pass the checkpoint folder of another run"
        )
    path = Path(value)
    if not path.is_dir():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {str(value)!r}: no such folder; pass True (the latest checkpoint under "
            "--output_dir) or a checkpoint-<step> folder"
        )
    if not (path / TRAINER_STATE_NAME).is_file():
        choices = ", ".join(str(p) for p in list_checkpoints(output_dir)[-4:]) or "none found under --output_dir"
        hint = (" It holds stage 1's selected weights, not a training state; to start a new run from them pass "
                f"--model_name_or_path {value}.") if path.name == STAGE1_BEST_DIR else ""
        raise ValueError(
            f"--resume_from_checkpoint {str(value)!r} is not a training checkpoint (no {TRAINER_STATE_NAME}).{hint} "
            f"To continue a run pass --resume_from_checkpoint True (its latest checkpoint) or a checkpoint folder: "
            f"{choices}"
        )
    resolved = path.resolve()
    for index, stage in enumerate(plan):
        if resolved.parent == Path(stage.output_dir(output_dir)).resolve():
            return ResumePoint(index, str(path))
    return ResumePoint(0, str(path))
