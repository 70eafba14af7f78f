"""A small learning-rate sweep chosen on validation (`--lr_sweep 1e-4 1e-3 1e-2`, issue 19): a baseline gets the lr
that suits it instead of the one lr a grid gives every recipe (cheap for LP: the frozen-feature cache is shared).

Each learning rate runs in `<output_dir>/lr<lr>` (resumable like a grid cell). The kept one has the best validation
metric (`metric_for_best_model`, the best over its stages); a tie goes to the lower validation loss at that
checkpoint. The test set is never used to choose. `<output_dir>` then holds the kept run's `test_results.json` (with
`lr_sweep`: every candidate's validation metric and loss, and which was kept and why) and its test predictions, so a
grid tabulates and pairs a swept cell like any other; the kept model stays in its `lr<lr>` folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["run_lr_sweep"]


def _validation(report: dict[str, Any]) -> tuple[float | None, float | None]:
    stages = (report.get("training") or {}).get("stages") or []
    kept = (report.get("training") or {}).get("selected_stage")
    stage = next((s for s in stages if s.get("stage") == kept), stages[-1] if stages else {})
    return stage.get("best_metric"), stage.get("best_eval_loss")


def run_lr_sweep(model_args, data_args, training_args, run_args) -> dict[str, Any]:
    """Run every learning rate of `run_args.lr_sweep`, keep the best on validation (module doc)."""
    from ..evaluation.run_statistics import PREDICTIONS_NAME
    from .runner import finish_run

    out = Path(training_args.output_dir)
    candidates = []
    candidate_run = dataclasses.replace(run_args, lr_sweep=None)
    for lr in run_args.lr_sweep:
        run_dir = out / f"lr{lr:g}"
        report = finish_run(run_dir, model_args, data_args, training_args, candidate_run, learning_rate=float(lr))
        metric, loss = _validation(report)
        candidates.append({"learning_rate": float(lr), "folder": run_dir.name, "validation_metric": metric,
                           "validation_loss": loss, "report": report})
    greater = training_args.greater_is_better is not False
    def key(c):
        metric = c["validation_metric"] if c["validation_metric"] is not None else float("-inf")
        loss = c["validation_loss"] if c["validation_loss"] is not None else float("inf")
        return (metric if greater else -metric, -loss)

    best = max(candidates, key=key)
    ties = [c for c in candidates if c["validation_metric"] == best["validation_metric"]]
    metric_name = training_args.metric_for_best_model
    reason = (f"best validation {metric_name} ({best['validation_metric']:.4f})" if len(ties) == 1 else
              f"tie on validation {metric_name} ({best['validation_metric']:.4f}) among {len(ties)} learning rates, "
              "broken by the lower validation loss")
    report = dict(best["report"])
    report["lr_sweep"] = {"kept": best["learning_rate"], "folder": best["folder"], "reason": reason,
                          "candidates": [{k: v for k, v in c.items() if k != "report"} for c in candidates]}
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / best["folder"] / PREDICTIONS_NAME, out / PREDICTIONS_NAME)
    (out / "test_results.json").write_text(json.dumps(report, indent=2, default=float))
    logger.info("Learning-rate sweep: kept lr %g (%s); candidates: %s", best["learning_rate"], reason,
                ", ".join(f"{c['learning_rate']:g}: {c['validation_metric']}" for c in candidates))
    return report
