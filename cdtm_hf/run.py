"""One fine-tuning run end to end: pre-flight -> data -> model -> CDTMTrainer -> best model -> test -> record, card, push.

Orchestration only: each step is a library function of its own package. `cdtm-train` / `examples/run_sft.py` and the
experiment grid are thin shells over `run_finetuning` (train, then test) and `run_evaluation` (test a saved model
without training). The argument dataclasses check every value when they are built; `preflight` checks what needs the
world (the checkpoint, the resume point, the output folder, the Hub) before any data is read.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers import set_seed

from .core.image_processing_cdtm import CDTMImageProcessor
from .core.modeling_cdtm import CDTMForImageClassification
from .data.loading import load_splits
from .data.registry import DATASETDICT
from .data.manifest import manifest_summary, write_manifest
from .data.transforms import attach_transforms
from .evaluation.efficiency import efficiency_summary
from .evaluation.metrics import compute_metrics, evaluation_report, write_results
from .hub.cards import write_model_card
from .hub.push import check_push_ready, push_checkpoint
from .logging import progress_bars
from .paper.recipes import paper_reference_for
from .training.arguments import CDTMTrainingArguments
from .training.environment import batch_facts, check_launch, framework_versions
from .training.knobs import augmentation_options, knob_summary
from .training.model_builder import build_model
from .training.output_dir import clear_output_dir, prune_optimizer_states
from .training.output_dir import check_disk_space, check_output_dir, lock_output_dir  # issue 17
from .training.output_dir import releases_output_dir_lock  # issue 17
from .hub.checkpoint import check_model_source  # issue 17
from .training.run_arguments import DataArguments, ModelArguments, RunArguments, redact_secrets, resolve_model_args
from .training.stages import resolve_resume, stage_plan
from .training.trainer import CDTMTrainer
from .training.weights import record_weights_provenance

logger = logging.getLogger(__name__)

__all__ = ["load_run_data", "preflight", "run_evaluation", "run_finetuning"]


def preflight(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: CDTMTrainingArguments,
    run_args: RunArguments,
    train: bool = True,
) -> tuple[ModelArguments, str | None]:
    """Check what a run needs of the world before it reads data; return the model arguments it will use and the
    checkpoint it resumes from.

    Args:
        model_args (`ModelArguments`): the requested model; with `model_name_or_path`, checked against the checkpoint.
        data_args (`DataArguments`): checked on construction.
        training_args (`CDTMTrainingArguments`): checked on construction; its resume point and output folder here.
        run_args (`RunArguments`): how a finished run in `output_dir` is treated.
        train (`bool`): False for an evaluate-only run, which needs `model_name_or_path`.
    """
    check_launch(training_args)  # a multi-process launch that would not make one run (issue 18)
    if not train and not model_args.model_name_or_path:
        raise ValueError("--do_train False evaluates a saved model: pass --model_name_or_path <folder or Hub id>")
    check_output_dir(training_args.output_dir, data_args.data_dir)  # issue 17: before anything is written
    if model_args.model_name_or_path:
        check_model_source(model_args.model_name_or_path)
    model_args = resolve_model_args(model_args)
    if training_args.process_index == 0:  # one run per folder; the other ranks of a launch are the same run
        lock_output_dir(training_args.output_dir)
    resume = None
    if train:
        point = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir,
                               stage_plan(training_args))
        resume = point.checkpoint if point else None
        if resume is None:
            clear_output_dir(training_args.output_dir, run_args.overwrite_output_dir)
    elif (Path(training_args.output_dir) / "test_results.json").exists() and not run_args.overwrite_output_dir:
        raise FileExistsError(
            f"{training_args.output_dir} already holds test_results.json; pass --overwrite_output_dir to re-score "
            "into it, or another --output_dir"
        )
    if training_args.push_to_hub:  # a bad repo id, a missing login or an unreachable Hub fails now
        if not training_args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id <user or org>/<name>, e.g. me/cdtm-vitb16-breakhis")
        check_push_ready(training_args.hub_model_id, training_args.hub_token)
    return model_args, resume


def load_run_data(data_args: DataArguments, dataset=None):
    """The run's train/validation/test `DatasetDict` and its split manifest (`cdtm_hf.data.load_splits`); `dataset`:
    the splits given from Python, checked the same way."""
    return load_splits(
        data_args.dataset, data_args.data_dir, dataset_config=data_args.dataset_config,
        split_strategy=data_args.split_strategy, seed=data_args.split_seed,
        validation_fraction=data_args.validation_fraction, test_fraction=data_args.test_fraction,
        cache_dir=data_args.cache_dir, verify_images=data_args.verify_images, skip_corrupt=data_args.skip_corrupt,
        max_train_samples=data_args.max_train_samples, dataset_name=data_args.dataset_name,
        dataset_config_name=data_args.dataset_config_name, image_column_name=data_args.image_column_name,
        label_column_name=data_args.label_column_name, max_eval_samples=data_args.max_eval_samples, given=dataset,
    )


def _without_trainer_push(training_args: CDTMTrainingArguments) -> CDTMTrainingArguments:
    """The Trainer's copy of the arguments: it never pushes; the run pushes the selected model once, with its card."""
    args = copy.copy(training_args)
    args.push_to_hub = False
    return args


def method_name(model: CDTMForImageClassification, finetune_mode: str | None) -> str:
    """A row label in the paper's style, e.g. 'vitb16.laion2b-CDTM-SFT'."""
    cfg = model.config
    name = cfg.backbone_preset or cfg.backbone
    return f"{name}{'-CDTM' if cfg.use_cdtm else ''}" + (f"-{finetune_mode.upper()}" if finetune_mode else "")


# ----------------------------------------------------------------------------------------------------------------
@releases_output_dir_lock
def run_finetuning(
    model_args: ModelArguments,
    data_args: DataArguments | None,
    training_args: CDTMTrainingArguments,
    run_args: RunArguments | None = None,
    dataset=None,
    data: tuple[Any, dict] | None = None,
) -> dict[str, Any]:
    """Train (all stages of `finetune_mode`), keep the best model on validation, test it, write the results.

    Writes into `output_dir`: the best model (safetensors + config + remote code + preprocessor), `run_args.json`
    (the arguments used and the training record, written before testing), `split_manifest.json`, `test_results.json`,
    `test_results.md` (Table IV row), `confusion_matrix.png`, TensorBoard events under `runs/`, and a model card.
    Returns the `test_results.json` content.

    Args:
        model_args (`ModelArguments`): the model to build or continue from.
        data_args (`DataArguments`): the data and its split.
        training_args (`CDTMTrainingArguments`): the fine-tuning mode and its hyperparameters.
        run_args (`RunArguments`, *optional*): `overwrite_output_dir`, `keep_checkpoints`.
        dataset (`datasets.DatasetDict` or `Dataset`, *optional*): the splits themselves, checked, recorded and
            carded like any source (missing validation/test splits carved out of train); `data_args` may then be
            None (or `DataArguments(dataset="datasetdict", image_column_name=..., ...)`).
        data (`tuple`, *optional*): the `(DatasetDict, manifest)` to use instead of loading `data_args`' splits (a
            cross-validation fold, issue 19).
    """
    run_args = run_args or RunArguments()
    data_args = data_args or DataArguments(dataset=DATASETDICT)
    model_args, resume = preflight(model_args, data_args, training_args, run_args)
    set_seed(training_args.seed)
    with progress_bars(not training_args.disable_tqdm):
        ds, manifest = data if data is not None else load_run_data(data_args, dataset)
    names = manifest["class_names"]
    model = build_model(model_args, names, manifest["multi_label"])
    record_weights_provenance(model.config, model_args.backbone_pretrained_file,
                              model_args.backbone_pretraining)  # issue 19
    check_disk_space(training_args.output_dir, model, training_args.save_total_limit or 1)
    processor = CDTMImageProcessor.from_model_config(model.config)
    raw_splits = ds  # issue 19: the patient ids of the test split
    ds = attach_transforms(ds, processor, manifest["label_column"], training_args.augment,
                           augmentation_options(training_args))
    trainer = CDTMTrainer(
        model=model, args=_without_trainer_push(training_args), train_dataset=ds["train"],
        eval_dataset=ds["validation"], processing_class=processor, compute_metrics=compute_metrics,
    )
    trainer.train(resume_from_checkpoint=resume)
    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir))  # the selected model with its processor
    training = _training_summary(trainer, training_args, model)
    if trainer.is_world_process_zero():  # keep the published folder pickle-free: the arguments as JSON instead
        (output_dir / "training_args.bin").unlink(missing_ok=True)
        (output_dir / "training_args.json").write_text(training_args.to_json_string())
        _write_run_args(output_dir, model, model_args, data_args, run_args, training)
    report = _test_and_record(trainer, training_args, ds["test"], model, data_args, manifest, training,
                              push=training_args.push_to_hub, run_args=run_args, raw_splits=raw_splits)
    if trainer.is_world_process_zero() and not run_args.keep_checkpoints:
        prune_optimizer_states(output_dir)  # every checkpoint is superseded by the saved model
    return report


@releases_output_dir_lock
def run_evaluation(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: CDTMTrainingArguments,
    run_args: RunArguments | None = None,
) -> dict[str, Any]:
    """Test a saved model (`model_args.model_name_or_path`, a folder or Hub id) without training; write the results.

    The model's classes must be the data's. Writes `test_results.json`/`.md`, `confusion_matrix.png` and
    `split_manifest.json` into `output_dir`; when `output_dir` is the model's own folder (re-scoring a run whose
    test failed), the training record of its `run_args.json` is kept in the report and the model card is rewritten.
    """
    run_args = run_args or RunArguments()
    model_args, _ = preflight(model_args, data_args, training_args, run_args, train=False)
    # strict, before the data
    model = CDTMForImageClassification.from_pretrained(model_args.model_name_or_path, **model_args.hub_kwargs())
    with progress_bars(not training_args.disable_tqdm):
        ds, manifest = load_run_data(data_args)
    names = manifest["class_names"]
    saved = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if saved != names:
        raise ValueError(
            f"{model_args.model_name_or_path} classifies {saved}, but the data's classes are {names}; evaluate it "
            "on data with the same classes (in the same order), or fine-tune it with --do_train True"
        )
    try:
        processor = CDTMImageProcessor.from_pretrained(model_args.model_name_or_path, **model_args.hub_kwargs())
    except OSError:
        processor = CDTMImageProcessor.from_model_config(model.config)
    raw_splits = ds  # issue 19: the patient ids of the test split
    ds = attach_transforms(ds, processor, manifest["label_column"], augment=False)
    trainer = CDTMTrainer(model=model, args=_without_trainer_push(training_args), eval_dataset=ds["validation"],
                          processing_class=processor, compute_metrics=compute_metrics)
    model_dir = Path(model_args.model_name_or_path)
    in_place = model_dir.is_dir() and model_dir.resolve() == Path(training_args.output_dir).resolve()
    record = json.loads((model_dir / "run_args.json").read_text()) if (model_dir / "run_args.json").is_file() else {}
    return _test_and_record(trainer, training_args, ds["test"], model, data_args, manifest, record.get("training"),
                            push=training_args.push_to_hub and in_place, write_card=in_place,
                            evaluated=model_args.model_name_or_path, run_args=run_args, raw_splits=raw_splits)


def _test_and_record(
    trainer: CDTMTrainer, args: CDTMTrainingArguments, test_set, model: CDTMForImageClassification,
    data_args: DataArguments, manifest: dict, training: dict | None, push: bool, write_card: bool = True,
    evaluated: str | None = None, run_args: RunArguments | None = None, raw_splits=None,
) -> dict[str, Any]:
    """Predict the test set, then write the results (and card, and push) into `output_dir`; return the report."""
    output_dir = Path(args.output_dir)
    started = time.perf_counter()  # issue 19: the main test pass's cost, beside each extra test set's
    prediction = trainer.predict(test_set, metric_key_prefix="test")
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    report = evaluation_report(logits, prediction.label_ids, manifest["class_names"],
                               loss=prediction.metrics.get("test_loss"))
    finetune_mode = (training or {}).get("finetune_mode")
    split = {"strategy": manifest["split_strategy"], "grouping": manifest["grouping"],
             "description": manifest["description"], "manifest": manifest_summary(manifest)}
    report.update(
        dataset=(manifest.get("source") or {}).get("name") or data_args.dataset,
        dataset_config=data_args.dataset_config or data_args.dataset_config_name, split_strategy=split["strategy"],
        split=split, seed=args.seed, backbone=model.config.backbone, backbone_preset=model.config.backbone_preset,
        finetune_mode=finetune_mode, use_cdtm=model.config.use_cdtm, cdtm_variant=model.config.cdtm_variant,
        training=training, efficiency=efficiency_summary(model),
    )
    if evaluated is not None:
        report["evaluated_model"] = evaluated
    if not trainer.is_world_process_zero():
        return report
    write_manifest(manifest, output_dir)
    _add_statistics(report, trainer, args, run_args or RunArguments(), model, manifest, logits,
                    prediction.label_ids, raw_splits)  # issue 19
    report["test_seconds"] = time.perf_counter() - started
    if data_args.extra_test:  # issue 19: shifted test sets, each reported on its own
        from .experiments.extra_tests import run_extra_tests

        report["extra_tests"] = run_extra_tests(trainer, data_args, run_args or RunArguments(),
                                                trainer.processing_class, manifest, raw_splits, args.seed, output_dir)
    write_results(report, output_dir, method_name(model, finetune_mode))
    if data_args.explain and model.config.use_cdtm:
        from .evaluation.explain import explain_dataset

        explain_dataset(model, test_set, output_dir / "explain")
    if write_card:
        write_model_card(output_dir, report, repo_id=args.hub_model_id, paper_reference=paper_reference_for(report))
    if push:
        push_checkpoint(output_dir, args.hub_model_id, token=args.hub_token, private=bool(args.hub_private_repo),
                        revision=args.hub_revision)
    return report


def _write_run_args(
    output_dir: Path, model: CDTMForImageClassification, model_args: ModelArguments, data_args: DataArguments,
    run_args: RunArguments, training: dict[str, Any],
) -> None:
    """`run_args.json`: the model arguments as the built model has them, the data and run arguments, the record."""
    cfg = model.config
    used = {**asdict(model_args), "backbone": cfg.backbone_preset or cfg.backbone, "backbone_library":
            cfg.backbone_library, "image_size": cfg.image_size, "use_cdtm": cfg.use_cdtm, "num_centers":
            cfg.num_centers, "num_cdtm_blocks": cfg.num_cdtm_blocks, "head_type": cfg.head_type,
            "mha_num_heads": cfg.mha_num_heads, "cdtm_variant": cfg.cdtm_variant}
    used = redact_secrets(used)  # a secret stays out of the run's files
    record = {"model": used, "data": asdict(data_args), "run": asdict(run_args), "training": training}
    (output_dir / "run_args.json").write_text(json.dumps(record, indent=2, default=str))


def _stage2_method(args: CDTMTrainingArguments, stages: list[dict[str, Any]]) -> dict[str, Any]:
    """issue 20: how SFT's stage 2 trained the backbone, for the report and the card's hyperparameters."""
    lora = next((s for s in stages if s.get("method") == "lora"), None)
    if lora is None:
        return {"stage2_method": "full"} if args.finetune_mode == "sft" else {}
    return {"stage2_method": f"lora (r={args.lora_r}, alpha={args.lora_alpha:g}, dropout={args.lora_dropout:g}; "
                             f"{100 * lora['trainable_share']:.2f} % of the parameters trained, adapters merged)"}


def _training_summary(
    trainer: CDTMTrainer, args: CDTMTrainingArguments, model: CDTMForImageClassification
) -> dict[str, Any]:
    """`report["training"]`: the run-wide settings, and per stage what the trainer recorded as it ran."""
    return {
        "finetune_mode": args.finetune_mode,
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "batch_size": args.per_device_train_batch_size,
        "weight_decay": args.weight_decay,
        "betas": [args.adam_beta1, args.adam_beta2],
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "image_size": model.config.image_size,
        "metric_for_best_model": args.metric_for_best_model,
        "augment": args.augment,
        **knob_summary(args, model.config.backbone_kwargs),  # issue 18: timm's fine-tuning knobs (None = off)
        **_stage2_method(args, trainer.stage_records),
        "stages": [dict(s) for s in trainer.stage_records],
        "selected_stage": trainer.selected_stage,
        **batch_facts(args), "framework_versions": framework_versions(),  # issue 18
        "selection_reason": getattr(trainer, "selection_reason", None),  # issue 19
    }



def _add_statistics(report: dict[str, Any], trainer: CDTMTrainer, args: CDTMTrainingArguments, run_args: RunArguments,
                    model: CDTMForImageClassification, manifest: dict, logits, label_ids, raw_splits) -> None:
    """Issue 19: the test metrics' intervals, calibration (with `--calibrate`, a temperature fitted on validation and
    recorded in config.json), patient-level scores, the plots and the saved test predictions."""
    from .evaluation.calibration import fit_temperature
    from .evaluation.patients import patient_ids
    from .evaluation.run_statistics import save_predictions, statistics_report, write_statistics_plots

    output_dir, names = Path(args.output_dir), manifest["class_names"]
    groups = patient_ids(raw_splits["test"], manifest) if raw_splits is not None else None
    temperature = getattr(model.config, "calibration_temperature", None)
    if run_args.calibrate:
        val = trainer.predict(trainer.eval_dataset, metric_key_prefix="calibration")
        val_logits = val.predictions[0] if isinstance(val.predictions, tuple) else val.predictions
        fit = report["temperature_scaling"] = fit_temperature(val_logits, val.label_ids)
        if fit["identified"]:
            temperature = model.config.calibration_temperature = fit["temperature"]
            if (output_dir / "config.json").is_file():  # the saved model applies it in pipeline() / cdtm-predict
                model.config.save_pretrained(output_dir)
            logger.info("Temperature scaling: T = %.3f fitted on %d validation images (NLL %.4f -> %.4f)",
                        temperature, fit["num_validation_examples"], fit["validation_nll_before"],
                        fit["validation_nll_after"])
        else:
            logger.warning("--calibrate: %s", fit["warning"])
    report.update(statistics_report(logits, label_ids, names, groups, resamples=run_args.bootstrap_resamples,
                                    seed=args.seed, temperature=temperature))
    stages = (report.get("training") or {}).get("stages") or []
    history = [e for _, h in sorted(getattr(trainer, "stage_log_histories", {}).items()) for e in h]
    plots = write_statistics_plots(
        output_dir, logits, label_ids, names, temperature=temperature, log_history=history,
        metric=args.metric_for_best_model or "f1", title=method_name(model, report.get("finetune_mode")),
        stage_names={s["stage"]: f"stage {s['stage']}: backbone {s['backbone']}" for s in stages})
    report["auroc_per_class"] = plots.pop("roc_pr_per_class")
    report["plots"] = plots
    report["predictions_file"] = save_predictions(output_dir, logits, label_ids, groups).name
