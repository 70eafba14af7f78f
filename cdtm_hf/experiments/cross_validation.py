"""K-fold cross-validation of one run (`--cv_folds K`, issue 19): patient-grouped, stratified folds of all the data's
images (`cdtm_hf.data.folds`), each fold's validation split carved from its training folds, seeded by `split_seed`.

Each fold is an ordinary run in `<output_dir>/fold<k>` (model, card, `test_results.json`), resumable like a grid cell:
a fold with results is kept, one with checkpoints continues, others start afresh. Then the cross-validation's own
files in `<output_dir>`:

- `cv_results.json` and `cv_results.md`: the fold assignment (`describe_folds`), the per-fold metrics, their
  mean ± std (n = K, `summarize_runs`) and the pooled out-of-fold metrics (every image predicted once, by the fold
  model that never saw it) with their bootstrap interval;
- `test_results.json` (the pooled out-of-fold report: `metrics`, `intervals`, `cv`) and `test_predictions.npz` (the
  pooled predictions), so that a grid tabulates and pairs a cross-validated cell like any other.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["CV_RESULTS", "run_cross_validation"]

CV_RESULTS = "cv_results.json"
_SCALARS = ("accuracy", "precision", "recall", "f1", "f1_eq12", "auroc")


def _fold_data(ds, manifest: dict[str, Any], n_folds: int, seed: int, validation_fraction: float):
    """All images in one split, their fold assignment and each fold's (DatasetDict, manifest)."""
    from datasets import DatasetDict, concatenate_datasets

    from ..data.folds import assign_folds, describe_folds, fold_splits

    full = concatenate_datasets([ds[s] for s in ("train", "validation", "test") if s in ds])
    labels = full[manifest["label_column"]]
    names = manifest["class_names"]
    groups = full["patient_id"] if manifest.get("has_patient_ids") and "patient_id" in full.column_names else None
    assignment = assign_folds(labels, groups, n_folds=n_folds, seed=seed, class_names=names)
    splits = fold_splits(labels, assignment, groups, validation_fraction=validation_fraction, class_names=names)
    description = describe_folds(labels, assignment, splits, groups, class_names=names)
    folds = []
    for k, split in enumerate(splits):
        data = DatasetDict({"train": full.select(split.train), "validation": full.select(split.validation),
                            "test": full.select(split.test)})
        fold_manifest = {k2: v for k2, v in manifest.items() if k2 != "files"}
        fold_manifest.update(
            split_strategy=f"cv{n_folds}", grouping=assignment.grouping,
            description=f"fold {k + 1} of {n_folds} ({assignment.method}, seed {seed}): test = the fold, validation "
                        "carved from the other folds" + (" by patient" if groups is not None else ""),
            num_images={s: len(getattr(split, s)) for s in ("train", "validation", "test")},
            counts={s: description["folds"][k][s]["counts"] for s in ("train", "validation", "test")},
        )
        folds.append((data, fold_manifest))
    return folds, description


def run_cross_validation(model_args, data_args, training_args, run_args) -> dict[str, Any]:
    """Train and test every fold of `run_args.cv_folds`, then write the cross-validation's results (module doc)."""
    from ..evaluation.reporting import markdown_table
    from ..evaluation.run_statistics import load_predictions, save_predictions, statistics_report
    from ..evaluation.uncertainty import format_interval, format_runs, summarize_runs
    from ..run import load_run_data
    from .runner import finish_run

    n_folds, out = int(run_args.cv_folds), Path(training_args.output_dir)
    if (out / CV_RESULTS).is_file() and not run_args.overwrite_output_dir:
        return json.loads((out / "test_results.json").read_text())
    ds, manifest = load_run_data(data_args)
    folds, description = _fold_data(ds, manifest, n_folds, data_args.split_seed, data_args.validation_fraction)
    logger.info("Cross-validation: %d folds (%s, grouping %s) into %s", n_folds, description["method"],
                description["grouping"], out)
    reports = []
    fold_run = dataclasses.replace(run_args, cv_folds=0)
    for k, data in enumerate(folds):
        reports.append(finish_run(out / f"fold{k}", model_args, data_args, training_args, fold_run, data=data))
    predictions = [load_predictions(out / f"fold{k}") for k in range(n_folds)]
    logits = np.concatenate([p["logits"] for p in predictions])
    labels = np.concatenate([p["labels"] for p in predictions])
    groups = (np.concatenate([p["patient_ids"] for p in predictions]).tolist()
              if all("patient_ids" in p for p in predictions) else None)
    from ..evaluation.metrics import evaluation_report

    pooled = evaluation_report(logits, labels, manifest["class_names"])
    pooled.update(statistics_report(logits, labels, manifest["class_names"], groups,
                                    resamples=run_args.bootstrap_resamples or 0, seed=training_args.seed))
    per_fold = [{k: r["metrics"][k] for k in _SCALARS if k in r["metrics"]} for r in reports]
    summary = summarize_runs(per_fold, [k for k in _SCALARS if k in per_fold[0]])
    cv = {"n_folds": n_folds, "folds": description, "per_fold": per_fold, "mean_std": summary,
          "pooled_out_of_fold": {"metrics": pooled["metrics"], "intervals": pooled.get("intervals")}}
    report = {**pooled, **{k: reports[0].get(k) for k in ("dataset", "dataset_config", "backbone", "backbone_preset",
                                                         "finetune_mode", "use_cdtm", "cdtm_variant", "seed",
                                                         "efficiency")},
              "split_strategy": f"cv{n_folds}", "training": reports[0].get("training"), "cv": cv}
    out.mkdir(parents=True, exist_ok=True)
    save_predictions(out, logits, labels, groups)
    (out / "test_results.json").write_text(json.dumps(report, indent=2, default=float))
    (out / CV_RESULTS).write_text(json.dumps(cv, indent=2, default=float))
    keys = list(summary)
    rows = [[f"fold {k}", *(f"{100 * m[key]:.2f}" for key in keys)] for k, m in enumerate(per_fold)]
    rows.append([f"mean ± std (n={n_folds})", *(format_runs(summary[key]).split(" (n=")[0] for key in keys)])
    intervals = pooled.get("intervals") or {}
    rows.append(["pooled out-of-fold [95 %]", *(format_interval(intervals[key], digits=2) if key in intervals
                                                else f"{100 * pooled['metrics'][key]:.2f}" for key in keys)])
    table = markdown_table(["", *(f"{key} (%)" for key in keys)], rows)
    text = (f"# {n_folds}-fold cross-validation\n\nFolds: {description['method']}, grouping {description['grouping']}"
            f", seed {description['seed']}{'; ' + description['note'] if description.get('note') else ''}. Each "
            "fold's validation split is carved from its training folds. Mean ± std: over the folds (training "
            "variability). Pooled out-of-fold: every image predicted once by the fold model that never saw it, with "
            "its bootstrap interval.\n\n" + table + "\n")
    (out / "cv_results.md").write_text(text)
    logger.info("Cross-validation results: %s\n%s", out / "cv_results.md", table)
    return report
