"""The argument dataclasses of one run (`examples/run_sft.py`, the experiment grid), each validated on construction.

Every check here runs before any data is read, so a wrong number fails in a second instead of after a stage of
training. The training fields (`CDTMTrainingArguments`) are checked by `cdtm_hf.recipe.validate_training_args`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from .data import VERIFY_MODES
from .trainer import CDTMTrainingArguments

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "vitb16.laion2b"
DEFAULT_IMAGE_SIZE = 224
CDTM_VARIANTS = ("official", "paper")
HEAD_TYPES = ("linear", "mha")
BACKBONE_LIBRARIES = ("timm", "open_clip")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class ModelArguments:
    """What model a run builds, or which saved CDTM checkpoint it continues from.

    `backbone` and `image_size` default to `None`, which means "the paper's default" (`vitb16.laion2b`, 224) for a new
    model and "the checkpoint's own value" with `model_name_or_path`. Passing either with a checkpoint that differs is
    refused by `cdtm_hf.recipe.resolve_model_args` instead of being silently ignored.
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
    cdtm_variant: str = field(default="official", metadata={"help": "official (authors' code) or paper (text)"})
    num_centers: int = field(default=300, metadata={"help": "n, cluster centres (Eq. 1)"})
    num_cdtm_blocks: int = field(default=1, metadata={"help": "stacked CDTM blocks"})
    head_type: str = field(default="linear", metadata={"help": "linear or mha"})
    mha_num_heads: int = field(default=8, metadata={"help": "heads of the mha classifier"})
    image_size: int | None = field(
        default=None,
        metadata={"help": f"input size in pixels; default {DEFAULT_IMAGE_SIZE}, or the checkpoint's with "
                  "--model_name_or_path"},
    )

    def __post_init__(self):
        if self.model_name_or_path is None:
            self.backbone = self.backbone or DEFAULT_BACKBONE
            self.image_size = self.image_size if self.image_size is not None else DEFAULT_IMAGE_SIZE
        _require(
            self.image_size is None or self.image_size > 0,
            f"image_size must be a positive number of pixels, got {self.image_size}",
        )
        _require(self.num_centers >= 1, f"num_centers (n in Eq. 1) must be >= 1, got {self.num_centers}")
        _require(self.num_cdtm_blocks >= 1, f"num_cdtm_blocks must be >= 1, got {self.num_cdtm_blocks}; pass "
                 "--use_cdtm False for a model without CDTM")
        _require(self.mha_num_heads >= 1, f"mha_num_heads must be >= 1, got {self.mha_num_heads}")
        _require(self.cdtm_variant in CDTM_VARIANTS,
                 f"cdtm_variant {self.cdtm_variant!r} is not one of: {', '.join(CDTM_VARIANTS)}")
        _require(self.head_type in HEAD_TYPES, f"head_type {self.head_type!r} is not one of: {', '.join(HEAD_TYPES)}")
        _require(self.backbone_library in (None, *BACKBONE_LIBRARIES),
                 f"backbone_library {self.backbone_library!r} is not one of: {', '.join(BACKBONE_LIBRARIES)} "
                 "(or leave it out for a preset)")


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

    def __post_init__(self):
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            _require(0 < value < 1, f"{name} must be between 0 and 1 (exclusive), got {value}")
        _require(
            self.validation_fraction + self.test_fraction < 1,
            f"validation_fraction + test_fraction must leave images for training, got {self.validation_fraction} + "
            f"{self.test_fraction} >= 1",
        )
        _require(
            self.max_train_samples is None or self.max_train_samples >= 1,
            f"max_train_samples must be >= 1 (or left out for all of train), got {self.max_train_samples}",
        )
        _require(self.verify_images in VERIFY_MODES,
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




# ----------------------------------------------------------------------------------------------------------------
# Checks of a run's arguments against the world: the training numbers, the checkpoint, the resume point, the folder.
def validate_training_args(args: CDTMTrainingArguments) -> None:
    """Refuse a run that would train nothing or diverge by construction, naming the argument and the remedy.

    `CDTMTrainingArguments` itself checks the mode, the SFT stage epochs, warmup and the backbone multiplier.
    """
    sft = args.finetune_mode == "sft"
    _require(sft or args.max_steps > 0 or args.num_train_epochs > 0,
             f"num_train_epochs must be > 0 for finetune_mode={args.finetune_mode!r}, got {args.num_train_epochs}; "
             "a run that trains nothing would save and card an untrained model (use --do_train False to evaluate "
             "a saved model)")
    _require(args.learning_rate > 0, f"learning_rate must be > 0, got {args.learning_rate} (the paper uses 1e-4)")
    _require(args.stage2_learning_rate is None or args.stage2_learning_rate > 0,
             f"stage2_learning_rate must be > 0, got {args.stage2_learning_rate}; leave it out for learning_rate / 10")
    _require(args.weight_decay >= 0, f"weight_decay must be >= 0, got {args.weight_decay} (the paper uses 1e-3)")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        _require(getattr(args, name) >= 1, f"{name} must be >= 1, got {getattr(args, name)}")
    _require(not (sft and args.max_steps > 0),
             f"max_steps={args.max_steps} would cut both SFT stages at the same step count; set --stage1_epochs and "
             "--stage2_epochs instead")


def resolve_resume(value: str | bool | None, output_dir: str) -> str | bool | None:
    """`--resume_from_checkpoint` as the trainer takes it: True, None, or a checkpoint folder that exists.

    The command line delivers `"True"`/`"False"` as strings. A folder without `trainer_state.json` (such as
    `<output_dir>/stage1_best`, stage 1's selected weights) is refused with the checkpoints that can be passed.
    """
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "none", ""):
        value = value.strip().lower() == "true"
    if value is None or value is False:
        return None
    found = _checkpoints(Path(output_dir))
    if value is True:
        _require(bool(found), f"--resume_from_checkpoint True found no checkpoint-* folder under {output_dir}; "
                 "start without it, or pass the checkpoint folder of another run")
        return True
    path = Path(value)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {value!r} is not a folder; pass True (the latest "
                                f"checkpoint under --output_dir) or a checkpoint-<step> folder")
    if not (path / "trainer_state.json").is_file():
        choices = ", ".join(str(p) for p in found[-4:]) or "none found under --output_dir"
        hint = (" It holds stage 1's selected weights, not a training state; to start a new run from them pass "
                f"--model_name_or_path {value}.") if path.name == "stage1_best" else ""
        raise ValueError(
            f"--resume_from_checkpoint {value!r} is not a training checkpoint (no trainer_state.json).{hint} To "
            f"continue a run pass --resume_from_checkpoint True (its latest checkpoint) or a checkpoint folder: "
            f"{choices}"
        )
    return str(path)


def _checkpoints(output_dir: Path) -> list[Path]:
    """The run's checkpoint folders, in training order: single-stage ones, then stage 1's, then stage 2's."""
    def step(p: Path) -> int:
        return int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1

    found = []
    for folder in (output_dir, output_dir / "stage1", output_dir / "stage2"):
        if folder.is_dir():
            found += sorted((p for p in folder.glob("checkpoint-*") if p.is_dir()), key=step)
    return found


#: what a run writes into its output folder (besides the remote code files, found from the package itself)
RUN_FILES = (
    "test_results.json", "test_results.md", "confusion_matrix.png", "README.md", "run_args.json", "training_args.json",
    "training_args.bin", "split_manifest.json", "config.json", "preprocessor_config.json", "model.safetensors",
    "model.safetensors.index.json", "all_results.json", "eval_results.json", "trainer_state.json",
)
RUN_DIRS = ("stage1", "stage2", "stage1_best", "runs", "explain")
RUN_MARKERS = ("test_results.json", "model.safetensors", "run_args.json", "stage1", "stage2", "runs")


def clear_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse an output folder that holds a run (finished or not) unless `overwrite`; then remove that run's files.

    The feature cache is kept: it is keyed by the data and the backbone's weights, so a new run can only reuse
    what matches it. Files that no run writes are left alone.
    """
    root = Path(output_dir)
    found = [name for name in RUN_MARKERS if (root / name).exists()] + [p.name for p in _checkpoints(root)[:1]]
    if not found:
        return
    if not overwrite:
        raise FileExistsError(
            f"output_dir {output_dir} already holds a run (found {', '.join(found)}). Pass --overwrite_output_dir to "
            "replace it (its files are removed first), --resume_from_checkpoint True to continue it, or another "
            "--output_dir"
        )
    code = {p.name for p in Path(__file__).parent.glob("*.py")}
    for path in root.iterdir():
        run_dir = path.is_dir() and (path.name in RUN_DIRS or path.name.startswith("checkpoint-"))
        if run_dir:
            shutil.rmtree(path)
        elif path.is_file() and (path.name in RUN_FILES or path.name in code or path.name.startswith("model-")):
            path.unlink()
    logger.info("Removed the previous run's files from %s (--overwrite_output_dir)", output_dir)


def resolve_model_args(model_args: ModelArguments) -> ModelArguments:
    """With `model_name_or_path`, refuse a `backbone`/`backbone_library`/`image_size` that differs from the
    checkpoint's, and return the arguments with the checkpoint's architecture (what the run will use and record)."""
    if not model_args.model_name_or_path:
        return model_args
    from .configuration_cdtm import CDTMConfig

    config = CDTMConfig.from_pretrained(model_args.model_name_or_path)
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


__all__ = [
    "DataArguments", "ModelArguments", "RunArguments", "clear_output_dir", "resolve_model_args", "resolve_resume",
    "validate_training_args",
]
