"""Ties on the selection metric within a stage (issue 19, item 9): the later checkpoint with the lower validation loss
wins, where transformers alone keeps the earliest.

A small validation set saturates (validation F1 1.000 from the first epoch on is common on tissue tiles). The
Trainer's `_determine_best_metric` compares strictly, so of tied evaluations it keeps the *first*. It calls the
callbacks' `on_evaluate` with the new metrics before it compares them with `TrainerState.best_metric`: when the new
evaluation ties the best metric with a lower `eval_loss`, `TieBreakOnLossCallback` clears `best_metric`, so the
Trainer's own comparison takes the new evaluation as the best (its checkpoint, `best_global_step`,
`load_best_model_at_end` and checkpoint rotation then work as documented).

`tied_evaluations` lists, for the stage record, the other evaluations that tied the kept one and their losses. The
cross-stage tie (SFT) is `training/selection.py`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback, TrainerState

from .selection import metric_key

logger = logging.getLogger(__name__)

__all__ = ["TieBreakOnLossCallback", "tied_evaluations"]


def _loss_at(log_history: Sequence[Mapping[str, Any]], step: int | None) -> float | None:
    for entry in log_history:
        if entry.get("step") == step and "eval_loss" in entry:
            return float(entry["eval_loss"])
    return None


class TieBreakOnLossCallback(TrainerCallback):
    """On a tie on `metric_for_best_model`, the evaluation with the lower validation loss becomes the best model.

    Needs `eval_loss` in the evaluation's metrics (the Trainer logs it whenever the model returns a loss) and a
    selection metric other than the loss itself; otherwise it does nothing.
    """

    def on_evaluate(self, args, state: TrainerState, control, metrics=None, **kwargs):
        key = metric_key(args.metric_for_best_model)
        if not metrics or key == "eval_loss" or args.metric_for_best_model is None:
            return
        value, loss = metrics.get(key), metrics.get("eval_loss")
        if value is None or loss is None or state.best_metric is None or not state.best_global_step:
            return
        if float(value) != float(state.best_metric):
            return
        best_loss = _loss_at(state.log_history, state.best_global_step)
        if best_loss is not None and float(loss) < best_loss:
            logger.info("Validation %s %.4f ties the best (step %d); validation loss %.4f < %.4f: step %d becomes "
                        "the best checkpoint", key[5:], value, state.best_global_step, loss, best_loss,
                        state.global_step)
            state.best_metric = None  # the Trainer's strict comparison now takes this evaluation as the best


def tied_evaluations(state: TrainerState, metric: str | None) -> dict[str, list]:
    """The other evaluations of a stage with the kept one's metric: `tied_epochs` and their `tied_losses`."""
    key = metric_key(metric)
    evals = [e for e in state.log_history if key in e]
    best = next((e for e in evals if e.get("step") == (state.best_global_step or None)), None)
    ties = [] if best is None else [e for e in evals if e is not best and e[key] == best[key]]
    return {"tied_epochs": [e.get("epoch") for e in ties], "tied_losses": [e.get("eval_loss") for e in ties]}
