"""Staged fine-tuning (SFT) and the other fine-tuning modes of the CDTM paper, as a `transformers.Trainer`.

Modes (Sec. II-B):
    scratch  the backbone is re-initialised; everything trains.
    lp       linear probing: the backbone is frozen; CDTM (if any) and the head train.
    fft      full fine-tuning: everything trains from step 0.
    sft      staged: stage 1 = lp, stage 2 = fft, in one `train()` call with a fresh optimizer and scheduler
             at the boundary. As in the official code, stage 2 starts from stage 1's best-on-validation
             checkpoint at a tenth of the learning rate, and each stage warms up for 5 epochs, then decays.
             The model kept at the end is the best on validation across both stages (stage 1's best included).

The module is one subject, the one Trainer subclass that runs every stage.

`CDTMTrainer.train()` runs each stage with a `CDTMTrainer` of its own: the same class, built with that stage's copy
of the arguments, its datasets (cached backbone tokens while the backbone is frozen) and a fresh optimizer. Only what
transformers documents is used: the constructor, `train()`, `state`, `save_model()`, the callbacks and the
`create_optimizer` override point. The trainer the user built keeps the user's arguments. What ran is recorded in
`trainer.stage_records` (one dict per stage) and `trainer.selected_stage`. See `docs/staged_finetuning.md`.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from typing import Any

import torch
from transformers import Trainer, TrainerState, default_data_collator
from transformers.integrations import TensorBoardCallback
from transformers.trainer_utils import get_last_checkpoint

from ..core.modeling_cdtm import CDTMForImageClassification
from .arguments import CDTMTrainingArguments
from .ema import keep_ema_if_better, read_ema_result
from .feature_cache import build_feature_cache, cache_fits
from .knobs import mixes_inputs, prepare_knobs
from .mixup import build_mixup
from .lora import apply_lora, merge_lora, method_record, uses_lora
from .optim import parameter_groups
from .stages import STAGE1_BEST_DIR, TRAINER_STATE_NAME, Stage, resolve_resume, stage_plan
from .run_arguments import SECRET_FIELDS
from .selection import best_epoch_record, kept_stage  # issue 19
from .tie_break import TieBreakOnLossCallback, tied_evaluations  # issue 19 item 9: ties within a stage
from .weights import load_saved_weights

logger = logging.getLogger(__name__)

__all__ = ["STAGE_RECORD_KEYS", "CDTMTrainer", "StagedTensorBoardCallback"]

# The keys of one `CDTMTrainer.stage_records` entry (the run report's `training.stages`).
STAGE_RECORD_KEYS = (
    "stage", "backbone", "epochs", "learning_rate", "warmup_steps", "backbone_norm_eval", "backbone_lr_multiplier",
    "best_metric", "best_checkpoint", "layer_decay", "ema",
    # issue 19: the kept checkpoint's epoch, step and validation loss; whether the metric was still rising
    "best_epoch", "best_step", "best_eval_loss", "eval_epochs", "still_improving",
    # issue 20: how the backbone trained ("frozen", "full", "lora"), the LoRA rank, what share of the model trained
    "method", "lora_r", "trainable_parameters", "trainable_share",
    # issue 19 item 9: the other evaluations that tied the kept one on the selection metric, and their losses
    "tied_epochs", "tied_losses",
)


class StagedTensorBoardCallback(TensorBoardCallback):
    """`TensorBoardCallback` with one event stream for all stages: steps continue, the writer stays open between.

    Args:
        tb_writer (`SummaryWriter`, *optional*): the writer; one is made in `logging_dir` at the first stage.
        logging_dir (`str`, *optional*): where the events go (the run's `<output_dir>/runs`).
    """

    def __init__(self, tb_writer=None, logging_dir: str | None = None):
        super().__init__(tb_writer)
        self.logging_dir = self.logging_dir or logging_dir
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


def _integrations(report_to: Any) -> list[str]:
    if report_to is None:
        return []
    return [report_to] if isinstance(report_to, str) else list(report_to)


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
        - `state` is the last stage's `TrainerState`; `args` is the user's `CDTMTrainingArguments`, unchanged.

    Args:
        model (`CDTMForImageClassification`): the model; every stage trains this object.
        args (`CDTMTrainingArguments`): the fine-tuning mode and its hyperparameters.
        stage (`Stage`, *optional*): set on the trainer of one stage, which `train()` builds; leave it out.
        kwargs: the other `Trainer` arguments (`train_dataset`, `eval_dataset`, `processing_class`,
            `compute_metrics`, `callbacks`, ...). Each stage builds its own optimizer and scheduler, so `optimizers`
            and `model_init` are refused.
    """

    args: CDTMTrainingArguments

    def __init__(
        self, model: CDTMForImageClassification, args: CDTMTrainingArguments, stage: Stage | None = None, **kwargs
    ):
        if not isinstance(args, CDTMTrainingArguments):
            raise TypeError("CDTMTrainer needs CDTMTrainingArguments")
        if kwargs.get("model_init") is not None or any(o is not None for o in kwargs.get("optimizers") or ()):
            raise ValueError("CDTMTrainer builds each stage's optimizer and scheduler (create_optimizer); give the "
                             "optimizer's settings in CDTMTrainingArguments (optim, learning_rate, weight_decay, ...) "
                             "instead of optimizers= or model_init=")
        kwargs.setdefault("data_collator", default_data_collator)
        self.ema_callback = prepare_knobs(model, args, kwargs, stage)  # issue 18: layer_decay, channels_last, EMA
        # the callbacks every stage's trainer shares: the user's (given here or through add_callback) and the
        # TensorBoard stream
        self._shared_callbacks: list = list(kwargs.get("callbacks") or [])
        self._sharing = False  # Trainer.__init__ adds its own progress callback, which every trainer makes itself
        super().__init__(model=model, args=args, **kwargs)
        self._sharing = True
        self.stage = stage
        self.mixup = build_mixup(args, model.config)  # None without --mixup/--cutmix
        self.stage_records: list[dict[str, Any]] = []
        self.selected_stage: int | None = None
        self._best_checkpoints: dict[int, str] = {}
        # what each stage's trainer is built with, besides its own arguments, datasets and the shared callbacks
        self._stage_kwargs = {k: v for k, v in kwargs.items()
                              if k not in ("train_dataset", "eval_dataset", "callbacks")}
        self.tensorboard: StagedTensorBoardCallback | None = None
        plain = self.pop_callback(TensorBoardCallback) if stage is None else None
        if plain is not None:  # one event stream for all stages, shared by the stages' trainers
            self.tensorboard = StagedTensorBoardCallback(
                plain.tb_writer, logging_dir=plain.logging_dir or os.path.join(args.output_dir, "runs"))
            self.add_callback(self.tensorboard)

    # ---- callbacks: what is added to this trainer is shared with its stages' trainers ---------------------------
    def add_callback(self, callback):
        super().add_callback(callback)
        if self._sharing:
            self._shared_callbacks.append(callback)

    def pop_callback(self, callback):
        popped = super().pop_callback(callback)
        self._forget_callback(popped if popped is not None else callback)
        return popped

    def remove_callback(self, callback):
        super().remove_callback(callback)
        self._forget_callback(callback)

    def _forget_callback(self, callback) -> None:
        self._shared_callbacks = [
            c for c in self._shared_callbacks
            if not (c is callback or (isinstance(callback, type) and type(c) is callback))
        ]

    # ---- the stages -------------------------------------------------------------------------------------------
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

    def _stage_args(self, stage: Stage, plan: list[Stage]) -> CDTMTrainingArguments:
        """A copy of the user's arguments with this stage's output folder, epochs, learning rate and warmup."""
        user_args = self.args
        args = copy.copy(user_args)
        args.output_dir = stage.output_dir(user_args.output_dir)
        args.num_train_epochs = stage.epochs
        args.learning_rate = stage.learning_rate
        args.warmup_steps = self._warmup_steps(stage, user_args, len(self.train_dataset))
        if len(plan) > 1 and stage.index < len(plan) and not user_args.stage2_from_best:
            args.load_best_model_at_end = False  # the next stage starts from this stage's last weights
        if self.tensorboard is not None:  # the stages share self.tensorboard instead of making their own
            args.report_to = [r for r in _integrations(user_args.report_to) if r != "tensorboard"]
        return args

    def _stage_trainer(self, stage: Stage, plan: list[Stage]) -> CDTMTrainer:
        """The trainer of one stage: its arguments, the backbone frozen or not, its datasets, a fresh optimizer."""
        model = self.model
        model.backbone_norm_eval = self._norm_eval(stage, plan, self.args)
        model.freeze_backbone(stage.frozen_backbone)
        if uses_lora(stage, self.args):  # issue 20: adapters on the backbone, CDTM and the head fully
            self._lora_records[stage.index] = apply_lora(model, self.args)
        args = self._stage_args(stage, plan)
        train_ds, eval_ds = self._frozen_inputs() if stage.frozen_backbone else (self.train_dataset, self.eval_dataset)
        runner = CDTMTrainer(model=model, args=args, stage=stage, train_dataset=train_ds, eval_dataset=eval_ds,
                             callbacks=[*self._shared_callbacks, TieBreakOnLossCallback()], **self._stage_kwargs)
        trainable, total = model.num_parameters(only_trainable=True), model.num_parameters()
        logger.info(
            "%s: stage %d/%d, backbone %s, %s epochs, lr %.2e, %d warmup steps, %d/%d parameters trainable (%.1f%%)",
            self.args.finetune_mode.upper(), stage.index, len(plan), "frozen" if stage.frozen_backbone else "trained",
            stage.epochs, stage.learning_rate, args.warmup_steps, trainable, total, 100 * trainable / total,
        )
        self._log_boundary(stage, plan, self.args)
        return runner

    def _log_boundary(self, stage: Stage, plan: list[Stage], user_args: CDTMTrainingArguments) -> None:
        """Say what changes for the backbone's BatchNorm and dropout/drop-path layers when it starts to train."""
        if stage.frozen_backbone or not (stage.index > 1 and plan[stage.index - 2].frozen_backbone):
            return
        backbone = self.model.backbone
        n_bn = _batchnorm_layers(backbone)
        if n_bn and self.model.backbone_norm_eval:
            logger.info(
                "Stage %d: keeping the running statistics of the backbone's %d BatchNorm layers fixed "
                "(backbone_norm_eval=%s): stage %d trained %s on features computed with them",
                stage.index, n_bn, user_args.backbone_norm_eval, stage.index - 1,
                "CDTM and the head" if self.model.config.use_cdtm else "the head",  # issue 19: no CDTM, no claim
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
        train_ds, eval_ds = self.train_dataset, self.eval_dataset
        if not self.args.feature_cache:
            return train_ds, eval_ds
        if self.args.augment or mixes_inputs(self.args):
            logger.info("Feature cache off: random augmentation (or mixup) changes the backbone input every epoch")
            return train_ds, eval_ds
        evals = eval_ds if isinstance(eval_ds, dict) else ({} if eval_ds is None else {"validation": eval_ds})
        cache_dir = self.args.feature_cache_dir or os.path.join(self.args.output_dir, "feature_cache")
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
                dtype=self.args.feature_cache_dtype, disable_tqdm=self.args.disable_tqdm,
            )

    # ---- the stages, their records and the final selection -----------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        """Run every stage of the fine-tuning mode (from the resume point on), then keep the best model."""
        if self.stage is not None:  # the trainer of one stage
            return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
        plan = stage_plan(self.args)
        point = resolve_resume(resume_from_checkpoint, self.args.output_dir, plan)
        start, checkpoint = (point.stage_index, point.checkpoint) if point else (0, None)
        if self.args.finetune_mode == "scratch" and checkpoint is None:
            self.model.backbone.reinitialize()
        self.stage_records, self.selected_stage, self._best_checkpoints = [], None, {}
        self._lora_records: dict[int, dict[str, Any]] = {}
        step_offset = sum(self._record_from_checkpoint(stage, plan) for stage in plan[:start])
        output = None
        try:
            for stage in plan[start:]:
                runner = self._stage_trainer(stage, plan)
                if self.tensorboard is not None:
                    self.tensorboard.step_offset, self.tensorboard.hold_open = step_offset, stage is not plan[-1]
                output = runner.train(resume_from_checkpoint=checkpoint, trial=trial, **kwargs)
                checkpoint = None
                ema = keep_ema_if_better(runner, runner.ema_callback) if runner.ema_callback else None
                # what the last stage ran with, for inspection (each stage built its own)
                self.state, self.optimizer, self.lr_scheduler = runner.state, runner.optimizer, runner.lr_scheduler
                self._record(stage, plan, runner.state, ema)
                step_offset += runner.state.global_step
                if len(plan) > 1 and stage.index == 1:
                    # the weights stage 2 starts from: stage 1's best (load_best_model_at_end), or its last with
                    # stage2_from_best=False
                    runner.save_model(os.path.join(self.args.output_dir, STAGE1_BEST_DIR))
            merge_lora(self.model)  # the kept model is a plain CDTM checkpoint (issue 20)
            self._select_stage()
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()
        return output

    def _record(self, stage: Stage, plan: list[Stage], state: TrainerState, ema: dict | None = None) -> None:
        """Append the record of a stage that ran (or finished before a resume), read from its trainer state."""
        # issue 19: each stage's log history, for the training-curves plot
        self.stage_log_histories = {**getattr(self, "stage_log_histories", {}), stage.index: list(state.log_history)}
        best, best_metric = state.best_model_checkpoint, state.best_metric
        if ema and ema["kept"]:  # --model_ema: the kept EMA weights are the stage's best model (stage1_best in SFT)
            best_metric = ema["metric"]
            best = os.path.join(self.args.output_dir, STAGE1_BEST_DIR) if stage.index < len(plan) else None
        if best is not None:
            self._best_checkpoints[stage.index] = best
            root = os.path.abspath(self.args.output_dir)
            best_abs = os.path.abspath(best)
            best = os.path.relpath(best_abs, root) if best_abs.startswith(root + os.sep) else best
        self.stage_records.append({
            "stage": stage.index,
            "backbone": "frozen" if stage.frozen_backbone else "trained",
            "epochs": float(state.epoch) if state.epoch is not None else float(stage.epochs),
            "learning_rate": float(stage.learning_rate),
            "warmup_steps": self._warmup_steps(stage, self.args, len(self.train_dataset)),
            "backbone_norm_eval": self._norm_eval(stage, plan, self.args),
            "backbone_lr_multiplier": float(self.args.backbone_lr_multiplier),
            "best_metric": None if best_metric is None else float(best_metric),
            "best_checkpoint": best,
            "layer_decay": None if stage.frozen_backbone else self.args.layer_decay,
            "ema": ema,
            **best_epoch_record(state, self.args.metric_for_best_model),  # issue 19
            **method_record(self.model, stage.frozen_backbone, self._lora_records.get(stage.index)),
            **tied_evaluations(state, self.args.metric_for_best_model),  # issue 19 item 9
        })

    def _record_from_checkpoint(self, stage: Stage, plan: list[Stage]) -> int:
        """Record a stage finished before a resume from its last checkpoint; return its optimizer steps."""
        stage_dir = stage.output_dir(self.args.output_dir)
        last = get_last_checkpoint(stage_dir) if os.path.isdir(stage_dir) else None
        if last is None:
            raise ValueError(
                f"resuming in a later stage, but stage {stage.index} left no checkpoint in {stage_dir}; "
                "resume from a checkpoint of stage 1 or start the run again"
            )
        state = TrainerState.load_from_json(os.path.join(last, TRAINER_STATE_NAME))
        self._record(stage, plan, state, read_ema_result(stage_dir))
        return state.global_step

    def _select_stage(self) -> None:
        """Keep the best-on-validation model across the stages (SFT: stage 1's best is a candidate)."""
        args = self.args
        last = self.stage_records[-1]
        self.selected_stage = last["stage"]
        if len(self.stage_records) < 2 or not args.load_best_model_at_end:
            return
        first = self.stage_records[0]
        m1, m2 = first["best_metric"], last["best_metric"]
        if m1 is None or m2 is None:
            return
        # issue 19: a tie on the selection metric (e.g. a saturated validation set) goes to the lower validation loss
        kept, self.selection_reason = kept_stage(m1, m2, first.get("best_eval_loss"), last.get("best_eval_loss"),
                                                 args.metric_for_best_model, args.greater_is_better)
        stage1_better = kept == 1
        checkpoint = self._best_checkpoints.get(first["stage"])
        if stage1_better and checkpoint and os.path.isdir(checkpoint):
            load_saved_weights(self.model, checkpoint)
            self.selected_stage = first["stage"]
        elif stage1_better:
            logger.warning("Stage 1's best checkpoint %s is gone; keeping stage %d's best", checkpoint, last["stage"])
        logger.info(
            "Selected stage %d: best %s %.4f in stage 1, %.4f in stage %d",
            self.selected_stage, args.metric_for_best_model, m1, m2, last["stage"],
        )

    # ---- optimizer: per-stage groups, backbone LR multiplier, no state for frozen parameters -----------------
    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        groups = parameter_groups(opt_model, self.args, set(self.get_decay_parameter_names(opt_model)))
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.mixup is not None and model.training:  # issue 18: mixed training batches, soft-target loss
            return self.mixup.compute_loss(model, inputs, return_outputs)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self.stage is not None:
            logs = {**logs, "stage": self.stage.index}
        super().log(logs, *args, **kwargs)


    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Trainer's save, with the secrets (`hub_token`) taken out of the pickled arguments it writes beside the
        weights (`training_args.bin` of every checkpoint): a secret stays out of the run's files."""
        super().save_model(output_dir, _internal_call=_internal_call)
        path = os.path.join(output_dir or self.args.output_dir, "training_args.bin")
        secrets = [name for name in SECRET_FIELDS if getattr(self.args, name, None)]
        if secrets and self.is_world_process_zero() and os.path.isfile(path):
            redacted = copy.copy(self.args)
            for name in secrets:
                setattr(redacted, name, None)
            torch.save(redacted, path)
