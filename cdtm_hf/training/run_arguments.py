"""The argument dataclasses of one run besides `CDTMTrainingArguments`: the model, the data and the output folder.

Each field is checked once, on construction, by the one check of its subject (`check_model_fields` and
`backbone_arguments_problem` of the model core, `data_source_problem` of the data package), so a run started from
`examples/run_sft.py`, a grid or Python fails on a wrong value before any data is read, and in a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from ..core.backbone_names import backbone_arguments_problem
from ..core.configuration_cdtm import DEFAULT_CDTM_VARIANT, FieldError, check_model_fields
from ..data.registry import IMAGEFOLDER, data_source_problem
from ..data.verify import VERIFY_MODES
from .knobs import check_backbone_knobs

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "vitb16.laion2b"
DEFAULT_IMAGE_SIZE = 224

__all__ = ["SECRET_FIELDS", "DataArguments", "ModelArguments", "RunArguments", "redact_secrets", "resolve_model_args"]

#: the arguments that hold a secret (a Hub token): never written to a run's or a grid's files
SECRET_FIELDS = ("token", "hub_token")


def redact_secrets(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with each secret that is set (`SECRET_FIELDS`) replaced by ``"<TOKEN>"``, for the files a run writes."""
    return {k: ("<TOKEN>" if k in SECRET_FIELDS and v else v) for k, v in fields.items()}


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise FieldError(field, message)


@dataclass
class ModelArguments:
    """What model a run builds, or which saved CDTM checkpoint it continues from.

    `backbone` and `image_size` default to `None`, which means "the paper's default" (`vitb16.laion2b`, 224) for a new
    model and "the checkpoint's own value" with `model_name_or_path`. Passing either with a checkpoint that differs is
    refused by `resolve_model_args` instead of being silently ignored. The backbone name is checked against the
    presets and the backbone library's own registry here, before anything is loaded.
    """

    backbone: str | None = field(
        default=None,
        metadata={"help": f"preset name (cdtm_hf.BACKBONE_PRESETS) or model id; default {DEFAULT_BACKBONE}, or the "
                  "checkpoint's backbone with --model_name_or_path"},
    )
    backbone_library: str | None = field(default=None, metadata={"help": "timm or open_clip (presets set it)"})
    backbone_pretrained: bool = field(default=True, metadata={"help": "start from the backbone's pretrained weights"})
    backbone_pretrained_tag: str | None = field(default=None, metadata={"help": "open_clip pretrained tag"})
    backbone_pretrained_file: str | None = field(default=None, metadata={"help": "local backbone weights file"})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "a saved CDTM checkpoint (folder or Hub id) to continue from or to evaluate"}
    )
    use_cdtm: bool = field(default=True, metadata={"help": "False: backbone + head only (the ablation baseline)"})
    cdtm_variant: str = field(default=DEFAULT_CDTM_VARIANT, metadata={"help": "official (authors' code) or paper (text)"})
    num_centers: int = field(default=300, metadata={"help": "n, cluster centres (Eq. 1)"})
    num_cdtm_blocks: int = field(default=1, metadata={"help": "stacked CDTM blocks"})
    head_type: str = field(default="linear", metadata={"help": "linear or mha"})
    mha_num_heads: int = field(default=8, metadata={"help": "heads of the mha classifier"})
    image_size: int | None = field(
        default=None,
        metadata={"help": f"input size in pixels; default {DEFAULT_IMAGE_SIZE}, or the checkpoint's with "
                  "--model_name_or_path"},
    )
    # issue 18: a checkpoint on the Hub, as the HF examples take it
    model_revision: str = field(
        default="main", metadata={"help": "branch, tag or commit of --model_name_or_path on the Hub"}
    )
    token: str | None = field(
        default=None,
        metadata={"help": "Hub token for a private or gated --model_name_or_path (default: `hf auth login`'s or "
                  "HF_TOKEN); never written into the run's files"},
    )
    # issue 18: timm fine-tuning knobs
    drop_path_rate: float | None = field(
        default=None, metadata={"help": "stochastic depth of a timm backbone (timm create_model drop_path_rate)"})
    backbone_kwargs: dict | str | None = field(
        default=None, metadata={"help": "extra backbone factory arguments as JSON: timm create_model keywords, e.g. "
                                "'{\"proj_drop_rate\": 0.1}', or a transformers config's fields with "
                                "--backbone_library transformers"})
    # issue 20: CDTM at the token counts of large backbones
    cdtm_token_grid: int | None = field(
        default=None, metadata={"help": "pool the backbone's h x w token grid to g x g before CDTM (e.g. 14)"})
    cdtm_max_parameters: int | None = field(
        default=100_000_000, metadata={"help": "refuse a CDTM with more parameters than this (n * p^2 bases)"})
    # issue 19
    backbone_pretraining: str | None = field(
        default=None,
        metadata={"help": "what the backbone was pretrained on, e.g. \"ImageNet-1k\" (recorded in config.json and "
                          "the card; the presets know theirs, a --backbone_pretrained_file does not)"},
    )

    def hub_kwargs(self) -> dict[str, str | None]:
        """What `from_pretrained` of the checkpoint takes besides its name: the revision and the token."""
        return {"revision": self.model_revision, "token": self.token}

    def __post_init__(self):
        check_backbone_knobs(self)
        if self.model_name_or_path is None:
            self.backbone = self.backbone or DEFAULT_BACKBONE
            self.image_size = self.image_size if self.image_size is not None else DEFAULT_IMAGE_SIZE
        check_model_fields(
            backbone_library=self.backbone_library, head_type=self.head_type, image_size=self.image_size,
            num_centers=self.num_centers, num_cdtm_blocks=self.num_cdtm_blocks, mha_num_heads=self.mha_num_heads,
            cdtm_variant=self.cdtm_variant,
        )
        problem = backbone_arguments_problem(self.backbone, self.backbone_library, self.model_name_or_path)
        _require(problem is None, "backbone", str(problem))
        _require(self.cdtm_token_grid is None or self.cdtm_token_grid >= 1, "cdtm_token_grid",
                 f"cdtm_token_grid must be >= 1 (a g x g grid), got {self.cdtm_token_grid}")


@dataclass
class DataArguments:
    """Which data a run reads and how it is split."""

    dataset: str = field(
        default="imagefolder",
        metadata={"help": "imagefolder, or a medical builder: breakhis, hcrf, isic2019, aptos2019, cbis_ddsm, "
                  "chexpert"},
    )
    data_dir: str | None = field(default=None, metadata={"help": "dataset folder or archive"})
    dataset_config: str | None = field(default=None, metadata={"help": "builder config, e.g. malignant_200x"})
    split_strategy: str = field(default="patient", metadata={"help": "patient (recommended), paper or official"})
    split_seed: int = field(default=42, metadata={"help": "seed of the data split (and of --max_train_samples)"})
    validation_fraction: float = field(default=0.2, metadata={"help": "imagefolder without a validation split"})
    test_fraction: float = field(default=0.2, metadata={"help": "imagefolder without a test split"})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache dir"})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "a stratified, seeded subset of train (debugging); keeps every class"}
    )
    verify_images: str = field(
        default="fast", metadata={"help": "decode check of every image before training: fast, full or none"}
    )
    skip_corrupt: bool = field(
        default=False, metadata={"help": "drop unreadable images (each is named in the log and split_manifest.json)"}
    )
    explain: bool = field(default=False, metadata={"help": "write CCA explanation PNGs for the test set"})
    # issue 18: the data sources of transformers' run_image_classification.py (cdtm_hf.data.sources)
    dataset_name: str | None = field(
        default=None, metadata={"help": "a Hub dataset id (org/name), a local dataset repository folder, or a folder "
                                "written by save_to_disk (instead of --dataset/--data_dir)"},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "the config of --dataset_name"})
    image_column_name: str | None = field(
        default=None, metadata={"help": "column of images of a --dataset_name / metadata.csv source (default: image)"}
    )
    label_column_name: str | None = field(
        default=None, metadata={"help": "column of class labels of a --dataset_name / metadata.csv source "
                                "(default: label)"},
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "a stratified, seeded subset of validation (debugging); keeps every class"}
    )
    # issue 19
    extra_test: list[str] | None = field(
        default=None,
        metadata={"help": "extra test sets reported separately, name=DIR (an image folder of the same classes) or "
                          "name=CONFIG[:column=value] (another config of --dataset, the test patients' images only, "
                          "e.g. x40=all_magnifications:magnification=40); repeatable (--extra_test a=X --extra_test b=Y) or "
                          "several after one flag", "action": "extend"},
    )

    def __post_init__(self):
        problem = data_source_problem(self.dataset, self.dataset_config, self.split_strategy,
                                      dataset_name=self.dataset_name, dataset_config_name=self.dataset_config_name)
        if problem:
            raise FieldError(*problem)
        for item in self.extra_test or []:  # issue 19
            name, _, source = str(item).partition("=")
            _require(bool(name and source) and name.replace("_", "").replace("-", "").isalnum(), "extra_test",
                     f"extra_test {item!r} must read name=DIR or name=CONFIG (name: letters, digits, _ or -)")
        names = [str(i).partition("=")[0] for i in self.extra_test or []]
        _require(len(set(names)) == len(names), "extra_test", f"extra_test names repeat: {names}")
        _require(self.dataset != IMAGEFOLDER or bool(self.data_dir or self.dataset_name), "data_dir",
                 "dataset imagefolder needs data_dir: pass --data_dir <folder> holding <class>/ folders of images, "
                 "optionally under train/, validation/ and test/")
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            _require(0 < value < 1, name, f"{name} must be between 0 and 1 (exclusive), got {value}")
        _require(
            self.validation_fraction + self.test_fraction < 1, "test_fraction",
            f"validation_fraction + test_fraction must leave images for training, got {self.validation_fraction} + "
            f"{self.test_fraction} >= 1",
        )
        _require(
            self.max_train_samples is None or self.max_train_samples >= 1, "max_train_samples",
            f"max_train_samples must be >= 1 (or left out for all of train), got {self.max_train_samples}",
        )
        _require(
            self.max_eval_samples is None or self.max_eval_samples >= 1, "max_eval_samples",
            f"max_eval_samples must be >= 1 (or left out for all of validation), got {self.max_eval_samples}",
        )
        _require(self.verify_images in VERIFY_MODES, "verify_images",
                 f"verify_images {self.verify_images!r} is not one of: {', '.join(VERIFY_MODES)}")


@dataclass
class RunArguments:
    """How a run treats its output folder. (`do_train` is `TrainingArguments.do_train`; see `examples/run_sft.py`.)"""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "replace a finished run in --output_dir (its files are removed first, never mixed)"},
    )
    keep_checkpoints: bool = field(
        default=False,
        metadata={"help": "keep the optimizer states of superseded checkpoints (removed at the end of a run)"},
    )
    # issue 19
    bootstrap_resamples: int = field(
        default=1000,
        metadata={"help": "bootstrap resamples for the 95 %% intervals of every test metric (patients where the "
                          "split has patient ids, else images); 0 turns the intervals off"},
    )
    calibrate: bool = field(
        default=False,
        metadata={"help": "fit a temperature on the validation split (recorded in config.json, applied by "
                          "pipeline() and cdtm-predict); the test calibration is reported before and after"},
    )

    cv_folds: int = field(
        default=0,
        metadata={"help": "K > 1: K-fold cross-validation (patient-grouped, stratified, seeded by --split_seed) over "
                          "all the data's images; each fold runs in <output_dir>/fold<k>; 0: one run on the split"},
    )

    lr_sweep: list[float] | None = field(
        default=None,
        metadata={"help": "learning rates to try, each in <output_dir>/lr<lr>; the best on validation is kept "
                          "(ties: lower validation loss); the test set never chooses"},
    )

    def __post_init__(self):  # issue 19
        _require(not self.lr_sweep or all(lr > 0 for lr in self.lr_sweep), "lr_sweep",
                 f"lr_sweep learning rates must be positive, got {self.lr_sweep}")
        _require(not (self.lr_sweep and self.cv_folds), "lr_sweep",
                 "pass --lr_sweep or --cv_folds, not both (sweep first, then cross-validate the chosen rate)")
        _require(self.cv_folds == 0 or self.cv_folds >= 2, "cv_folds",
                 f"cv_folds must be 0 (no cross-validation) or at least 2, got {self.cv_folds}")
        _require(self.bootstrap_resamples == 0 or self.bootstrap_resamples >= 2, "bootstrap_resamples",
                 f"bootstrap_resamples must be 0 (off) or at least 2 (1000 by default), got {self.bootstrap_resamples}")


def resolve_model_args(model_args: ModelArguments) -> ModelArguments:
    """With `model_name_or_path`, refuse a `backbone`/`backbone_library`/`image_size` that differs from the
    checkpoint's, and return the arguments with the checkpoint's architecture (what the run will use and record)."""
    if not model_args.model_name_or_path:
        return model_args
    from ..core.configuration_cdtm import CDTMConfig

    config = CDTMConfig.from_pretrained(model_args.model_name_or_path, **model_args.hub_kwargs())
    saved = {"backbone": config.backbone_preset or config.backbone, "backbone_library": config.backbone_library,
             "image_size": config.image_size}
    conflicts = [f"--{k} {getattr(model_args, k)} (the checkpoint has {v})" for k, v in saved.items()
                 if getattr(model_args, k) is not None and getattr(model_args, k) not in (v, config.backbone)]
    if conflicts:
        raise ValueError(
            f"--model_name_or_path {model_args.model_name_or_path} cannot change its architecture: "
            f"{'; '.join(conflicts)}. Leave these out to use the checkpoint's, or start a new model without "
            "--model_name_or_path"
        )
    architecture = {"use_cdtm": config.use_cdtm, "num_centers": config.num_centers,
                    "num_cdtm_blocks": config.num_cdtm_blocks, "head_type": config.head_type,
                    "mha_num_heads": config.mha_num_heads, "cdtm_variant": config.cdtm_variant}
    ignored = {k: v for k, v in architecture.items() if v is not None and getattr(model_args, k) != v}
    if ignored:
        logger.warning("--model_name_or_path %s: using the checkpoint's %s", model_args.model_name_or_path,
                       ", ".join(f"{k}={v}" for k, v in ignored.items()))
    return replace(model_args, **saved, **{k: v for k, v in architecture.items() if v is not None})
