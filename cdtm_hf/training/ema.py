"""EMA of the weights (timm `ModelEmaV3`) as a `TrainerCallback`: updated after every optimizer step, saved in
every checkpoint (`model_ema.safetensors`) and restored on resume, so an interrupted run continues exactly.

At the end of each stage (after `load_best_model_at_end`) `keep_ema_if_better` evaluates the EMA weights on the
validation set; when they beat the model the stage keeps (its best checkpoint), the EMA weights become the stage's
model. The stage record says what was compared and what was kept (`"ema"`), and the stage folder keeps it as
`ema_result.json` for a run resumed in a later stage.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch
from transformers import TrainerCallback

from .selection import metric_key

__all__ = ["EMA_RESULT_NAME", "EMA_WEIGHTS_NAME", "ModelEmaCallback", "keep_ema_if_better", "read_ema_result"]

logger = logging.getLogger(__name__)

EMA_WEIGHTS_NAME = "model_ema.safetensors"
EMA_RESULT_NAME = "ema_result.json"


class ModelEmaCallback(TrainerCallback):
    """Keeps `ema` (a `timm.utils.ModelEmaV3` of the trained model) through a stage's training.

    A fresh EMA starts from the model at the start of each stage; on resume it is read from the checkpoint the
    stage resumes from.

    Args:
        decay (`float`): the EMA decay per optimizer step.
        warmup (`bool`): timm's decay warmup (`use_warmup`).
    """

    def __init__(self, decay: float, warmup: bool = False):
        self.decay, self.warmup = decay, warmup
        self.ema = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from timm.utils import ModelEmaV3

        ds_config = getattr(args, "hf_deepspeed_config", None)
        if args.fsdp or (ds_config is not None and ds_config.is_zero3()):
            raise ValueError(
                "--model_ema keeps a full copy of the weights and updates it from this process's parameters, which "
                "FSDP and DeepSpeed ZeRO-3 shard; use DDP or DeepSpeed ZeRO-2 with --model_ema, or leave it out"
            )
        self.ema = ModelEmaV3(model, decay=self.decay, use_warmup=self.warmup)
        if state.global_step > 0:  # resumed: Trainer has loaded the checkpoint's state before this event
            checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            path = os.path.join(checkpoint, EMA_WEIGHTS_NAME)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"--model_ema is on but {checkpoint} holds no EMA state ({EMA_WEIGHTS_NAME}): it was saved "
                    "without --model_ema. Resume without --model_ema, or start the run again"
                )
            from safetensors.torch import load_file

            self.ema.module.load_state_dict(load_file(path, device=str(next(model.parameters()).device)))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.ema.update(model, step=state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or self.ema is None:
            return
        from safetensors.torch import save_file

        checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.ema.module.state_dict().items()}
        save_file(_untied(tensors), os.path.join(checkpoint, EMA_WEIGHTS_NAME))


def _untied(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage: clone the repeats."""
    seen, out = set(), {}
    for k, v in tensors.items():
        ptr = v.data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def _metric(trainer, description: str) -> float | None:
    args = trainer.args
    key = metric_key(args.metric_for_best_model)
    output = trainer.evaluation_loop(trainer.get_eval_dataloader(), description=description,
                                     metric_key_prefix="eval")
    value = output.metrics.get(key)
    return None if value is None else float(value)


def keep_ema_if_better(trainer, callback: ModelEmaCallback) -> dict[str, Any] | None:
    """After a stage's training: evaluate its EMA weights, keep them in `trainer.model` when their validation
    metric beats the model's, and return (and write into the stage folder) the record.

    Args:
        trainer (`CDTMTrainer`): the stage's trainer, after `train()`.
        callback (`ModelEmaCallback`): its EMA.
    """
    if callback.ema is None:
        return None
    args, state, model = trainer.args, trainer.state, trainer.model
    record: dict[str, Any] = {"decay": callback.decay, "warmup": callback.warmup, "metric": None,
                              "model_metric": None, "kept": False}
    if trainer.eval_dataset is None:
        logger.warning("EMA: no validation set to compare the EMA weights with; the stage keeps its own model")
    else:
        if args.load_best_model_at_end and state.best_metric is not None:
            model_metric = float(state.best_metric)
        else:
            model_metric = _metric(trainer, "Evaluating the model")
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(callback.ema.module.state_dict())
        ema_metric = _metric(trainer, "Evaluating the EMA weights")
        greater = args.greater_is_better if args.greater_is_better is not None else False
        better = ema_metric is not None and (model_metric is None or (
            ema_metric > model_metric if greater else ema_metric < model_metric))
        if not better:
            model.load_state_dict(saved)
        record.update(metric=ema_metric, model_metric=model_metric, kept=bool(better))
        logger.info("EMA weights: validation %s %s against %s for the model; keeping the %s",
                    args.metric_for_best_model, ema_metric, model_metric, "EMA weights" if better else "model")
    if trainer.is_world_process_zero():
        with open(os.path.join(args.output_dir, EMA_RESULT_NAME), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
    callback.ema = None
    return record


def read_ema_result(stage_dir: str) -> dict[str, Any] | None:
    """The `keep_ema_if_better` record a finished stage wrote, or None."""
    path = os.path.join(stage_dir, EMA_RESULT_NAME)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
