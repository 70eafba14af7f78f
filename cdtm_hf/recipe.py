"""One fine-tuning run end to end: checks -> data -> model -> CDTMTrainer -> best model -> test -> record, card, push.

`examples/run_sft.py` and the experiment grid are thin shells over `run_finetuning` (train, then test) and
`run_evaluation` (test a saved model without training). Every argument, the output folder, the resume point and the
Hub are checked by `preflight` before any data is read.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, DatasetDict
from transformers import set_seed

from .cards import write_model_card
from .configuration_cdtm import CDTMConfig
from .data import MANIFEST_FILENAME
from .efficiency import efficiency_summary
from .hub import check_push_ready, push_checkpoint
from .image_processing_cdtm import CDTMImageProcessor, to_rgb_image
from .metrics import compute_metrics, evaluation_report, write_results
from .modeling_cdtm import CDTMForImageClassification
from .published import paper_reference_for
from .run_args import (
    DataArguments,
    ModelArguments,
    RunArguments,
    clear_output_dir,
    resolve_model_args,
    resolve_resume,
    validate_training_args,
)
from .trainer import CDTMTrainer, CDTMTrainingArguments, prune_optimizer_states

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
BUILDER_SPLIT_STRATEGIES = ("patient", "paper", "official")

__all__ = [
    "DataArguments", "ModelArguments", "RunArguments", "attach_transforms", "build_model", "effective_split_strategy",
    "load_data", "preflight", "run_evaluation", "run_finetuning", "split_record", "stratified_subset",
]


# ----------------------------------------------------------------------------------------------------------------
# Pre-flight: everything that can be wrong with the arguments fails here, before any data is read.
def preflight(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: CDTMTrainingArguments,
    run_args: RunArguments,
    train: bool = True,
) -> tuple[ModelArguments, str | bool | None]:
    """Check a run before it reads data; return the model arguments it will use and the resume point.

    Args:
        model_args (`ModelArguments`): the requested model; with `model_name_or_path`, checked against the checkpoint.
        data_args (`DataArguments`): validated on construction.
        training_args (`CDTMTrainingArguments`): numbers checked here (`validate_training_args`); the data loaders'
            `dataloader_pin_memory` follows the device (pinning only helps a CUDA device).
        run_args (`RunArguments`): how a finished run in `output_dir` is treated.
        train (`bool`): False for an evaluate-only run, which needs `model_name_or_path`.
    """
    if train:
        validate_training_args(training_args)
    elif not model_args.model_name_or_path:
        raise ValueError("--do_train False evaluates a saved model: pass --model_name_or_path <folder or Hub id>")
    model_args = resolve_model_args(model_args)
    if data_args.dataset == "imagefolder" and not data_args.data_dir:
        raise ValueError("--data_dir is required for --dataset imagefolder (<data_dir>/<class>/*.png, optionally "
                         "under train/validation/test)")
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir) if train else None
    if train and resume is None:
        clear_output_dir(training_args.output_dir, run_args.overwrite_output_dir)
    elif not train and (Path(training_args.output_dir) / "test_results.json").exists():
        if not run_args.overwrite_output_dir:
            raise FileExistsError(
                f"{training_args.output_dir} already holds test_results.json; pass --overwrite_output_dir to "
                "re-score into it, or another --output_dir"
            )
    if training_args.push_to_hub:  # a bad repo id, a missing login or an unreachable Hub fails now
        if not training_args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id <user or org>/<name>, e.g. me/cdtm-vitb16-breakhis")
        check_push_ready(training_args.hub_model_id, training_args.hub_token)
    if training_args.dataloader_pin_memory and training_args.device.type != "cuda":
        training_args.dataloader_pin_memory = False  # pinned memory only speeds up host-to-CUDA copies
    return model_args, resume


# ----------------------------------------------------------------------------------------------------------------
# Data
def _load_imagefolder(data_args: DataArguments) -> tuple[DatasetDict, dict]:
    from .data import load_imagefolder

    return load_imagefolder(
        data_args.data_dir, validation_fraction=data_args.validation_fraction, test_fraction=data_args.test_fraction,
        seed=data_args.split_seed, verify_images=data_args.verify_images, skip_corrupt=data_args.skip_corrupt,
        cache_dir=data_args.cache_dir,
    )


def _load_builder(data_args: DataArguments) -> tuple[DatasetDict, dict | None]:
    from .data import load_medical_dataset, split_manifest_of

    ds = load_medical_dataset(
        data_args.dataset, data_dir=data_args.data_dir, config=data_args.dataset_config,
        split_strategy=data_args.split_strategy, seed=data_args.split_seed, cache_dir=data_args.cache_dir,
        skip_corrupt=data_args.skip_corrupt, verify_images=data_args.verify_images,
    )
    return ds, split_manifest_of(ds)


def load_data_with_manifest(data_args: DataArguments) -> tuple[DatasetDict, list[str], str, dict | None]:
    """(train/validation/test DatasetDict, label names, label column, split manifest or None).

    Images are in the `image` column. Every class must have images in every split; `max_train_samples` takes a
    stratified, seeded subset of train (see `stratified_subset`).
    """
    ds, manifest = _load_imagefolder(data_args) if data_args.dataset == "imagefolder" else _load_builder(data_args)
    missing = [s for s in SPLITS if s not in ds]
    if missing:
        raise ValueError(f"the dataset has no {', '.join(missing)} split(s); it has: {', '.join(ds)}")
    from .data import label_names

    label_column = "label" if "label" in ds["train"].column_names else "labels"
    names = label_names(ds["train"])
    single_label = isinstance(ds["train"].features[label_column], ClassLabel)
    if single_label:
        for split in SPLITS:
            counts = np.bincount(np.asarray(ds[split][label_column]), minlength=len(names))
            empty = [names[i] for i, c in enumerate(counts) if c == 0]
            if empty:
                raise ValueError(f"class(es) {', '.join(empty)} have no images in the {split} split")
    if data_args.max_train_samples and data_args.max_train_samples < len(ds["train"]):
        labels = np.asarray(ds["train"][label_column]) if single_label else None
        keep = stratified_subset(labels, len(ds["train"]), data_args.max_train_samples, data_args.split_seed, names)
        ds["train"] = ds["train"].select(keep)
    return ds, names, label_column, manifest


def load_data(data_args: DataArguments) -> tuple[DatasetDict, list[str], str]:
    """(train/validation/test DatasetDict, label names, label column); see `load_data_with_manifest`."""
    return load_data_with_manifest(data_args)[:3]


def stratified_subset(
    labels: np.ndarray | None, total: int, size: int, seed: int, names: list[str] | None = None
) -> list[int]:
    """Indices of a seeded subset of `size` rows that keeps every class in proportion (at least one image each).

    Args:
        labels (`np.ndarray`, *optional*): the class index of each row; `None` (multi-label) samples uniformly.
        total (`int`): the number of rows.
        size (`int`): the subset size.
        seed (`int`): the sampling seed.
        names (`list[str]`, *optional*): class names, for the error message.

    Raises a `ValueError` naming the classes when `size` cannot hold one image of every class.
    """
    rng = np.random.default_rng(seed)
    if labels is None:
        return sorted(rng.choice(total, size=size, replace=False).tolist())
    classes, counts = np.unique(labels, return_counts=True)
    if size < len(classes):
        shown = [names[c] if names else str(c) for c in classes]
        raise ValueError(
            f"max_train_samples={size} cannot keep one image of each of the {len(classes)} classes "
            f"({', '.join(shown)}); pass --max_train_samples {len(classes)} or more"
        )
    quota = np.maximum(1, np.floor(counts * size / total)).astype(int)
    order = np.argsort(-(counts * size / total - np.floor(counts * size / total)))  # largest remainders first
    i = 0
    while quota.sum() < size:  # hand out what flooring left, largest remainder first, within each class's count
        c = order[i % len(order)]
        if quota[c] < counts[c]:
            quota[c] += 1
        i += 1
    while quota.sum() > size:  # the minimum of one per class can overshoot: take back from the largest classes
        quota[np.argmax(quota)] -= 1
    keep = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return sorted(np.concatenate(keep).tolist())


def effective_split_strategy(data_args: DataArguments) -> str:
    """What decided the split, for the results and the model card: a builder's strategy, or for an imagefolder
    the folders themselves, or a random stratified split of a folder that had no validation/test."""
    if data_args.dataset != "imagefolder":
        return data_args.split_strategy
    if data_args.split_strategy not in BUILDER_SPLIT_STRATEGIES:  # the caller describes how the folders were made
        return data_args.split_strategy
    from .data.imagefolder import find_split_folders  # the one reader of split-folder names

    root = Path(data_args.data_dir or "")
    if root.is_dir() and set(find_split_folders(root)) == set(SPLITS):
        return "given by the imagefolder's train/validation/test folders"
    return "random stratified split of an imagefolder (not grouped by patient)"


def split_record(data_args: DataArguments, manifest: dict | None) -> dict[str, Any]:
    """`report["split"]`: the strategy, what it grouped by, a sentence for the card, and the split manifest."""
    manifest = manifest or {}
    described = data_args.dataset == "imagefolder" and data_args.split_strategy not in BUILDER_SPLIT_STRATEGIES
    strategy = data_args.split_strategy if described else manifest.get("split_strategy") or effective_split_strategy(
        data_args)
    grouping = manifest.get("grouping")
    if strategy == "paper":  # the paper's split is random over images, whatever ids the data carries
        grouping = "random"
    elif grouping is None:
        if data_args.dataset == "imagefolder":
            grouping = "folders" if effective_split_strategy(data_args).startswith("given by") else "random"
        elif strategy == "paper":
            grouping = "random"
        else:
            from .data import get_builder_class

            grouping = "patient" if get_builder_class(data_args.dataset).HAS_PATIENT_IDS else "image"
    groupings = {
        "patient": "grouped by patient: no patient contributes images to more than one split",
        "image": "grouped by image: the data carries no patient ids, so one patient may appear in several splits",
        "folders": "as given by the train/validation/test folders",
        "random": "random, stratified by class, not grouped by patient",
    }
    description = manifest.get("description") or (
        f"{strategy} split, {groupings.get(grouping, grouping)} (seed {data_args.split_seed})")
    if described:
        description = f"{strategy} ({description})"
    # The report travels with the model (cards, Hub): the manifest's per-file list and the local data path stay in
    # output_dir/split_manifest.json only.
    summary = {k: v for k, v in manifest.items() if k not in ("files", "data_dir")}
    root = str(manifest.get("data_dir") or "")
    if root and summary.get("skipped"):  # name skipped files relative to the data folder
        summary["skipped"] = [{**s, "path": os.path.relpath(s["path"], root) if str(s["path"]).startswith(root)
                               else s["path"]} for s in summary["skipped"]]
    return {"strategy": strategy, "grouping": grouping, "description": description, "manifest": summary or None}


def attach_transforms(ds: DatasetDict, processor: CDTMImageProcessor, label_column: str, augment: bool) -> DatasetDict:
    """Decode (`to_rgb_image`, which keeps 16-bit and float images' range) and preprocess on the fly:
    `image` -> `pixel_values`, label column -> `labels`."""
    eval_tf = processor.val_transforms
    train_tf = processor.train_transforms() if augment else eval_tf

    def make(transform):
        def apply(batch: dict[str, list]) -> dict[str, Any]:
            pixel_values = [transform(to_rgb_image(image)) for image in batch["image"]]
            labels = batch[label_column]
            return {"pixel_values": pixel_values, "labels": torch.as_tensor(np.asarray(labels))}

        return apply

    return DatasetDict({k: v.with_transform(make(train_tf if k == "train" else eval_tf)) for k, v in ds.items()})


# ----------------------------------------------------------------------------------------------------------------
# Model
def build_model(model_args: ModelArguments, names: list[str], multi_label: bool = False) -> CDTMForImageClassification:
    """A new model (pretrained backbone weights through `from_backbone`), or the checkpoint `model_name_or_path`
    with a head for `names`."""
    id2label = dict(enumerate(names))
    label2id = {n: i for i, n in id2label.items()}
    problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    if model_args.model_name_or_path:
        return CDTMForImageClassification.from_pretrained(
            model_args.model_name_or_path, num_labels=len(names), id2label=id2label, label2id=label2id,
            problem_type=problem_type, ignore_mismatched_sizes=True,
        )
    config = CDTMConfig(
        backbone=model_args.backbone, backbone_library=model_args.backbone_library,
        backbone_pretrained=model_args.backbone_pretrained, backbone_pretrained_tag=model_args.backbone_pretrained_tag,
        backbone_pretrained_file=model_args.backbone_pretrained_file, use_cdtm=model_args.use_cdtm,
        cdtm_variant=model_args.cdtm_variant, num_centers=model_args.num_centers,
        num_cdtm_blocks=model_args.num_cdtm_blocks, head_type=model_args.head_type,
        mha_num_heads=model_args.mha_num_heads, image_size=model_args.image_size,
        num_labels=len(names), id2label=id2label, label2id=label2id, problem_type=problem_type,
    )
    # offline without the weights, the core names the backbone and the remedies (BackboneWeightsError)
    return CDTMForImageClassification.from_backbone(config)


def method_name(model: CDTMForImageClassification, finetune_mode: str | None) -> str:
    """A row label in the paper's style, e.g. 'vitb16.laion2b-CDTM-SFT'."""
    cfg = model.config
    name = cfg.backbone_preset or cfg.backbone
    return f"{name}{'-CDTM' if cfg.use_cdtm else ''}" + (f"-{finetune_mode.upper()}" if finetune_mode else "")


# ----------------------------------------------------------------------------------------------------------------
def run_finetuning(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: CDTMTrainingArguments,
    run_args: RunArguments | None = None,
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
    """
    run_args = run_args or RunArguments()
    model_args, resume = preflight(model_args, data_args, training_args, run_args)
    set_seed(training_args.seed)
    ds, names, label_column, manifest = load_data_with_manifest(data_args)
    multi_label = label_column == "labels" and not isinstance(ds["train"].features[label_column], ClassLabel)
    model = build_model(model_args, names, multi_label)
    processor = CDTMImageProcessor.from_model_config(model.config)
    ds = attach_transforms(ds, processor, label_column, training_args.augment)

    push = training_args.push_to_hub
    training_args.push_to_hub = False  # we push the best model once, with its card, at the end
    trainer = CDTMTrainer(
        model=model, args=training_args, train_dataset=ds["train"], eval_dataset=ds["validation"],
        processing_class=processor, compute_metrics=compute_metrics,
    )
    try:
        trainer.train(resume_from_checkpoint=resume)
        output_dir = Path(training_args.output_dir)
        trainer.save_model(str(output_dir))  # the selected model with its processor
        training = _training_summary(trainer, model)
        if trainer.is_world_process_zero():  # keep the published folder pickle-free: the arguments as JSON instead
            (output_dir / "training_args.bin").unlink(missing_ok=True)
            (output_dir / "training_args.json").write_text(training_args.to_json_string())
            _write_run_args(output_dir, model, model_args, data_args, run_args, training)
        report = _test_and_record(trainer, ds["test"], names, model, data_args, manifest, training, push)
    finally:
        training_args.push_to_hub = push
    if trainer.is_world_process_zero() and not run_args.keep_checkpoints:
        prune_optimizer_states(output_dir)  # every checkpoint is superseded by the saved model
    return report


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
    ds, names, label_column, manifest = load_data_with_manifest(data_args)
    model = CDTMForImageClassification.from_pretrained(model_args.model_name_or_path)
    saved = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if saved != names:
        raise ValueError(
            f"{model_args.model_name_or_path} classifies {saved}, but the data's classes are {names}; evaluate it "
            "on data with the same classes (in the same order), or fine-tune it with --do_train True"
        )
    try:
        processor = CDTMImageProcessor.from_pretrained(model_args.model_name_or_path)
    except OSError:
        processor = CDTMImageProcessor.from_model_config(model.config)
    ds = attach_transforms(ds, processor, label_column, augment=False)
    training_args.push_to_hub, push = False, training_args.push_to_hub
    trainer = CDTMTrainer(model=model, args=training_args, eval_dataset=ds["validation"], processing_class=processor,
                          compute_metrics=compute_metrics)
    model_dir = Path(model_args.model_name_or_path)
    in_place = model_dir.is_dir() and model_dir.resolve() == Path(training_args.output_dir).resolve()
    record = json.loads((model_dir / "run_args.json").read_text()) if (model_dir / "run_args.json").is_file() else {}
    try:
        report = _test_and_record(trainer, ds["test"], names, model, data_args, manifest, record.get("training"),
                                  push and in_place, write_card=in_place, evaluated=model_args.model_name_or_path)
    finally:
        training_args.push_to_hub = push
    return report


def _test_and_record(
    trainer: CDTMTrainer, test_set, names: list[str], model: CDTMForImageClassification, data_args: DataArguments,
    manifest: dict | None, training: dict | None, push: bool, write_card: bool = True, evaluated: str | None = None,
) -> dict[str, Any]:
    """Predict the test set, then write the results (and card, and push) into `output_dir`; return the report."""
    args = trainer.args
    output_dir = Path(args.output_dir)
    prediction = trainer.predict(test_set, metric_key_prefix="test")
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    report = evaluation_report(logits, prediction.label_ids, names, loss=prediction.metrics.get("test_loss"))
    finetune_mode = (training or {}).get("finetune_mode")
    split = split_record(data_args, manifest)
    report.update(
        dataset=data_args.dataset, dataset_config=data_args.dataset_config, split_strategy=split["strategy"],
        split=split, seed=args.seed, backbone=model.config.backbone, backbone_preset=model.config.backbone_preset,
        finetune_mode=finetune_mode, use_cdtm=model.config.use_cdtm, cdtm_variant=model.config.cdtm_variant,
        training=training, efficiency=efficiency_summary(model),
    )
    if evaluated is not None:
        report["evaluated_model"] = evaluated
    if not trainer.is_world_process_zero():
        return report
    output_dir.mkdir(parents=True, exist_ok=True)
    if manifest is not None:
        (output_dir / MANIFEST_FILENAME).write_text(json.dumps(manifest, indent=1))
    write_results(report, output_dir, method_name(model, finetune_mode))
    if data_args.explain and model.config.use_cdtm:
        from .explain import explain_dataset

        explain_dataset(model, test_set, output_dir / "explain")
    if write_card:
        write_model_card(output_dir, report, repo_id=args.hub_model_id, paper_reference=paper_reference_for(report))
    if push:
        push_checkpoint(output_dir, args.hub_model_id, token=args.hub_token, private=bool(args.hub_private_repo))
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
    record = {"model": used, "data": asdict(data_args), "run": asdict(run_args), "training": training}
    (output_dir / "run_args.json").write_text(json.dumps(record, indent=2, default=str))


def _training_summary(trainer: CDTMTrainer, model: CDTMForImageClassification) -> dict[str, Any]:
    """`report["training"]`: the run-wide settings, and per stage what the trainer recorded as it ran."""
    args = trainer.args
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
        "stages": [dict(s) for s in trainer.stage_records],
        "selected_stage": trainer.selected_stage,
    }
