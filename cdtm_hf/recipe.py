"""One fine-tuning run end to end: data -> model -> CDTMTrainer -> best model -> test metrics -> card/push.

`examples/run_sft.py` and the experiment grid are thin shells over `run_finetuning`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, DatasetDict
from datasets.data_files import SPLIT_KEYWORDS
from transformers import set_seed

from .configuration_cdtm import CDTMConfig
from .efficiency import count_flops
from .hub import check_push_ready, paper_reference_for, push_checkpoint, write_model_card
from .image_processing_cdtm import CDTMImageProcessor
from .metrics import compute_metrics, evaluation_report, write_results
from .modeling_cdtm import CDTMForImageClassification
from .trainer import CDTMTrainer, CDTMTrainingArguments, stage_plan

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
BUILDER_SPLIT_STRATEGIES = ("patient", "paper", "official")
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


@dataclass
class ModelArguments:
    backbone: str = field(default="vitb16.laion2b", metadata={"help": "preset name (cdtm_hf.BACKBONE_PRESETS) or model id"})
    backbone_library: str | None = field(default=None, metadata={"help": "timm or open_clip (presets set it)"})
    backbone_pretrained: bool = field(default=True, metadata={"help": "start from the backbone's pretrained weights"})
    backbone_pretrained_tag: str | None = field(default=None, metadata={"help": "open_clip pretrained tag"})
    backbone_pretrained_file: str | None = field(default=None, metadata={"help": "local backbone weights file"})
    model_name_or_path: str | None = field(default=None, metadata={"help": "continue from a saved CDTM checkpoint"})
    use_cdtm: bool = field(default=True, metadata={"help": "False: backbone + head only (the ablation baseline)"})
    cdtm_variant: str = field(default="official", metadata={"help": "official (authors' code) or paper (text)"})
    num_centers: int = field(default=300, metadata={"help": "n, cluster centres (Eq. 1)"})
    num_cdtm_blocks: int = field(default=1, metadata={"help": "stacked CDTM blocks"})
    head_type: str = field(default="linear", metadata={"help": "linear or mha"})
    mha_num_heads: int = field(default=8, metadata={"help": "heads of the mha classifier"})
    image_size: int = field(default=224, metadata={"help": "input size in pixels"})


@dataclass
class DataArguments:
    dataset: str = field(
        default="imagefolder",
        metadata={"help": "imagefolder, or a medical builder: breakhis, hcrf, isic2019, aptos2019, cbis_ddsm, chexpert"},
    )
    data_dir: str | None = field(default=None, metadata={"help": "dataset folder or archive"})
    dataset_config: str | None = field(default=None, metadata={"help": "builder config, e.g. malignant_200x"})
    split_strategy: str = field(default="patient", metadata={"help": "patient (recommended), paper or official"})
    split_seed: int = field(default=42, metadata={"help": "seed of the data split"})
    validation_fraction: float = field(default=0.2, metadata={"help": "imagefolder without a validation split"})
    test_fraction: float = field(default=0.2, metadata={"help": "imagefolder without a test split"})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache dir"})
    max_train_samples: int | None = field(default=None, metadata={"help": "truncate train (debugging)"})
    explain: bool = field(default=False, metadata={"help": "write CCA explanation PNGs for the test set"})


# ----------------------------------------------------------------------------------------------------------------
# Data
def _check_image_dir(data_dir: str) -> None:
    path = Path(data_dir)
    if not path.exists():
        raise FileNotFoundError(f"data_dir {data_dir!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"data_dir {data_dir!r} is not a folder; imagefolder expects <data_dir>/<split>/<class>/*.png")
    if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.rglob("*") if p.is_file()):
        raise ValueError(
            f"data_dir {data_dir!r} holds no images; imagefolder expects <data_dir>/{{train,validation,test}}/<class>/"
            "*.png (or <data_dir>/<class>/*.png, then split here)"
        )


def _split_missing(ds: DatasetDict, data_args: DataArguments, label_column: str) -> DatasetDict:
    """Carve validation/test out of train, stratified by label and seeded, where the folder does not have them."""
    if "test" not in ds:
        parts = ds["train"].train_test_split(test_size=data_args.test_fraction, seed=data_args.split_seed,
                                             stratify_by_column=label_column)
        ds["train"], ds["test"] = parts["train"], parts["test"]
    if "validation" not in ds:
        frac = data_args.validation_fraction / (1 - data_args.test_fraction)
        parts = ds["train"].train_test_split(test_size=frac, seed=data_args.split_seed, stratify_by_column=label_column)
        ds["train"], ds["validation"] = parts["train"], parts["test"]
    return ds


def effective_split_strategy(data_args: DataArguments) -> str:
    """What decided the split, for the results and the model card: a builder's strategy, or for an imagefolder
    the folders themselves, or a random stratified split of a folder that had no validation/test."""
    if data_args.dataset != "imagefolder":
        return data_args.split_strategy
    if data_args.split_strategy not in BUILDER_SPLIT_STRATEGIES:  # the caller describes how the folders were made
        return data_args.split_strategy
    root = Path(data_args.data_dir or "")
    has = {p.name.lower() for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    # the folder names `datasets` itself reads as train / validation / test
    if all(has & set(names) for names in SPLIT_KEYWORDS.values()):
        return "given by the imagefolder's train/validation/test folders"
    return "random stratified split of an imagefolder (not grouped by patient)"


def load_data(data_args: DataArguments) -> tuple[DatasetDict, list[str], str]:
    """(train/validation/test DatasetDict, label names, label column). Images are in the 'image' column."""
    if data_args.dataset == "imagefolder":
        if not data_args.data_dir:
            raise ValueError("--data_dir is required for --dataset imagefolder")
        _check_image_dir(data_args.data_dir)
        from datasets import load_dataset

        ds = load_dataset("imagefolder", data_dir=data_args.data_dir, cache_dir=data_args.cache_dir)
        ds = _split_missing(ds, data_args, "label")  # `datasets` already maps val/valid/dev to "validation"
    else:
        from .data import load_medical_dataset

        ds = load_medical_dataset(
            data_args.dataset, data_dir=data_args.data_dir, config=data_args.dataset_config,
            split_strategy=data_args.split_strategy, seed=data_args.split_seed, cache_dir=data_args.cache_dir,
        )
    missing = [s for s in SPLITS if s not in ds]
    if missing:
        raise ValueError(f"the dataset has no {', '.join(missing)} split(s); it has: {', '.join(ds)}")
    from .data import label_names

    label_column = "label" if "label" in ds["train"].column_names else "labels"
    feature = ds["train"].features[label_column]
    names = label_names(ds["train"])
    if isinstance(feature, ClassLabel):
        for split in SPLITS:
            counts = np.bincount(np.asarray(ds[split][label_column]), minlength=len(names))
            empty = [names[i] for i, c in enumerate(counts) if c == 0]
            if empty:
                raise ValueError(f"class(es) {', '.join(empty)} have no images in the {split} split")
    if data_args.max_train_samples:
        ds["train"] = ds["train"].select(range(min(data_args.max_train_samples, len(ds["train"]))))
    return ds, names, label_column


def attach_transforms(ds: DatasetDict, processor: CDTMImageProcessor, label_column: str, augment: bool) -> DatasetDict:
    """Decode and preprocess on the fly: `image` -> `pixel_values`, label column -> `labels`."""
    eval_tf = processor.val_transforms
    train_tf = processor.train_transforms() if augment else eval_tf

    def make(transform):
        def apply(batch: dict[str, list]) -> dict[str, Any]:
            pixel_values = [transform(image.convert("RGB")) for image in batch["image"]]
            labels = batch[label_column]
            return {"pixel_values": pixel_values, "labels": torch.as_tensor(np.asarray(labels))}

        return apply

    return DatasetDict({k: v.with_transform(make(train_tf if k == "train" else eval_tf)) for k, v in ds.items()})


# ----------------------------------------------------------------------------------------------------------------
# Model
def build_model(model_args: ModelArguments, names: list[str], multi_label: bool = False) -> CDTMForImageClassification:
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
    return CDTMForImageClassification(config)


def method_name(model: CDTMForImageClassification, args: CDTMTrainingArguments) -> str:
    """A row label in the paper's style, e.g. 'vitb16.laion2b-CDTM-SFT'."""
    cfg = model.config
    name = cfg.backbone_preset or cfg.backbone
    return f"{name}{'-CDTM' if cfg.use_cdtm else ''}-{args.finetune_mode.upper()}"


# ----------------------------------------------------------------------------------------------------------------
def run_finetuning(
    model_args: ModelArguments, data_args: DataArguments, training_args: CDTMTrainingArguments
) -> dict[str, Any]:
    """Train (all stages of `finetune_mode`), keep the best model on validation, test it, write the results.

    Writes into `output_dir`: the best model (safetensors + config + remote code + preprocessor), `test_results.json`,
    `test_results.md` (Table IV row), `confusion_matrix.png`, TensorBoard events under `runs/`, and a model card.
    Returns the `test_results.json` content.
    """
    set_seed(training_args.seed)
    ds, names, label_column = load_data(data_args)
    multi_label = label_column == "labels" and not isinstance(ds["train"].features[label_column], ClassLabel)
    model = build_model(model_args, names, multi_label)
    processor = CDTMImageProcessor.from_model_config(model.config)
    ds = attach_transforms(ds, processor, label_column, training_args.augment)

    push = training_args.push_to_hub
    if push:  # a bad repo id or a missing login fails now, not after the whole run
        check_push_ready(training_args.hub_model_id, training_args.hub_token)
    training_args.push_to_hub = False  # we push the best model once, with its card, at the end
    trainer = CDTMTrainer(
        model=model, args=training_args, train_dataset=ds["train"], eval_dataset=ds["validation"],
        processing_class=processor, compute_metrics=compute_metrics,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir))  # the best model (load_best_model_at_end) with its processor
    if trainer.is_world_process_zero():  # keep the published folder pickle-free: the arguments as JSON instead
        (output_dir / "training_args.bin").unlink(missing_ok=True)
        (output_dir / "training_args.json").write_text(training_args.to_json_string())

    prediction = trainer.predict(ds["test"], metric_key_prefix="test")
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    report = evaluation_report(logits, prediction.label_ids, names, loss=prediction.metrics.get("test_loss"))
    report.update(
        dataset=data_args.dataset, dataset_config=data_args.dataset_config,
        split_strategy=effective_split_strategy(data_args),
        seed=training_args.seed, backbone=model.config.backbone, backbone_preset=model.config.backbone_preset,
        finetune_mode=training_args.finetune_mode, use_cdtm=model.config.use_cdtm,
        cdtm_variant=model.config.cdtm_variant, training=_training_summary(training_args, model),
        efficiency=_efficiency_summary(model),
    )
    if trainer.is_world_process_zero():
        write_results(report, output_dir, method_name(model, training_args))
        (output_dir / "run_args.json").write_text(
            json.dumps({"model": asdict(model_args), "data": asdict(data_args)}, indent=2, default=str)
        )
        if data_args.explain and model.config.use_cdtm:
            from .explain import explain_dataset

            explain_dataset(model, ds["test"], output_dir / "explain")
        write_model_card(output_dir, report, repo_id=training_args.hub_model_id,
                         paper_reference=paper_reference_for(report))
        if push:
            push_checkpoint(output_dir, training_args.hub_model_id, token=training_args.hub_token,
                            private=bool(training_args.hub_private_repo))
    training_args.push_to_hub = push
    return report


def _training_summary(args: CDTMTrainingArguments, model: CDTMForImageClassification) -> dict[str, Any]:
    summary = {
        "finetune_mode": args.finetune_mode,
        "learning_rate": args.learning_rate if args.finetune_mode != "sft" else None,
        "batch_size": args.per_device_train_batch_size,
        "weight_decay": args.weight_decay,
        "optimizer": "AdamW",
        "betas": [args.adam_beta1, args.adam_beta2],
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup_epochs": args.warmup_epochs,
        "image_size": model.config.image_size,
        "metric_for_best_model": args.metric_for_best_model,
        "augment": args.augment,
    }
    if args.finetune_mode == "sft":
        s1, s2 = stage_plan(args)
        summary.update(stage1_epochs=s1.epochs, stage2_epochs=s2.epochs, learning_rate=s1.learning_rate,
                       stage2_learning_rate=s2.learning_rate, backbone_lr_multiplier=args.backbone_lr_multiplier)
    else:
        summary["epochs"] = args.num_train_epochs
    return summary


def _efficiency_summary(model: CDTMForImageClassification) -> dict[str, Any]:
    total = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in model.backbone.parameters())
    return {
        "gmacs": round(count_flops(model, model.config.image_size) / 2e9, 3),
        "params_m": round(total / 1e6, 3),
        "added_params": model.added_parameters(),
        "lp_trainable_pct": round(100 * (total - backbone) / total, 2),
    }
