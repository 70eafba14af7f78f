"""Which checkpoint a run keeps, and why (issue 19): each stage's best epoch, step and validation loss, whether its
validation metric was still rising at the last evaluation, and the reason SFT keeps one stage over the other (the
better validation metric, or on a tie, as on a saturated validation set, the lower validation loss)."""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainerState

__all__ = ["best_epoch_record", "kept_stage", "metric_key", "selection_reason"]


def metric_key(metric: str | None) -> str:
    """The log key of a selection metric: `eval_<metric>` (`eval_loss` without one), as the Trainer reads it."""
    metric = metric or "loss"
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def best_epoch_record(state: TrainerState, metric: str | None) -> dict[str, Any]:
    """The epoch, step and validation loss of a stage's best checkpoint, read from its log history."""
    key = metric_key(metric)
    evals = [e for e in state.log_history if key in e]
    step = getattr(state, "best_global_step", None)
    if not step and state.best_model_checkpoint:
        tail = os.path.basename(state.best_model_checkpoint).rsplit("-", 1)[-1]
        step = int(tail) if tail.isdigit() else None
    best = next((e for e in evals if e.get("step") == step), None)
    return {"best_epoch": None if best is None else best.get("epoch"), "best_step": step,
            "best_eval_loss": None if best is None else best.get("eval_loss"),
            "eval_epochs": len(evals),
            "still_improving": bool(len(evals) >= 2 and evals[-1][key] > max(e[key] for e in evals[:-1])
                                    if (metric or "loss") not in ("loss", "eval_loss") else False)}


def kept_stage(m1: float, m2: float, loss1: float | None, loss2: float | None, metric: str | None,
               greater_is_better: bool | None) -> tuple[int, str]:
    """Which stage SFT keeps (1 or 2) and why: the better validation metric, or on a tie the lower validation loss,
    or on a tie in both the later stage."""
    if m1 != m2:
        better = 1 if (m1 > m2) == bool(greater_is_better) else 2
        return better, f"stage {better} has the better validation {metric} ({m1:.4f} in stage 1, {m2:.4f} in stage 2)"
    if loss1 is not None and loss2 is not None and loss1 != loss2:
        better = 1 if loss1 < loss2 else 2
        return better, (f"tie on validation {metric} ({m1:.4f}), broken by the lower validation loss ({loss1:.4f} in "
                        f"stage 1, {loss2:.4f} in stage 2): stage {better}")
    return 2, f"tie on validation {metric} ({m1:.4f}) and on validation loss: the later stage, stage 2"


def selection_reason(m1: float, m2: float, loss1: float | None, loss2: float | None, metric: str | None,
                     greater_is_better: bool | None) -> str:
    """Why SFT keeps the stage it keeps (`kept_stage`'s reason)."""
    return kept_stage(m1, m2, loss1, loss2, metric, greater_is_better)[1]
