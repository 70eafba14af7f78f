"""Staged fine-tuning (SFT) and the other fine-tuning modes of the CDTM paper, as a `transformers.Trainer`.

Modes (Sec. II-B):
    scratch  the backbone is re-initialised; everything trains.
    lp       linear probing: the backbone is frozen; CDTM (if any) and the head train.
    fft      full fine-tuning: everything trains from step 0.
    sft      staged: stage 1 = lp, stage 2 = fft, in one `train()` call with a fresh optimizer and scheduler
             at the boundary. As in the official code, stage 2 starts from stage 1's best-on-validation
             checkpoint at a tenth of the learning rate, and each stage warms up for 5 epochs, then decays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import Trainer, TrainingArguments, default_data_collator
from transformers.integrations import TensorBoardCallback
from transformers.trainer_utils import get_last_checkpoint

from .backbones import BackboneAdapter
from .modeling_cdtm import CDTMForImageClassification

logger = logging.getLogger(__name__)

FINETUNE_MODES = ("scratch", "lp", "fft", "sft")


@dataclass
class CDTMTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the fine-tuning fields of the CDTM paper; defaults follow Sec. III-E."""

    finetune_mode: str = field(default="sft", metadata={"help": f"one of {', '.join(FINETUNE_MODES)}"})
    stage1_epochs: float = field(default=25, metadata={"help": "SFT stage 1 (frozen backbone) epochs"})
    stage2_epochs: float = field(default=50, metadata={"help": "SFT stage 2 (everything) epochs"})
    stage2_learning_rate: float | None = field(
        default=None, metadata={"help": "SFT stage 2 learning rate; default learning_rate / 10 (official code)"}
    )
    backbone_lr_multiplier: float = field(
        default=1.0, metadata={"help": "the backbone's learning rate relative to CDTM/head when it trains"}
    )
    warmup_epochs: float = field(default=5, metadata={"help": "linear warmup at the start of each stage"})
    stage2_from_best: bool = field(
        default=True, metadata={"help": "start stage 2 from stage 1's best-on-validation weights"}
    )
    backbone_norm_eval: bool = field(
        default=False,
        metadata={"help": "keep the backbone's BatchNorm running statistics (and batch-stat use) fixed while it "
                  "trains; helps CNN backbones with BatchNorm on small sets at the SFT stage boundary"},
    )
    augment: bool = field(default=False, metadata={"help": "random training augmentation (timm's train transform)"})
    feature_cache: bool = field(
        default=True,
        metadata={"help": "cache frozen-backbone tokens on disk and reuse them on later frozen epochs "
                  "(used only without random augmentation)"},
    )
    feature_cache_dir: str | None = field(default=None, metadata={"help": "default: <output_dir>/feature_cache"})

    # Defaults of the paper (Sec. III-E) and of a sensible run.
    learning_rate: float = 1e-4
    weight_decay: float = 1e-3
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 16
    num_train_epochs: float = 75
    lr_scheduler_type: str = "cosine"
    # One fused kernel per step: the CCA bases alone are n*p*p parameters (11.5 M for ViT-B/16), and the per-tensor
    # AdamW loop over them costs more than their forward pass (benchmarks/stage_step.py).
    optim: str = "adamw_torch_fused"
    eval_strategy: str = "epoch"
    save_strategy: str = "epoch"
    logging_strategy: str = "steps"
    logging_steps: float = 10
    load_best_model_at_end: bool = True
    metric_for_best_model: str | None = "f1"
    greater_is_better: bool | None = None
    save_total_limit: int | None = 2
    report_to: None | str | list[str] = "tensorboard"
    remove_unused_columns: bool = False
    label_names: list[str] | None = field(default_factory=lambda: ["labels"])

    def __post_init__(self):
        if self.finetune_mode not in FINETUNE_MODES:
            raise ValueError(f"finetune_mode {self.finetune_mode!r} is not one of: {', '.join(FINETUNE_MODES)}")
        if self.finetune_mode == "sft":
            if not self.stage1_epochs or self.stage1_epochs <= 0:
                raise ValueError(f"sft needs stage1_epochs > 0, got {self.stage1_epochs}")
            if not self.stage2_epochs or self.stage2_epochs <= 0:
                raise ValueError(
                    f"sft needs stage2_epochs > 0, got {self.stage2_epochs}; use finetune_mode='lp' for a frozen "
                    "backbone only"
                )
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.backbone_lr_multiplier <= 0:
            raise ValueError(f"backbone_lr_multiplier must be > 0, got {self.backbone_lr_multiplier}")
        if self.finetune_mode == "sft" and self.stage2_from_best and not self.load_best_model_at_end:
            raise ValueError(
                "stage2_from_best needs load_best_model_at_end=True (stage 1's best weights seed stage 2); "
                "pass --stage2_from_best False to start stage 2 from stage 1's last weights"
            )
        super().__post_init__()


@dataclass(frozen=True)
class Stage:
    index: int  # 1-based
    frozen_backbone: bool
    epochs: float
    learning_rate: float
    subdir: str  # "" for single-stage modes


def stage_plan(args: CDTMTrainingArguments) -> list[Stage]:
    """The stages of `args.finetune_mode`."""
    if args.finetune_mode == "sft":
        lr2 = args.stage2_learning_rate if args.stage2_learning_rate is not None else args.learning_rate / 10
        return [
            Stage(1, True, args.stage1_epochs, args.learning_rate, "stage1"),
            Stage(2, False, args.stage2_epochs, lr2, "stage2"),
        ]
    return [Stage(1, args.finetune_mode == "lp", args.num_train_epochs, args.learning_rate, "")]


def reinitialize_backbone(model: CDTMForImageClassification) -> None:
    """Scratch mode: replace the backbone's weights by its library's own random initialisation."""
    cfg = model.config
    fresh = BackboneAdapter(
        cfg.backbone_library, cfg.backbone, cfg.image_size, pretrained=False, model_kwargs=cfg.backbone_kwargs
    )
    model.backbone.load_state_dict(fresh.state_dict())


# --------------------------------------------------------------------------------------------------------------
# Frozen-stage feature cache
class CachedFeatures(Dataset):
    """Backbone tokens of a dataset, on disk (a numpy memmap), served as `backbone_features` + `labels`."""

    def __init__(self, features: np.ndarray, labels: np.ndarray):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"backbone_features": torch.from_numpy(np.array(self.features[i])), "labels": torch.as_tensor(self.labels[i])}


def _weights_digest(module: torch.nn.Module) -> str:
    """A cheap digest of a module's weights (a strided sample of every tensor), to tell weight sources apart."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().flatten()
        sample = flat[:: max(1, flat.numel() // 64)].float().cpu().numpy()
        digest.update(name.encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()


def _dataset_key(dataset: Any, model: CDTMForImageClassification) -> str:
    """Cache key: the dataset's fingerprint, the backbone and its actual weights, and the input size."""
    fingerprint = getattr(dataset, "_fingerprint", None) or f"{type(dataset).__name__}-{len(dataset)}-{id(dataset)}"
    cfg = model.config
    raw = json.dumps([fingerprint, cfg.backbone, cfg.image_size, len(dataset), _weights_digest(model.backbone)])
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def build_feature_cache(
    model: CDTMForImageClassification,
    dataset: Any,
    cache_dir: str | Path,
    batch_size: int = 32,
    collate_fn=default_data_collator,
    num_workers: int = 0,
    device: torch.device | None = None,
    desc: str = "Caching frozen backbone features",
) -> CachedFeatures:
    """Run the frozen backbone once over `dataset` (eval mode, no grad) and store its tokens in a memmap.

    A cache built earlier for the same dataset fingerprint and backbone is reused.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _dataset_key(dataset, model)
    meta_path, feat_path, label_path = (cache_dir / f"{key}.{ext}" for ext in ("json", "features.npy", "labels.npy"))
    cfg = model.config
    shape = (len(dataset), cfg.num_prefix_tokens + _backbone_tokens(cfg), cfg.hidden_size)
    if meta_path.exists() and feat_path.exists() and label_path.exists():
        meta = json.loads(meta_path.read_text())
        if tuple(meta["shape"]) == shape and meta.get("complete"):
            logger.info("Reusing feature cache %s", feat_path)
            return CachedFeatures(np.load(feat_path, mmap_mode="r"), np.load(label_path))
    features = np.lib.format.open_memmap(feat_path, mode="w+", dtype=np.float32, shape=shape)
    labels: list[Any] = []
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn, num_workers=num_workers)
    offset = 0
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, unit="batch"):
            feats = model.backbone_features(batch["pixel_values"].to(device)).float().cpu().numpy()
            features[offset : offset + len(feats)] = feats
            labels.extend(batch["labels"].cpu().numpy())
            offset += len(feats)
    model.train(was_training)
    features.flush()
    np.save(label_path, np.asarray(labels))
    meta_path.write_text(json.dumps({"shape": shape, "complete": True, "backbone": cfg.backbone}))
    return CachedFeatures(np.load(feat_path, mmap_mode="r"), np.load(label_path))


def _backbone_tokens(cfg) -> int:
    """Patch/spatial tokens the backbone emits (CDTM's p minus the prefix tokens it may keep)."""
    return cfg.num_tokens - (cfg.num_prefix_tokens if cfg.keep_prefix_tokens else 0)


# --------------------------------------------------------------------------------------------------------------
class CDTMTrainer(Trainer):
    """A `Trainer` that runs the CDTM fine-tuning modes; `train()` runs both SFT stages.

    Checkpoints of SFT go to `<output_dir>/stage1/checkpoint-*` and `<output_dir>/stage2/checkpoint-*`; stage 1's
    selected weights are also saved to `<output_dir>/stage1_best`. `train(resume_from_checkpoint=...)` accepts
    any of those checkpoints (or True for the latest) and continues from that point.
    """

    args: CDTMTrainingArguments

    def __init__(self, model: CDTMForImageClassification, args: CDTMTrainingArguments, **kwargs):
        if not isinstance(args, CDTMTrainingArguments):
            raise TypeError("CDTMTrainer needs CDTMTrainingArguments")
        kwargs.setdefault("data_collator", default_data_collator)
        super().__init__(model=model, args=args, **kwargs)
        self.root_output_dir = args.output_dir
        self.stage: Stage | None = None
        self._datasets = (self.train_dataset, self.eval_dataset)
        for callback in self.callback_handler.callbacks:  # one TensorBoard run for all stages
            if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
                callback.logging_dir = os.path.join(self.root_output_dir, "runs")

    # ---- stage management ----------------------------------------------------------------------------------
    def _stage_dir(self, stage: Stage) -> str:
        return os.path.join(self.root_output_dir, stage.subdir) if stage.subdir else self.root_output_dir

    def _resolve_resume(self, resume_from_checkpoint: str | bool | None, plan: list[Stage]) -> tuple[int, str | None]:
        """(index of the stage to start with, checkpoint to resume inside it)."""
        if resume_from_checkpoint in (None, False):
            return 0, None
        if resume_from_checkpoint is True:
            for i in reversed(range(len(plan))):
                stage_dir = self._stage_dir(plan[i])
                last = get_last_checkpoint(stage_dir) if os.path.isdir(stage_dir) else None
                if last is not None:
                    return i, last
            raise ValueError(f"resume_from_checkpoint=True but no checkpoint was found under {self.root_output_dir}")
        path = Path(resume_from_checkpoint).resolve()
        if not path.is_dir():
            raise ValueError(f"resume_from_checkpoint {str(path)!r} is not a checkpoint directory")
        for i, stage in enumerate(plan):
            if path.parent == Path(self._stage_dir(stage)).resolve():
                return i, str(path)
        return 0, str(path)

    def _enter_stage(self, stage: Stage, n_stages: int) -> None:
        self.stage = stage
        model = self.model
        model.backbone_norm_eval = self.args.backbone_norm_eval
        model.freeze_backbone(stage.frozen_backbone)
        self.args.output_dir = self._stage_dir(stage)
        self.args.num_train_epochs = stage.epochs
        self.args.learning_rate = stage.learning_rate
        self.optimizer, self.lr_scheduler = None, None  # a fresh optimizer and scheduler for every stage
        train_ds, eval_ds = self._datasets
        self.train_dataset, self.eval_dataset = train_ds, eval_ds
        if stage.frozen_backbone and self.args.feature_cache:
            if self.args.augment:
                logger.info("Feature cache off: random augmentation changes the backbone input every epoch")
            else:
                self.train_dataset = self._cached(train_ds, "train")
                if isinstance(eval_ds, dict):
                    self.eval_dataset = {k: self._cached(v, k) for k, v in eval_ds.items()}
                elif eval_ds is not None:
                    self.eval_dataset = self._cached(eval_ds, "validation")
        batches = math.ceil(len(self.train_dataset) / (self.args.train_batch_size * max(1, self.args.world_size)))
        steps_per_epoch = max(1, math.ceil(batches / self.args.gradient_accumulation_steps))
        self.args.warmup_steps = int(min(self.args.warmup_epochs, stage.epochs) * steps_per_epoch)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        logger.info(
            "%s: stage %d/%d, backbone %s, %s epochs, lr %.2e, %d/%d parameters trainable (%.1f%%)",
            self.args.finetune_mode.upper(), stage.index, n_stages, "frozen" if stage.frozen_backbone else "trained",
            stage.epochs, stage.learning_rate, trainable, total, 100 * trainable / total,
        )

    def _cached(self, dataset, split: str):
        cache_dir = self.args.feature_cache_dir or os.path.join(self.root_output_dir, "feature_cache")
        with self.accelerator.main_process_first():
            return build_feature_cache(
                self.model, dataset, cache_dir, batch_size=self.args.per_device_eval_batch_size,
                collate_fn=self.data_collator, num_workers=self.args.dataloader_num_workers,
                device=self.args.device, desc=f"Caching frozen backbone features ({split})",
            )

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        plan = stage_plan(self.args)
        start, checkpoint = self._resolve_resume(resume_from_checkpoint, plan)
        if self.args.finetune_mode == "scratch" and checkpoint is None:
            reinitialize_backbone(self.model)
        output = None
        for stage in plan[start:]:
            self._enter_stage(stage, len(plan))
            output = super().train(resume_from_checkpoint=checkpoint, trial=trial, **kwargs)
            checkpoint = None
            if len(plan) > 1 and stage.index == 1:
                # load_best_model_at_end has already put stage 1's best weights into the model
                self.save_model(os.path.join(self.root_output_dir, "stage1_best"))
        self.args.output_dir = self.root_output_dir
        self.train_dataset, self.eval_dataset = self._datasets
        return output

    # ---- optimizer: per-stage groups, backbone LR multiplier, no state for frozen parameters -----------------
    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups = []
        for in_backbone in (False, True):
            lr = self.args.learning_rate * (self.args.backbone_lr_multiplier if in_backbone else 1.0)
            for with_decay in (True, False):
                params = [
                    p for n, p in opt_model.named_parameters()
                    if p.requires_grad and n.startswith("backbone.") == in_backbone and (n in decay) == with_decay
                ]
                if params:
                    groups.append({"params": params, "lr": lr, "weight_decay": self.args.weight_decay if with_decay else 0.0})
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self.stage is not None:
            logs = {**logs, "stage": self.stage.index}
        super().log(logs, *args, **kwargs)
