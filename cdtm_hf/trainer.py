"""Staged fine-tuning (SFT) and the other fine-tuning modes of the CDTM paper, as a `transformers.Trainer`.

Modes (Sec. II-B):
    scratch  the backbone is re-initialised; everything trains.
    lp       linear probing: the backbone is frozen; CDTM (if any) and the head train.
    fft      full fine-tuning: everything trains from step 0.
    sft      staged: stage 1 = lp, stage 2 = fft, in one `train()` call with a fresh optimizer and scheduler
             at the boundary. As in the official code, stage 2 starts from stage 1's best-on-validation
             checkpoint at a tenth of the learning rate, and each stage warms up for 5 epochs, then decays.
             The model kept at the end is the best on validation across both stages (stage 1's best included).

Each stage runs under its own copy of the user's arguments; `trainer.args` is the user's again after `train()`.
What ran is recorded in `trainer.stage_records` (one dict per stage) and `trainer.selected_stage`.
See `docs/staged_finetuning.md`.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerState, default_data_collator
from transformers.integrations import TensorBoardCallback
from transformers.trainer import OPTIMIZER_NAME, OPTIMIZER_NAME_BIN, SCALER_NAME, SCHEDULER_NAME
from transformers.trainer_utils import get_last_checkpoint

from .feature_cache import build_feature_cache, cache_fits
from .modeling_cdtm import CDTMForImageClassification
from .training_args import FINETUNE_MODES, CDTMTrainingArguments, Stage, stage_plan

logger = logging.getLogger(__name__)

# The keys of one `CDTMTrainer.stage_records` entry (the run report's `training.stages`).
STAGE_RECORD_KEYS = (
    "stage", "backbone", "epochs", "learning_rate", "warmup_steps", "backbone_norm_eval", "backbone_lr_multiplier",
    "best_metric", "best_checkpoint",
)



def reinitialize_backbone(model: CDTMForImageClassification) -> None:
    """Scratch mode: replace the backbone's weights by its library's own random initialisation."""
    model.backbone.reinitialize()


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
    for checkpoint in [*root.glob("checkpoint-*"), *root.glob("*/checkpoint-*")]:
        for name in (OPTIMIZER_NAME, OPTIMIZER_NAME_BIN, SCHEDULER_NAME, SCALER_NAME):
            path = checkpoint / name
            if path.is_file():
                freed += path.stat().st_size
                path.unlink()
    if freed:
        logger.info("Removed %.1f MB of optimizer states from the checkpoints under %s", freed / 2**20, root)
    return freed


class StagedTensorBoardCallback(TensorBoardCallback):
    """`TensorBoardCallback` with one event stream for all stages: steps continue, the writer stays open between."""

    def __init__(self, tb_writer=None):
        super().__init__(tb_writer)
        self.step_offset = 0  # optimizer steps of the stages before this one
        self.hold_open = False  # True while more stages follow

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.step_offset:
            state = copy.copy(state)
            state.global_step += self.step_offset
        super().on_log(args, state, control, logs=logs, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        if not self.hold_open:
            self.close()

    def close(self) -> None:
        if self.tb_writer:
            self.tb_writer.close()
            self.tb_writer = None


def _batchnorm_layers(module: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _stochastic_layers(module: torch.nn.Module) -> int:
    """Dropout layers with p > 0 and drop-path (stochastic depth) layers with drop_prob > 0."""
    return sum(
        (isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0) or getattr(m, "drop_prob", 0) > 0
        for m in module.modules()
    )


# --------------------------------------------------------------------------------------------------------------
class CDTMTrainer(Trainer):
    """A `Trainer` that runs the CDTM fine-tuning modes; `train()` runs both SFT stages.

    Checkpoints of SFT go to `<output_dir>/stage1/checkpoint-*` and `<output_dir>/stage2/checkpoint-*`; stage 1's
    selected weights are also saved to `<output_dir>/stage1_best`. `train(resume_from_checkpoint=...)` accepts
    any of those checkpoints (or True for the latest) and continues from that point.

    After `train()`:
        - `stage_records` holds one dict per stage (keys `STAGE_RECORD_KEYS`), read from what ran;
          `best_checkpoint` is relative to `output_dir`.
        - `selected_stage` is the stage whose best-on-validation model is in memory (SFT: the better of the two).
        - `args` is the user's `CDTMTrainingArguments`, unchanged.
    """

    args: CDTMTrainingArguments

    def __init__(self, model: CDTMForImageClassification, args: CDTMTrainingArguments, **kwargs):
        if not isinstance(args, CDTMTrainingArguments):
            raise TypeError("CDTMTrainer needs CDTMTrainingArguments")
        kwargs.setdefault("data_collator", default_data_collator)
        super().__init__(model=model, args=args, **kwargs)
        self.root_output_dir = args.output_dir
        self.stage: Stage | None = None
        self.stage_records: list[dict[str, Any]] = []
        self.selected_stage: int | None = None
        self._best_checkpoints: dict[int, str] = {}
        self._datasets = (self.train_dataset, self.eval_dataset)
        callbacks = self.callback_handler.callbacks
        for i, callback in enumerate(callbacks):  # one TensorBoard event stream for all stages
            if type(callback) is TensorBoardCallback:
                staged = StagedTensorBoardCallback(callback.tb_writer)
                staged.logging_dir = callback.logging_dir or os.path.join(self.root_output_dir, "runs")
                callbacks[i] = staged

    # ---- stage management ----------------------------------------------------------------------------------
    def _stage_dir(self, stage: Stage) -> str:
        return os.path.join(self.root_output_dir, stage.subdir) if stage.subdir else self.root_output_dir

    def _resolve_resume(self, resume_from_checkpoint: str | bool | None, plan: list[Stage]) -> tuple[int, str | None]:
        """(index of the stage to start with, checkpoint to resume inside it)."""
        if resume_from_checkpoint in (None, False):
            return 0, None
        if resume_from_checkpoint is True:
            for i in reversed(range(len(plan))):
                stage_dir = self._stage_dir(plan[i])
                last = get_last_checkpoint(stage_dir) if os.path.isdir(stage_dir) else None
                if last is not None:
                    return i, last
            raise ValueError(f"resume_from_checkpoint=True but no checkpoint was found under {self.root_output_dir}")
        path = Path(resume_from_checkpoint).resolve()
        if not path.is_dir():
            raise ValueError(f"resume_from_checkpoint {str(path)!r} is not a checkpoint directory")
        for i, stage in enumerate(plan):
            if path.parent == Path(self._stage_dir(stage)).resolve():
                return i, str(path)
        return 0, str(path)

    def _norm_eval(self, stage: Stage, plan: list[Stage], user_args: CDTMTrainingArguments) -> bool:
        """Whether the backbone's BatchNorm statistics stay fixed while it trains in `stage`."""
        setting = user_args.backbone_norm_eval
        if setting != "auto":
            return bool(setting)
        after_frozen = stage.index > 1 and plan[stage.index - 2].frozen_backbone
        return not stage.frozen_backbone and after_frozen and _batchnorm_layers(self.model.backbone) > 0

    def _warmup_steps(self, stage: Stage, user_args: CDTMTrainingArguments, num_examples: int) -> int:
        batches = math.ceil(num_examples / (user_args.train_batch_size * max(1, user_args.world_size)))
        steps_per_epoch = max(1, math.ceil(batches / user_args.gradient_accumulation_steps))
        return int(min(user_args.warmup_epochs, stage.epochs) * steps_per_epoch)

    def _stage_args(self, stage: Stage, plan: list[Stage], user_args: CDTMTrainingArguments) -> CDTMTrainingArguments:
        """A copy of the user's arguments with this stage's output folder, epochs, learning rate and warmup."""
        args = copy.copy(user_args)
        args.output_dir = self._stage_dir(stage)
        args.num_train_epochs = stage.epochs
        args.learning_rate = stage.learning_rate
        args.warmup_steps = self._warmup_steps(stage, user_args, len(self._datasets[0]))
        if len(plan) > 1 and stage.index < len(plan) and not user_args.stage2_from_best:
            args.load_best_model_at_end = False  # the next stage starts from this stage's last weights
        return args

    def _enter_stage(self, stage: Stage, plan: list[Stage], user_args: CDTMTrainingArguments) -> None:
        self.stage = stage
        self.args = self._stage_args(stage, plan, user_args)
        model = self.model
        model.backbone_norm_eval = self._norm_eval(stage, plan, user_args)
        model.freeze_backbone(stage.frozen_backbone)
        self.optimizer, self.lr_scheduler = None, None  # a fresh optimizer and scheduler for every stage
        self.train_dataset, self.eval_dataset = self._frozen_inputs() if stage.frozen_backbone else self._datasets
        trainable, total = model.num_parameters(only_trainable=True), model.num_parameters()
        logger.info(
            "%s: stage %d/%d, backbone %s, %s epochs, lr %.2e, %d warmup steps, %d/%d parameters trainable (%.1f%%)",
            user_args.finetune_mode.upper(), stage.index, len(plan), "frozen" if stage.frozen_backbone else "trained",
            stage.epochs, stage.learning_rate, self.args.warmup_steps, trainable, total, 100 * trainable / total,
        )
        self._log_boundary(stage, plan, user_args)

    def _log_boundary(self, stage: Stage, plan: list[Stage], user_args: CDTMTrainingArguments) -> None:
        """Say what changes for the backbone's BatchNorm and dropout/drop-path layers when it starts to train."""
        if stage.frozen_backbone or not (stage.index > 1 and plan[stage.index - 2].frozen_backbone):
            return
        backbone = self.model.backbone
        n_bn = _batchnorm_layers(backbone)
        if n_bn and self.model.backbone_norm_eval:
            logger.info(
                "Stage %d: keeping the running statistics of the backbone's %d BatchNorm layers fixed "
                "(backbone_norm_eval=%s): stage %d trained CDTM and the head on features computed with them",
                stage.index, n_bn, user_args.backbone_norm_eval, stage.index - 1,
            )
        elif n_bn:
            logger.warning(
                "Stage %d: the backbone's %d BatchNorm layers switch to batch statistics and update their running "
                "statistics (backbone_norm_eval=False); validation may drop at the boundary", stage.index, n_bn,
            )
        n_drop = _stochastic_layers(backbone)
        if n_drop:
            logger.info(
                "Stage %d: the backbone's %d dropout/drop-path layers are active while it trains (off while it was "
                "frozen); they leave evaluation unchanged, so they stay on", stage.index, n_drop,
            )

    def _frozen_inputs(self) -> tuple[Any, Any]:
        """The train/eval datasets of a frozen stage: cached backbone tokens where the cache is on and fits."""
        train_ds, eval_ds = self._datasets
        if not self.args.feature_cache:
            return train_ds, eval_ds
        if self.args.augment:
            logger.info("Feature cache off: random augmentation changes the backbone input every epoch")
            return train_ds, eval_ds
        evals = eval_ds if isinstance(eval_ds, dict) else ({} if eval_ds is None else {"validation": eval_ds})
        cache_dir = self.args.feature_cache_dir or os.path.join(self.root_output_dir, "feature_cache")
        dtype = self.args.feature_cache_dtype
        fits, needed, free = cache_fits(self.model, {"train": train_ds, **evals}, cache_dir, dtype)
        if not fits:
            logger.warning(
                "Feature cache off: it needs about %.2f GB in %s (%s) but only %.2f GB are free; the frozen stage "
                "runs the backbone every epoch instead (pass --feature_cache_dir on a larger disk to use it)",
                needed / 1e9, cache_dir, dtype, free / 1e9,
            )
            return train_ds, eval_ds
        logger.info("Feature cache: about %.2f GB (%s) in %s", needed / 1e9, dtype, cache_dir)
        cached = {split: self._cached(ds, split, cache_dir) for split, ds in {"train": train_ds, **evals}.items()}
        train_cached = cached.pop("train")
        if isinstance(eval_ds, dict):
            return train_cached, cached
        return train_cached, cached.get("validation")

    def _cached(self, dataset, split: str, cache_dir: str):
        with self.accelerator.main_process_first():
            return build_feature_cache(
                self.model, dataset, cache_dir, batch_size=self.args.per_device_eval_batch_size,
                collate_fn=self.data_collator, num_workers=self.args.dataloader_num_workers,
                device=self.args.device, desc=f"Caching frozen backbone features ({split})",
                dtype=self.args.feature_cache_dtype,
            )

    # ---- the stages, their records and the final selection -------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        user_args = self.args
        plan = stage_plan(user_args)
        start, checkpoint = self._resolve_resume(resume_from_checkpoint, plan)
        if user_args.finetune_mode == "scratch" and checkpoint is None:
            reinitialize_backbone(self.model)
        self.stage_records, self.selected_stage, self._best_checkpoints = [], None, {}
        callbacks = self.callback_handler.callbacks
        tensorboard = next((c for c in callbacks if isinstance(c, StagedTensorBoardCallback)), None)
        step_offset = 0
        for stage in plan[:start]:  # stages a resumed run finished before: recorded from their checkpoints
            step_offset += self._record_from_checkpoint(stage, plan, user_args)
        output = None
        try:
            for stage in plan[start:]:
                self._enter_stage(stage, plan, user_args)
                if tensorboard is not None:
                    tensorboard.step_offset, tensorboard.hold_open = step_offset, stage is not plan[-1]
                output = super().train(resume_from_checkpoint=checkpoint, trial=trial, **kwargs)
                checkpoint = None
                self._record(stage, plan, user_args, self.state)
                step_offset += self.state.global_step
                if len(plan) > 1 and stage.index == 1:
                    # the weights stage 2 starts from: stage 1's best (load_best_model_at_end), or its last
                    # with stage2_from_best=False
                    self.save_model(os.path.join(self.root_output_dir, "stage1_best"))
            self._select_stage(user_args)
        finally:
            self.args = user_args
            self.train_dataset, self.eval_dataset = self._datasets
            if tensorboard is not None:
                tensorboard.close()
        return output

    def _record(self, stage: Stage, plan: list[Stage], user_args: CDTMTrainingArguments, state: TrainerState) -> None:
        """Append the record of a stage that ran (or finished before a resume), read from its trainer state."""
        best = state.best_model_checkpoint
        if best is not None:
            self._best_checkpoints[stage.index] = best
            root = os.path.abspath(self.root_output_dir)
            best_abs = os.path.abspath(best)
            best = os.path.relpath(best_abs, root) if best_abs.startswith(root + os.sep) else best
        self.stage_records.append({
            "stage": stage.index,
            "backbone": "frozen" if stage.frozen_backbone else "trained",
            "epochs": float(state.epoch) if state.epoch is not None else float(stage.epochs),
            "learning_rate": float(stage.learning_rate),
            "warmup_steps": self._warmup_steps(stage, user_args, len(self._datasets[0])),
            "backbone_norm_eval": self._norm_eval(stage, plan, user_args),
            "backbone_lr_multiplier": float(user_args.backbone_lr_multiplier),
            "best_metric": None if state.best_metric is None else float(state.best_metric),
            "best_checkpoint": best,
        })

    def _record_from_checkpoint(self, stage: Stage, plan: list[Stage], user_args: CDTMTrainingArguments) -> int:
        """Record a stage finished before a resume from its last checkpoint; return its optimizer steps."""
        stage_dir = self._stage_dir(stage)
        last = get_last_checkpoint(stage_dir) if os.path.isdir(stage_dir) else None
        if last is None:
            raise ValueError(
                f"resuming in a later stage, but stage {stage.index} left no checkpoint in {stage_dir}; "
                "resume from a checkpoint of stage 1 or start the run again"
            )
        state = TrainerState.load_from_json(os.path.join(last, "trainer_state.json"))
        self._record(stage, plan, user_args, state)
        return state.global_step

    def _select_stage(self, user_args: CDTMTrainingArguments) -> None:
        """Keep the best-on-validation model across the stages (SFT: stage 1's best is a candidate)."""
        last = self.stage_records[-1]
        self.selected_stage = last["stage"]
        if len(self.stage_records) < 2 or not user_args.load_best_model_at_end:
            return
        first = self.stage_records[0]
        m1, m2 = first["best_metric"], last["best_metric"]
        if m1 is None or m2 is None:
            return
        stage1_better = m1 > m2 if user_args.greater_is_better else m1 < m2
        checkpoint = self._best_checkpoints.get(first["stage"])
        if stage1_better and checkpoint and os.path.isdir(checkpoint):
            current = self.state.best_model_checkpoint
            self.state.best_model_checkpoint = checkpoint
            try:
                self._load_best_model()
            finally:
                self.state.best_model_checkpoint = current
            self.selected_stage = first["stage"]
        elif stage1_better:
            logger.warning("Stage 1's best checkpoint %s is gone; keeping stage %d's best", checkpoint, last["stage"])
        logger.info(
            "Selected stage %d: best %s %.4f in stage 1, %.4f in stage %d",
            self.selected_stage, user_args.metric_for_best_model, m1, m2, last["stage"],
        )

    # ---- optimizer: per-stage groups, backbone LR multiplier, no state for frozen parameters -----------------
    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups = []
        for in_backbone in (False, True):
            lr = self.args.learning_rate * (self.args.backbone_lr_multiplier if in_backbone else 1.0)
            for with_decay in (True, False):
                params = [
                    p for n, p in opt_model.named_parameters()
                    if p.requires_grad and n.startswith("backbone.") == in_backbone and (n in decay) == with_decay
                ]
                if params:
                    decay_value = self.args.weight_decay if with_decay else 0.0
                    groups.append({"params": params, "lr": lr, "weight_decay": decay_value})
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self.stage is not None:
            logs = {**logs, "stage": self.stage.index}
        super().log(logs, *args, **kwargs)


__all__ = [
    "FINETUNE_MODES",
    "STAGE_RECORD_KEYS",
    "CDTMTrainer",
    "CDTMTrainingArguments",
    "Stage",
    "StagedTensorBoardCallback",
    "prune_optimizer_states",
    "reinitialize_backbone",
    "stage_plan",
]
