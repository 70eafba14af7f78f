"""Which checkpoint a stage keeps when validation ties (issue 19, item 9): the lower validation loss breaks the tie.

transformers' Trainer keeps the first evaluation whose `metric_for_best_model` is strictly better than the best so
far (`Trainer._determine_best_metric` compares with `np.greater` / `np.less`), so on a saturated validation set (F1
1.000 from the first epoch on) the earliest checkpoint wins every tie. `TieBreakOnLossCallback` runs in
`on_evaluate`, which the Trainer calls with the evaluation's metrics *before* it decides on the best model: when the
new evaluation ties the best metric and has the lower `eval_loss`, it clears `TrainerState.best_metric`, so the
Trainer's own comparison takes the new evaluation as the best (its checkpoint, `best_global_step`,
`load_best_model_at_end` and checkpoint rotation then work as documented).

`best_evaluation` reads the kept evaluation back from `TrainerState.log_history`; `stage_selection` says in words
which epoch a stage kept and why, `cross_stage_choice` which stage SFT keeps, and `at_ceiling` whether the selection
metric sat at its maximum, where the validation set cannot rank the checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback, TrainerState

logger = logging.getLogger(__name__)

__all__ = ["BOUNDED_METRICS", "TieBreakOnLossCallback", "at_ceiling", "best_evaluation", "cross_stage_choice",
           "ceiling_warnings", "metric_key", "stage_selection"]

#: Selection metrics bounded above by 1 (a value of 1 is the ceiling: every later checkpoint can only tie).
BOUNDED_METRICS = frozenset({"accuracy", "f1", "f1_eq12", "precision", "recall", "auroc"})


def metric_key(metric: str | None) -> str:
    """The log key of a selection metric: `eval_<metric>` (`eval_loss` without one), as the Trainer reads it."""
    metric = metric or "loss"
    return metric if metric.startswith("eval_") else f"eval_{metric}"


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


def best_evaluation(state: TrainerState, metric: str | None) -> dict[str, Any]:
    """The kept evaluation of a stage from its log: `best_epoch`, `best_step`, `best_eval_loss` and the tie it won.

    Returns:
        `dict`: those three keys (None where the log does not hold them), `tied_epochs` (the other epochs with the
        same best metric) and `tied_losses` (their validation losses), for the record and `stage_selection`.
    """
    key = metric_key(metric)
    evals = [e for e in state.log_history if key in e]
    step = state.best_global_step or None
    best = next((e for e in evals if e.get("step") == step), None)
    if best is None:
        return {"best_epoch": None, "best_step": step, "best_eval_loss": None, "tied_epochs": [], "tied_losses": []}
    ties = [e for e in evals if e is not best and e[key] == best[key]]
    return {"best_epoch": best.get("epoch"), "best_step": step, "best_eval_loss": best.get("eval_loss"),
            "tied_epochs": [e.get("epoch") for e in ties], "tied_losses": [e.get("eval_loss") for e in ties]}


def _f(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "not recorded"


def _loss(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "not recorded"


def _epoch(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else "?"


def stage_selection(record: Mapping[str, Any], metric: str | None) -> str:
    """Which epoch a stage kept and why, e.g. 'stage 1, epoch 3: val f1 1.000, tie broken on val loss 0.120 < 0.150'.

    Args:
        record (`Mapping`): a stage record with `stage`, `best_metric` and `best_evaluation`'s keys.
        metric (`str`): the selection metric.
    """
    name = metric_key(metric)[5:]
    head = f"stage {record.get('stage')}, epoch {_epoch(record.get('best_epoch'))}: val {name} " \
           f"{_f(record.get('best_metric'))}"
    tied = [(e, l) for e, l in zip(record.get("tied_epochs") or [], record.get("tied_losses") or [])]
    if not tied:
        return head
    others = [l for _, l in tied if isinstance(l, (int, float))]
    if others and isinstance(record.get("best_eval_loss"), (int, float)):
        return (f"{head}, tie with epoch(s) {', '.join(_epoch(e) for e, _ in tied)} broken on val loss "
                f"{_loss(record['best_eval_loss'])} < {_loss(min(others))}")
    return f"{head}, tied with epoch(s) {', '.join(_epoch(e) for e, _ in tied)} (the earliest kept)"


def cross_stage_choice(first: Mapping[str, Any], last: Mapping[str, Any], metric: str | None,
                       greater_is_better: bool | None) -> tuple[bool, str]:
    """Whether SFT keeps stage 1 over the last stage, and why: the better metric, on a tie the lower val loss.

    Returns:
        `tuple[bool, str]`: (stage 1 kept, the reason in words).
    """
    name = metric_key(metric)[5:]
    m1, m2 = first.get("best_metric"), last.get("best_metric")
    s1, s2 = first.get("stage"), last.get("stage")
    if m1 != m2:
        stage1 = m1 > m2 if greater_is_better else m1 < m2
        return stage1, (f"stage {s1 if stage1 else s2} kept: better val {name} ({_f(m1, 4)} in stage {s1}, "
                        f"{_f(m2, 4)} in stage {s2})")
    l1, l2 = first.get("best_eval_loss"), last.get("best_eval_loss")
    if isinstance(l1, (int, float)) and isinstance(l2, (int, float)) and l1 != l2:
        stage1 = l1 < l2
        low, high = (l1, l2) if stage1 else (l2, l1)
        return stage1, (f"stage {s1 if stage1 else s2} kept: val {name} tied at {_f(m1, 4)}, broken on val loss "
                        f"{_loss(low)} < {_loss(high)}")
    return False, f"stage {s2} kept: val {name} tied at {_f(m1, 4)} and val loss tied or not recorded (the later stage)"


def at_ceiling(metric: str | None, value: Any, greater_is_better: bool | None) -> bool:
    """Whether a bounded selection metric (accuracy, F1, ...) sits at its ceiling of 1."""
    name = metric_key(metric)[5:]
    return bool(greater_is_better) and name in BOUNDED_METRICS and isinstance(value, (int, float)) \
        and value >= 1.0 - 1e-9


def ceiling_warnings(kept: Mapping[str, Any], metric: str | None, greater_is_better: bool | None) -> list[str]:
    """The warning (logged, and for the card) when the kept stage's selection metric sits at its ceiling."""
    if not at_ceiling(metric, kept.get("best_metric"), greater_is_better):
        return []
    message = (f"the validation {metric_key(metric)[5:]} of the kept model is at its ceiling "
               f"({kept['best_metric']:.4f}): the validation set cannot rank the checkpoints that reach it (ties "
               "go to the lower validation loss); a larger or harder validation set would")
    logger.warning("Selection: %s", message)
    return [message]
