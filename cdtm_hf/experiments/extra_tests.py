"""Shifted test sets (`--extra_test name=DIR_or_CONFIG`, issue 19): a run's model tested on extra sets beside its
own, each reported on its own with the same intervals, calibration and patient-level scores.

- `name=DIR`: an image folder of the run's classes (`<class>/<image>`, or with `train/`, `validation/`, `test/`
  folders, all of which are tested), e.g. another scanner or stain.
- `name=CONFIG[:column=value]`: another configuration of the run's builder, optionally restricted to one value of a
  column (BreakHis after training on `malignant_200x`: `x40=all_magnifications:magnification=40`). Only the images
  of the run's *test patients* are kept, so no patient of the training or validation split leaks in.

Each set adds `report["extra_tests"][name]` (`source`, `kind`, `num_images`, `metrics`, `intervals`, `calibration`,
`patient_level`, `seconds`) and `test_predictions_<name>.npz`; the grid tables get one column per set.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["parse_extra_tests", "run_extra_tests"]


def parse_extra_tests(items) -> list[tuple[str, str]]:
    """`["a=X", "b=Y"]` -> `[("a", "X"), ("b", "Y")]` (checked by `DataArguments`)."""
    return [tuple(str(item).split("=", 1)) for item in items or []]


def _folder_set(source: str, names: list[str], cache_dir: str | None):
    from datasets import concatenate_datasets, load_dataset

    loaded = load_dataset("imagefolder", data_dir=source, cache_dir=cache_dir)
    ds = concatenate_datasets([loaded[s] for s in loaded])
    found = ds.features["label"].names
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ValueError(f"--extra_test folder {source} has classes {unknown} that the model does not know "
                         f"({names}); give it <class>/ folders named like the training classes")
    mapping = {i: names.index(n) for i, n in enumerate(found)}
    return ds.map(lambda b: {"label": [mapping[x] for x in b["label"]]}, batched=True).cast_column(
        "label", ds.features["label"].__class__(names=names)), "label", None


def _builder_set(data_args, source: str, test_patients: set[str] | None):
    from ..run import load_run_data

    config, _, where = source.partition(":")
    column, _, wanted = where.partition("=")
    if where and not (column and wanted):
        raise ValueError(f"--extra_test ...={source}: write CONFIG or CONFIG:column=value, e.g. "
                         "all_magnifications:magnification=40")
    if test_patients is None:
        raise ValueError(f"--extra_test {config}: a builder config is tested on the run's test patients only, but "
                         "the run's split has no patient ids; pass an image folder instead")
    args = type(data_args)(**{**data_args.__dict__, "dataset_config": config, "extra_test": None,
                              "max_train_samples": None})
    ds, manifest = load_run_data(args)
    from datasets import concatenate_datasets

    full = concatenate_datasets([ds[s] for s in ds])
    if column and column not in full.column_names:
        raise ValueError(f"--extra_test ...={source}: {config} has no column {column!r}; columns: "
                         f"{', '.join(full.column_names)}")
    kept = full.filter(lambda b: [str(p) in test_patients and (not column or str(v) == wanted)
                                  for p, v in zip(b["patient_id"], b[column] if column else b["patient_id"])],
                       batched=True)
    return kept, manifest["label_column"], manifest


def run_extra_tests(trainer, data_args, run_args, processor, manifest: dict[str, Any], raw_splits, seed: int,
                    output_dir: Path) -> dict[str, Any]:
    """Predict and score every extra test set; return `{name: record}` (module doc) and write its predictions."""
    from datasets import DatasetDict

    from ..data.transforms import attach_transforms
    from ..evaluation.metrics import evaluation_report
    from ..evaluation.patients import patient_ids
    from ..evaluation.run_statistics import save_predictions, statistics_report

    names = manifest["class_names"]
    main_patients = patient_ids(raw_splits["test"], manifest) if raw_splits is not None else None
    out: dict[str, Any] = {}
    for name, source in parse_extra_tests(data_args.extra_test):
        start = time.perf_counter()
        if Path(source).is_dir():
            ds, label_column, extra_manifest, kind = *_folder_set(source, names, data_args.cache_dir), "folder"
        else:
            ds, label_column, extra_manifest = _builder_set(data_args, source, set(main_patients or []) or None)
            kind = "builder config (test patients only)"
        if len(ds) == 0:
            raise ValueError(f"--extra_test {name}={source} holds no image of the run's test patients or classes")
        groups = patient_ids(ds, extra_manifest) if extra_manifest else None
        test = attach_transforms(DatasetDict({"test": ds}), processor, label_column, augment=False)["test"]
        prediction = trainer.predict(test, metric_key_prefix=f"extra_{name}")
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        record = evaluation_report(logits, prediction.label_ids, names)
        record.update(statistics_report(logits, prediction.label_ids, names, groups,
                                        resamples=run_args.bootstrap_resamples, seed=seed))
        seconds = time.perf_counter() - start
        record.update(source=Path(source).name if kind == "folder" else source, kind=kind, seconds=seconds,
                      predictions_file=save_predictions(output_dir, logits, prediction.label_ids, groups,
                                                        name=f"test_predictions_{name}.npz").name)
        record["num_images"] = record.pop("num_test_examples")
        out[name] = record
        logger.info("Extra test set %s (%s, %d images): f1 %.4f, accuracy %.4f (%.1f s)", name, kind,
                    record["num_images"], record["metrics"]["f1"], record["metrics"]["accuracy"], seconds)
    return out
