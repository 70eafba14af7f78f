"""Hugging Face Hub integration: model cards, checkpoint validation and pushing.

A training run's output directory holds the best model (``config.json``, ``model.safetensors``, the remote-code
``*.py`` files, ``preprocessor_config.json``), ``test_results.json`` and ``confusion_matrix.png``. This module

* writes a model card (``README.md``) for it from those files (:func:`generate_model_card`, :func:`write_model_card`);
* checks that it is a complete, pickle-free checkpoint (:func:`validate_checkpoint`);
* uploads exactly the files a user needs, never Trainer checkpoints, optimizer/scheduler/RNG state, TensorBoard runs
  or pickles (:func:`push_checkpoint`);
* renders the cards of the published recipes in ``model_cards/`` from one data table (:data:`RECIPES`,
  :func:`render_recipe_card`), so they cannot drift apart.

Command line::

    python -m cdtm_hf.hub card outputs/run1 [--repo_id org/name]
    python -m cdtm_hf.hub push outputs/run1 org/name [--private] [--token hf_...]
    python -m cdtm_hf.hub recipes [--out model_cards]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .configuration_cdtm import CDTM_VARIANTS
from .paper import paper_row
from .presets import BACKBONE_PRESETS, BackbonePreset

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CheckpointError",
    "DATASETS",
    "InvalidRepoIdError",
    "MissingTokenError",
    "RECIPES",
    "Recipe",
    "check_push_ready",
    "checkpoint_files",
    "generate_model_card",
    "main",
    "paper_reference_for",
    "push_checkpoint",
    "recipe_command",
    "render_recipe_card",
    "validate_checkpoint",
    "write_model_card",
    "write_recipe_cards",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
CARD_NAME = "README.md"
RESULTS_NAME = "test_results.json"
CONFUSION_MATRIX_NAME = "confusion_matrix.png"

# Files that go up with the model when present (besides the weights and the remote-code *.py files).
OPTIONAL_PUSH_FILES = (PREPROCESSOR_NAME, CARD_NAME, RESULTS_NAME, CONFUSION_MATRIX_NAME)
# Pickle formats: never pushed, and a checkpoint that holds one at its top level is refused.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
# Trainer bookkeeping that Trainer.save_model / _save_checkpoint writes beside the model. These are pickles too,
# but no loader ever reads them as model weights; they are tolerated in the folder and never uploaded.
TRAINER_STATE_FILES = re.compile(
    r"^(training_args\.bin|optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth)$"
)
# Belt and braces: passed to upload_folder as ignore_patterns on top of the explicit allow-list.
IGNORE_PATTERNS = [
    "checkpoint-*", "checkpoint-*/*", "checkpoints-*", "checkpoints-*/*", "runs/*", "*/runs/*", "_*",
    "optimizer.*", "scheduler.*", "scaler.*", "rng_state*", "trainer_state.json", "training_args.bin",
    *(f"*{suffix}" for suffix in PICKLE_SUFFIXES),
]
HUB_ENDPOINT = "https://huggingface.co"

PAPER_TITLE = "Embracing Large Natural Data: Enhancing Medical Image Analysis via Cross-domain Fine-tuning"
PAPER_CITATION = """@article{li2024cdtm,
  author  = {Li, Qiankun and Huang, Xiaolong and Fang, Bo and Chen, Huabao and Ding, Siyuan and Liu, Xu},
  title   = {Embracing Large Natural Data: Enhancing Medical Image Analysis via Cross-domain Fine-tuning},
  journal = {IEEE Journal of Biomedical and Health Informatics},
  year    = {2024},
  doi     = {10.1109/JBHI.2023.3343518}
}"""


class CheckpointError(ValueError):
    """The checkpoint folder is incomplete or holds a pickle."""


class InvalidRepoIdError(ValueError):
    """The Hub repository id breaks one of the Hub's naming rules."""


class MissingTokenError(RuntimeError):
    """No Hugging Face token: nothing can be pushed."""


# ---------------------------------------------------------------------------------------------------------------
# Data sets and the published recipes, as data
@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    homepage: str
    modality: str  # what an input image is, e.g. "H&E histopathology tiles"
    tags: tuple[str, ...]  # modality tags for the card metadata
    has_patient_ids: bool
    paper_ratios: str = ""  # train:validation:test ratio of the random ("paper") split


DATASETS: dict[str, DatasetInfo] = {
    "breakhis": DatasetInfo(
        name="BreakHis",
        description="breast tumour histopathology (H&E), 7,909 images of 82 patients at 40X-400X",
        homepage="https://web.inf.ufpr.br/vri/databases/breast-cancer-histopathological-database-breakhis/",
        modality="BreakHis-like H&E histopathology images",
        tags=("histopathology",),
        has_patient_ids=True,
        paper_ratios="3:1:1",
    ),
    "hcrf": DatasetInfo(
        name="HCRF",
        description="gastric histopathology (H&E), normal vs abnormal (Sun et al., 2020)",
        homepage="https://doi.org/10.1016/j.bbe.2020.09.008",
        modality="HCRF-like H&E gastric histopathology images",
        tags=("histopathology",),
        has_patient_ids=False,
        paper_ratios="1:1:2",
    ),
    "isic2019": DatasetInfo(
        name="ISIC 2019",
        description="dermoscopic images of skin lesions, 8 diagnostic classes",
        homepage="https://challenge.isic-archive.com/data/#2019",
        modality="dermoscopic skin-lesion images",
        tags=("dermatology", "dermoscopy"),
        has_patient_ids=True,
    ),
    "aptos2019": DatasetInfo(
        name="APTOS 2019",
        description="retinal fundus photographs graded for diabetic retinopathy (0-4)",
        homepage="https://www.kaggle.com/competitions/aptos2019-blindness-detection",
        modality="retinal fundus photographs",
        tags=("ophthalmology", "retinal-fundus"),
        has_patient_ids=False,
    ),
    "cbis_ddsm": DatasetInfo(
        name="CBIS-DDSM",
        description="curated DDSM mammography, masses and calcifications, benign vs malignant",
        homepage="https://www.cancerimagingarchive.net/collection/cbis-ddsm/",
        modality="mammography crops",
        tags=("mammography", "radiology"),
        has_patient_ids=True,
    ),
    "chexpert": DatasetInfo(
        name="CheXpert",
        description="chest radiographs (Stanford), multi-label over the 5 competition observations",
        homepage="https://stanfordmlgroup.github.io/competitions/chexpert/",
        modality="chest radiographs",
        tags=("radiology", "chest-x-ray"),
        has_patient_ids=True,
    ),
}


FINETUNE_MODES: dict[str, str] = {
    "sft": (
        "Staged fine-tuning (SFT): stage 1 freezes the backbone and trains the CDTM and the head; stage 2 "
        "unfreezes everything and fine-tunes the whole model at a lower learning rate."
    ),
    "lp": "Linear probing (LP): the backbone is frozen; only the CDTM and the head are trained.",
    "fft": "Full fine-tuning (FFT): all parameters are trained from the start.",
    "scratch": "Training from scratch: the backbone is randomly initialised and all parameters are trained.",
}


@dataclass(frozen=True)
class Recipe:
    """One published recipe: the run that produces a checkpoint, and what the paper reports for it."""

    name: str  # repository name, e.g. "vitb-laion2b-cdtm-breakhis"
    backbone: str  # a key of BACKBONE_PRESETS
    dataset: str  # a key of DATASETS
    dataset_config: str
    data_dir: str  # placeholder path shown in the command
    paper_table: str  # "Table IV" / "Table V": the display name
    paper_model: str  # the row name in the paper's table
    split_strategy: str = "paper"
    finetune_mode: str = "sft"
    namespace: str = "org"

    @property
    def paper_metrics(self) -> dict[str, float]:
        """The paper's Pre/Rec/Acc/F1 (%) for this recipe, from cdtm_hf/paper_results.json."""
        table = {"Table IV": "table4", "Table V": "table5"}[self.paper_table]
        row = paper_row(table, self.backbone, "sft_cdtm" if self.finetune_mode == "sft" else self.finetune_mode)
        if row is None:
            raise KeyError(f"paper_results.json has no {self.paper_table} row for {self.backbone} {self.finetune_mode}")
        return {k: row[k] for k in ("precision", "recall", "accuracy", "f1")}


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        name="vitb-laion2b-cdtm-breakhis", backbone="vitb16.laion2b", dataset="breakhis",
        dataset_config="malignant_200x", data_dir="/path/to/BreaKHis_v1.tar.gz",
        paper_table="Table IV", paper_model="ViT-B-CDTM-SFT",
    ),
    Recipe(
        name="convnextb-laion2b-cdtm-breakhis", backbone="convnextb.laion2b", dataset="breakhis",
        dataset_config="malignant_200x", data_dir="/path/to/BreaKHis_v1.tar.gz",
        paper_table="Table IV", paper_model="ConvNeXt-B-CDTM-SFT",
    ),
    Recipe(
        name="convnextb-laion2b-cdtm-hcrf", backbone="convnextb.laion2b", dataset="hcrf",
        dataset_config="balanced", data_dir="/path/to/HCRF",
        paper_table="Table V", paper_model="ConvNeXt-B-CDTM-SFT",
    ),
    Recipe(
        name="vitb-laion2b-cdtm-hcrf", backbone="vitb16.laion2b", dataset="hcrf",
        dataset_config="balanced", data_dir="/path/to/HCRF",
        paper_table="Table V", paper_model="ViT-B-CDTM-SFT",
    ),
)

METRIC_NAMES = {  # key in test_results.json "metrics" -> (Hub metric type, display name)
    "accuracy": ("accuracy", "Accuracy"),
    "precision": ("precision", "Precision (macro)"),
    "recall": ("recall", "Recall (macro)"),
    "f1": ("f1", "F1 (macro)"),
    "auroc": ("roc_auc", "AUROC (macro)"),
}


# ---------------------------------------------------------------------------------------------------------------
# Small helpers
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err


def _preset_of(config: Mapping[str, Any]) -> tuple[str | None, BackbonePreset | None]:
    name = config.get("backbone_preset")
    if name in BACKBONE_PRESETS:
        return name, BACKBONE_PRESETS[name]
    for key, preset in BACKBONE_PRESETS.items():
        if (preset.library, preset.model_name) == (config.get("backbone_library", "timm"), config.get("backbone")) and (
            preset.pretrained_tag is None or preset.pretrained_tag == config.get("backbone_pretrained_tag")
        ):
            return key, preset
    return None, None


def _base_model(library: str, model_name: str | None) -> str | None:
    """The Hub id of the backbone's pretrained weights where it is unambiguous: timm models with a pretrained tag."""
    if library == "timm" and model_name and "." in model_name:
        return f"timm/{model_name}"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pct(value: Any) -> str:
    return f"{100.0 * float(value):.2f}" if _is_number(value) else "-"


def _fmt(value: Any) -> str:
    """A hyperparameter for a markdown table: floats without binary noise (1e-06, not 1.0000000000000002e-06)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return _md_escape(value)


def _md_escape(value: Any) -> str:
    return str(value).replace("|", "\\|")


def _remote_code_modules(checkpoint_dir: Path, config: Mapping[str, Any]) -> list[str]:
    """Module files named by the auto_map of config.json and preprocessor_config.json."""
    modules: list[str] = []
    maps = [config.get("auto_map") or {}]
    if (checkpoint_dir / PREPROCESSOR_NAME).is_file():
        maps.append(_read_json(checkpoint_dir / PREPROCESSOR_NAME).get("auto_map") or {})
    for auto_map in maps:
        for ref in auto_map.values():
            for item in ref if isinstance(ref, (list, tuple)) else [ref]:
                if not item:
                    continue
                module = item.split("--")[-1].rsplit(".", 1)[0]  # "repo--module.Class" -> "module"
                name = module.replace(".", "/") + ".py"
                if name not in modules:
                    modules.append(name)
    return modules


_RELATIVE_IMPORT = re.compile(r"^\s*(?:from\s+\.(\w+)\s+import|import\s+\.(\w+))", re.MULTILINE)


def _with_relative_imports(checkpoint_dir: Path, modules: Sequence[str]) -> tuple[list[str], list[str]]:
    """Close `modules` over their relative imports; return (present files, missing files)."""
    present, missing, todo = [], [], list(modules)
    while todo:
        name = todo.pop(0)
        if name in present or name in missing:
            continue
        path = checkpoint_dir / name
        if not path.is_file():
            missing.append(name)
            continue
        present.append(name)
        for match in _RELATIVE_IMPORT.finditer(path.read_text(encoding="utf-8")):
            todo.append(f"{match.group(1) or match.group(2)}.py")
    return present, missing


def _weight_files(checkpoint_dir: Path) -> list[str]:
    if (checkpoint_dir / WEIGHTS_NAME).is_file():
        return [WEIGHTS_NAME]
    index = checkpoint_dir / WEIGHTS_INDEX_NAME
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        missing = [s for s in shards if not (checkpoint_dir / s).is_file()]
        if missing:
            raise CheckpointError(
                f"{checkpoint_dir} has {WEIGHTS_INDEX_NAME} but lacks the shard(s) {', '.join(missing)}"
            )
        return [WEIGHTS_INDEX_NAME, *shards]
    raise CheckpointError(
        f"{checkpoint_dir} has no {WEIGHTS_NAME}: save the model with model.save_pretrained(dir) "
        "(safetensors is the only weight format this package pushes or loads)"
    )


# ---------------------------------------------------------------------------------------------------------------
# Validation and the upload list
def validate_checkpoint(checkpoint_dir: str | Path) -> list[str]:
    """Check that ``checkpoint_dir`` is a complete, pickle-free CDTM checkpoint; return the files to push.

    Raises :class:`CheckpointError` naming the problem when the folder is missing, when ``config.json`` or
    ``model.safetensors`` is missing, when a pickle file (``.bin``, ``.pt``, ``.pth``, ``.pkl``, ...) is present at
    its top level (Trainer's own ``training_args.bin``/optimizer/scheduler/RNG state is tolerated and never
    uploaded), or when a remote-code file named by ``auto_map`` (or imported by one) is missing.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise CheckpointError(f"checkpoint folder {checkpoint_dir} does not exist")
    pickles = sorted(
        p.name for p in checkpoint_dir.iterdir()
        if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES and not TRAINER_STATE_FILES.match(p.name)
    )
    if pickles:
        raise CheckpointError(
            f"{checkpoint_dir} contains pickle file(s) {', '.join(pickles)}: refusing, no pickle is ever pushed or "
            f"loaded. Save the weights as {WEIGHTS_NAME} (model.save_pretrained) and delete the pickle(s)."
        )
    if not (checkpoint_dir / CONFIG_NAME).is_file():
        raise CheckpointError(f"{checkpoint_dir} has no {CONFIG_NAME}: save the model with model.save_pretrained(dir)")
    config = _read_json(checkpoint_dir / CONFIG_NAME)
    weights = _weight_files(checkpoint_dir)
    modules = _remote_code_modules(checkpoint_dir, config)
    if not modules:
        raise CheckpointError(
            f"{checkpoint_dir / CONFIG_NAME} has no auto_map: the checkpoint cannot load with trust_remote_code "
            "where cdtm_hf is not installed. Save it with cdtm_hf imported (it registers the auto classes)."
        )
    code, missing = _with_relative_imports(checkpoint_dir, modules)
    if missing:
        raise CheckpointError(
            f"{checkpoint_dir} lacks the remote-code file(s) {', '.join(missing)} named in auto_map (or imported "
            "by them): re-save with model.save_pretrained(dir) and CDTMImageProcessor.save_pretrained(dir)"
        )
    optional = [name for name in OPTIONAL_PUSH_FILES if (checkpoint_dir / name).is_file()]
    return sorted({CONFIG_NAME, *weights, *code, *optional})


def checkpoint_files(checkpoint_dir: str | Path) -> list[str]:
    """The exact files (relative paths) :func:`push_checkpoint` uploads from ``checkpoint_dir``."""
    return validate_checkpoint(checkpoint_dir)


def _check_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str) or not repo_id:
        raise InvalidRepoIdError(f"invalid Hub repo id {repo_id!r}: it must be a non-empty 'namespace/name' string")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise InvalidRepoIdError(f"invalid Hub repo id {repo_id!r}: {_broken_rule(repo_id)} ({err})") from err


def _broken_rule(repo_id: Any) -> str:
    if not isinstance(repo_id, str):
        return f"it must be a string, not {type(repo_id).__name__}"
    if repo_id.count("/") > 1:
        return "it has more than one '/': use 'name' or 'namespace/name'"
    if "--" in repo_id or ".." in repo_id:
        return "it contains '--' or '..', which the Hub forbids"
    if repo_id.endswith(".git"):
        return "it ends with '.git'"
    name = repo_id.split("/")[-1]
    if len(name) > 96:
        return f"the name is {len(name)} characters long; the maximum is 96"
    bad = sorted({c for c in repo_id if not (c.isalnum() or c in "-_./")})
    if bad:
        return f"it contains the character(s) {' '.join(repr(c) for c in bad)}; only letters, digits, '-', '_' and '.'"
    if any(part[:1] in "-." or part[-1:] in "-." for part in repo_id.split("/")):
        return "a part starts or ends with '-' or '.'"
    if any(not part for part in repo_id.split("/")):
        return "the namespace or the name is empty"
    return "it breaks the Hub's naming rules"


# ---------------------------------------------------------------------------------------------------------------
# Model card of a trained checkpoint
CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

{% if split_warning -%}
> [!WARNING]
> {{ split_warning }}

{% endif -%}
> [!CAUTION]
> Research use only. This model is **not** a medical device and must **not** be used for diagnosis or any clinical
> decision.

## Results on the held-out test split (this checkpoint)

{% if results_table -%}
{{ results_table }}

Macro averages over {{ num_labels }} classes, {{ num_test_examples }} test images, {{ split_description }}

{% if per_class_table -%}
### Per class

{{ per_class_table }}

{% endif -%}
{% if confusion_table -%}
### Confusion matrix

Rows are the true classes, columns the predicted ones.

{{ confusion_table }}

{% endif -%}
{% if confusion_image -%}
![Confusion matrix on the test split](confusion_matrix.png)

{% endif -%}
{% else -%}
No `test_results.json` was found next to this checkpoint: it has not been evaluated on a test split.

{% endif -%}
{% if paper_table -%}
## Reported in the paper (not this checkpoint)

{{ paper_note }}

{{ paper_table }}

{% endif -%}
## Model details

| | |
|---|---|
{{ details_table }}

The Cross-Domain Transfer Module (CDTM) maps the backbone's output tokens onto learned cluster centres with
Cluster-Centre Attention and feeds the result to the classification head (Li et al., 2024).

## Training

{{ finetune_description }}

{% if stages_table -%}
{{ stages_table }}

{% endif -%}
{% if hyperparameters_table -%}
| Hyperparameter | Value |
|---|---|
{{ hyperparameters_table }}

{% endif -%}
Data: {{ dataset_description }}

## Efficiency

{{ efficiency_table }}

## How to use

The architecture ships as code in this repository (`modeling_cdtm.py` and the files it imports), so loading needs
`trust_remote_code=True`; read those files first, and pin a `revision` (a commit hash) so the code cannot change
under you. Weights are safetensors only.

```python
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

model = AutoModelForImageClassification.from_pretrained("{{ repo }}", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("{{ repo }}", trust_remote_code=True)

classifier = pipeline("image-classification", model="{{ repo }}", trust_remote_code=True)
classifier("tile.png", top_k={{ top_k }})
```

With `pip install cdtm_hf`, `import cdtm_hf` registers the classes and `trust_remote_code` is not needed.
Offline: download once with `hf download {{ repo }}`, then load with `HF_HUB_OFFLINE=1`.

## Intended use and limitations

* Intended for research on transfer learning from natural-image pretraining to medical image classification.
* **Not for diagnosis.** It was not validated clinically, on other scanners, stains, magnifications or
  institutions, and its errors are not calibrated for clinical use.
* It only knows the classes {{ label_list }}; any input is forced into one of them, including images that are not
  {{ input_kind }}.
{% if split_strategy == "paper" -%}
* The test split shares patients with the training split (see the warning above), so the test metrics overstate
  performance on new patients.
{% endif -%}
* The license below covers this model's code and weights; the training data and the pretrained backbone have
  their own terms.

## Citation

```bibtex
{{ citation }}
```
"""


def _results_tables(results: Mapping[str, Any]) -> dict[str, str]:
    metrics = results.get("metrics") or {}
    keys = [k for k in METRIC_NAMES if k in metrics]
    out = {"results_table": "", "per_class_table": "", "confusion_table": ""}
    if keys:
        out["results_table"] = "\n".join([
            "| " + " | ".join(METRIC_NAMES[k][1] for k in keys) + " |",
            "|" + "---|" * len(keys),
            "| " + " | ".join(f"{_pct(metrics[k])} %" for k in keys) + " |",
        ])
    per_class = results.get("per_class") or {}
    if per_class:
        rows = ["| Class | Precision | Recall | F1 | Support |", "|---|---|---|---|---|"]
        for label, row in per_class.items():
            rows.append(
                f"| {_md_escape(label)} | {_pct(row.get('precision'))} | {_pct(row.get('recall'))} "
                f"| {_pct(row.get('f1'))} | {row.get('support', '-')} |"
            )
        out["per_class_table"] = "\n".join(rows)
    matrix = results.get("confusion_matrix")
    labels = list(results.get("labels") or [])
    if matrix and len(labels) == len(matrix):
        rows = [
            "| true \\ predicted | " + " | ".join(_md_escape(x) for x in labels) + " |",
            "|---" * (len(labels) + 1) + "|",
        ]
        for label, row in zip(labels, matrix):
            rows.append(f"| **{_md_escape(label)}** | " + " | ".join(str(v) for v in row) + " |")
        out["confusion_table"] = "\n".join(rows)
    return out


def _paper_table(paper_reference: Mapping[str, Any]) -> str:
    keys = [k for k in ("precision", "recall", "accuracy", "f1", "auroc") if k in paper_reference]
    model = paper_reference.get("model", "CDTM")
    table = "\n".join([
        "| Source | Model | " + " | ".join(METRIC_NAMES[k][1] for k in keys) + " |",
        "|---|---|" + "---|" * len(keys),
        f"| Li et al. 2024, {paper_reference.get('table', 'paper')} (the paper's numbers) | {model} | "
        + " | ".join(f"{float(paper_reference[k]):.2f} %" for k in keys) + " |",
    ])
    return table


def _split_text(split_strategy: str | None, dataset: str | None) -> tuple[str, str]:
    """(one-line description, warning or '')."""
    info = DATASETS.get(dataset or "")
    if info is None and split_strategy != "paper":
        return (f"split strategy `{split_strategy}`." if split_strategy else "split strategy not recorded."), ""
    if split_strategy == "paper":
        ratios = f" {info.paper_ratios}" if info and info.paper_ratios else ""
        tail = (
            " Use `--split_strategy patient` for a leakage-free estimate."
            if info is None or info.has_patient_ids
            else f" {info.name} publishes no patient ids, so no split of it can rule the leakage out."
        )
        warning = (
            f"**Patient leakage.** This model was trained and tested on the paper's random split: images were "
            f"assigned to train/validation/test{ratios} at random (stratified by class), not by patient, so images "
            f"of the same patient {'appear' if info is None or info.has_patient_ids else 'can appear'} in both the "
            "training and the test split. The test metrics are optimistic and do not measure performance on new "
            "patients." + tail
        )
        return "the paper's random stratified split (**patients leak across splits**, see the warning above).", warning
    if split_strategy == "patient":
        if not info.has_patient_ids:
            return (
                f"grouped split ({info.name} publishes no patient ids, so leakage between patients cannot be ruled "
                "out).",
                "",
            )
        return "patient-grouped split: no patient contributes images to more than one split.", ""
    if split_strategy == "official":
        return "the data set's official train/test split, validation carved from train by patient.", ""
    return f"split strategy {split_strategy!r}." if split_strategy else "split strategy not recorded.", ""


def _efficiency_table(checkpoint_dir: Path, results: Mapping[str, Any], backbone: str) -> str:
    eff = dict(results.get("efficiency") or {})
    if "params_m" not in eff:
        weights = checkpoint_dir / WEIGHTS_NAME
        if weights.is_file():
            from safetensors import safe_open

            total = 0
            with safe_open(str(weights), framework="pt") as f:
                for key in f.keys():
                    n = 1
                    for dim in f.get_slice(key).get_shape():
                        n *= dim
                    total += n
            eff["params_m"] = total / 1e6
    rows = ["| Params (M) | Added by CDTM | GMACs (1 image) | Trainable in stage 1 / LP |", "|---|---|---|---|"]
    params = f"{eff['params_m']:.2f}" if "params_m" in eff else "-"
    added = f"{int(eff['added_params']):,}" if "added_params" in eff else "-"
    gmacs = f"{eff['gmacs']:.2f}" if "gmacs" in eff else "not recorded"
    lp = f"{eff['lp_trainable_pct']:.1f} %" if "lp_trainable_pct" in eff else "-"
    rows.append(f"| {params} | {added} | {gmacs} | {lp} |")
    note = (
        "\n\nGMACs count multiply-accumulates (the paper's \"FLOPs\" convention)."
        if "gmacs" in eff
        else f"\n\nMeasure GMACs with `python -m cdtm_hf.efficiency --backbone {backbone}`."
    )
    return "\n".join(rows) + note


def _load_results(checkpoint_dir: Path, results: Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    if results is None:
        path = checkpoint_dir / RESULTS_NAME
        return _read_json(path) if path.is_file() else {}
    if isinstance(results, (str, Path)):
        return _read_json(Path(results))
    return dict(results)


def generate_model_card(
    checkpoint_dir: str | Path,
    results: Mapping[str, Any] | str | Path | None = None,
    *,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    paper_reference: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Build the model card of a trained checkpoint.

    Args:
        checkpoint_dir: folder with ``config.json`` (and usually ``test_results.json``, ``confusion_matrix.png``).
        results: the ``test_results.json`` content (a dict or a path); read from ``checkpoint_dir`` when omitted.
        repo_id: the Hub repository the card is for (used in the loading example and the model-index name).
        license: the card's license identifier.
        paper_reference: numbers the paper reports for the same setting, in percent, e.g.
            ``{"precision": 92.74, "recall": 91.08, "accuracy": 94.24, "f1": 91.91, "table": "Table IV",
            "model": "ViT-B-CDTM-SFT"}`` (see :func:`paper_reference_for`). Shown in a separate table labelled as
            the paper's, never in the model-index.

    The model-index holds this checkpoint's test-set macro metrics as **fractions**, exactly as in
    ``test_results.json``; the body shows them as percentages.
    """
    checkpoint_dir = Path(checkpoint_dir)
    config_path = checkpoint_dir / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(f"{checkpoint_dir} has no {CONFIG_NAME}: cannot describe the model")
    config = _read_json(config_path)
    results = _load_results(checkpoint_dir, results)

    library = config.get("backbone_library", "timm")
    backbone = config.get("backbone") or results.get("backbone") or "unknown"
    preset_name, preset = _preset_of(config)
    if preset is None and results.get("backbone_preset") in BACKBONE_PRESETS:
        candidate = BACKBONE_PRESETS[results["backbone_preset"]]
        if candidate.model_name == backbone:  # config.json is the authority on what the checkpoint holds
            preset_name, preset = results["backbone_preset"], candidate
    finetune_mode = results.get("finetune_mode")
    from_pretrained = bool(config.get("backbone_pretrained", True) or config.get("backbone_pretrained_file")) and (
        finetune_mode != "scratch"
    )
    family = preset.family if preset else backbone
    if not from_pretrained:
        pretraining = "none, the backbone was not initialised from pretrained weights"
    elif preset:
        pretraining = preset.pretraining
    else:
        pretraining = "not recorded, the backbone is not one of the cdtm_hf presets"
    dataset = results.get("dataset")
    info = DATASETS.get(dataset or "")
    dataset_config = results.get("dataset_config")
    split_strategy = results.get("split_strategy")
    use_cdtm = results.get("use_cdtm", config.get("use_cdtm", True))
    id2label = config.get("id2label") or {}
    labels = list(results.get("labels") or [id2label[k] for k in sorted(id2label, key=lambda k: int(k))])
    repo = repo_id or str(checkpoint_dir)
    model_name = (repo_id or checkpoint_dir.resolve().name).split("/")[-1]

    # ---- metadata
    tags = ["cdtm", "image-classification", *(info.tags if info else ()), "medical-imaging", library]
    if library == "open_clip" or "clip" in backbone.lower():
        tags.append("clip")
    metrics = results.get("metrics") or {}
    eval_results = None
    if dataset and metrics:
        dataset_name = (info.name if info else dataset) + (f" ({dataset_config})" if dataset_config else "")
        eval_results = [
            EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=dataset,
                dataset_name=dataset_name,
                dataset_config=dataset_config,
                dataset_split="test",
                dataset_args={"split_strategy": split_strategy, "seed": results.get("seed")},
                metric_type=METRIC_NAMES[key][0],
                metric_name=METRIC_NAMES[key][1],
                metric_config=None if key == "accuracy" else "macro",
                metric_value=metrics[key],
            )
            for key in METRIC_NAMES
            if _is_number(metrics.get(key))
        ] or None
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        license=license,
        tags=tags,
        datasets=[dataset] if dataset else None,
        base_model=_base_model(library, backbone) if from_pretrained else None,
        metrics=[r.metric_type for r in eval_results or []] or None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results,
    )

    # ---- body
    split_description, split_warning = _split_text(split_strategy, dataset)
    cdtm_text = (
        f"a Cross-Domain Transfer Module (n = {config.get('num_centers')} cluster centres)"
        if use_cdtm else "no CDTM (the plain backbone + head baseline)"
    )
    on_data = ""
    if dataset:
        on_data = f"on {info.name if info else dataset}" + (f" `{dataset_config}`" if dataset_config else "")
    backbone_text = (
        f"A {family} backbone ({library} `{backbone}`, pretrained on {pretraining})"
        if preset and from_pretrained
        else f"A {library} `{backbone}` backbone (pretraining: {pretraining})"
    )
    summary = (
        f"{backbone_text} with {cdtm_text} and a "
        f"{config.get('head_type', 'linear')} classification head, fine-tuned "
        + (f"with {finetune_mode.upper()} " if finetune_mode else "")
        + on_data
        + f" to classify {len(labels)} classes: {', '.join(f'`{x}`' for x in labels)}."
    )
    tables = _results_tables(results)
    paper_table = paper_note = ""
    if paper_reference:
        paper_table = _paper_table(paper_reference)
        paper_note = (
            "These are **the paper's numbers** (Li et al., 2024), copied from the publication for comparison. They "
            "were not produced by this checkpoint or by this code."
        )
        if split_strategy and split_strategy != "paper":
            paper_note += (
                f" The paper used its random split; this checkpoint was tested on a `{split_strategy}` split, so the "
                "two are not directly comparable."
            )
    variant_name = next(
        (name for name, switches in CDTM_VARIANTS.items() if all(config.get(k) == v for k, v in switches.items())),
        "custom",
    )
    details = [
        ("Backbone", f"{family}: {library} `{backbone}`" + (f" (preset `{preset_name}`)" if preset_name else "")),
        ("Backbone pretraining data", pretraining),
        ("CDTM", f"yes: {config.get('num_centers')} centres, {config.get('num_cdtm_blocks', 1)} block(s), "
                 f"`{variant_name}` variant" if use_cdtm else "no (baseline)"),
        ("Head", config.get("head_type", "linear")),
        ("Input", f"{config.get('image_size')} x {config.get('image_size')} RGB"),
        ("Tokens p x width d", f"{config.get('num_tokens')} x {config.get('hidden_size')}"),
        ("Labels", ", ".join(f"`{x}`" for x in labels)),
        ("Problem type", config.get("problem_type") or "single_label_classification"),
    ]
    training = dict(results.get("training") or {})
    stages_table = ""
    if finetune_mode == "sft" and training:
        stages_table = "\n".join([
            "| Stage | Trains | Epochs | Learning rate |",
            "|---|---|---|---|",
            f"| 1 | CDTM + head (backbone frozen) | {_fmt(training.get('stage1_epochs', '-'))} "
            f"| {_fmt(training.get('learning_rate', '-'))} |",
            f"| 2 | everything | {_fmt(training.get('stage2_epochs', '-'))} "
            f"| {_fmt(training.get('stage2_learning_rate', '-'))} |",
        ])
    hyper = "\n".join(f"| `{_md_escape(k)}` | {_fmt(v)} |" for k, v in training.items() if v is not None)
    hyper += (("\n" if hyper else "") + f"| `seed` | {results['seed']} |") if "seed" in results else ""
    finetune_description = FINETUNE_MODES.get(finetune_mode or "", f"Fine-tuning mode: `{finetune_mode}`."
                                              if finetune_mode else "Fine-tuning mode not recorded.")
    dataset_description = (
        (f"[{info.name}]({info.homepage}), {info.description}" if info else f"`{dataset}`")
        + (f", configuration `{dataset_config}`" if dataset_config else "")
        + f"; {split_description}"
        if dataset else "not recorded."
    )
    card = ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        title=model_name,
        summary=summary,
        split_warning=split_warning,
        split_strategy=split_strategy,
        split_description=split_description,
        num_labels=len(labels),
        num_test_examples=results.get("num_test_examples", "?"),
        confusion_image=(checkpoint_dir / CONFUSION_MATRIX_NAME).is_file(),
        paper_table=paper_table,
        paper_note=paper_note,
        details_table="\n".join(f"| {k} | {_md_escape(v)} |" for k, v in details),
        finetune_description=finetune_description,
        stages_table=stages_table,
        hyperparameters_table=hyper,
        dataset_description=dataset_description,
        efficiency_table=_efficiency_table(checkpoint_dir, results, preset_name or backbone),
        repo=repo,
        top_k=min(3, max(1, len(labels))),
        label_list=", ".join(f"`{x}`" for x in labels) or "of its training set",
        input_kind=info.modality if info else "like its training images",
        citation=PAPER_CITATION,
        **tables,
    )
    return ModelCard(re.sub(r"\n{3,}", "\n\n", str(card)).rstrip("\n") + "\n")


def write_model_card(checkpoint_dir: str | Path, results: Mapping[str, Any] | str | Path | None = None, **kw) -> Path:
    """Generate the model card (see :func:`generate_model_card`) and write it as ``README.md`` into the folder."""
    path = Path(checkpoint_dir) / CARD_NAME
    generate_model_card(checkpoint_dir, results, **kw).save(path)
    return path


def paper_reference_for(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The paper's numbers for the setting of a run (a ``test_results.json`` dict), or None if it reports none.

    Matches the backbone preset, data set (and configuration) and the CDTM + SFT setting of :data:`RECIPES`.
    """
    if results.get("finetune_mode") != "sft" or results.get("use_cdtm") is False:
        return None
    for recipe in RECIPES:
        if (
            results.get("backbone_preset") == recipe.backbone
            and results.get("dataset") == recipe.dataset
            and results.get("dataset_config") in (None, recipe.dataset_config)
        ):
            return {**recipe.paper_metrics, "table": recipe.paper_table, "model": recipe.paper_model}
    return None


# ---------------------------------------------------------------------------------------------------------------
# Push
def _resolve_token(repo_id: str, token: str | None, tail: str) -> str:
    token = token or get_token()
    if not token:
        raise MissingTokenError(
            f"no Hugging Face token found, so {repo_id!r} cannot be pushed: log in with `hf auth login`, or set the "
            f"HF_TOKEN environment variable, or pass token=... (--token). {tail}"
        )
    return token


def check_push_ready(repo_id: str, token: str | None = None) -> str:
    """Fail fast, before a long training run, if ``repo_id`` is invalid or no token is available; return the token.

    Raises the same :class:`InvalidRepoIdError` / :class:`MissingTokenError` as :func:`push_checkpoint`. Makes no
    network call (whether the token may write to ``repo_id`` is only known at push time).
    """
    _check_repo_id(repo_id)
    return _resolve_token(repo_id, token, "Nothing was trained or uploaded yet.")


def push_checkpoint(
    checkpoint_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    create_card: bool = True,
) -> str:
    """Upload a checkpoint folder to the Hub; return the repository URL.

    Everything is checked before anything is written or sent: the repo id (:class:`InvalidRepoIdError` naming the
    rule it breaks), the folder (:func:`validate_checkpoint`) and the token (the ``token`` argument, else the one
    ``hf auth login`` stored or ``HF_TOKEN``; :class:`MissingTokenError` otherwise). Then ``README.md`` is generated
    if missing (``create_card``), the repo is created if needed, and exactly the files of
    :func:`checkpoint_files` are uploaded in one commit.
    """
    checkpoint_dir = Path(checkpoint_dir)
    _check_repo_id(repo_id)
    validate_checkpoint(checkpoint_dir)
    token = _resolve_token(repo_id, token, f"Nothing was uploaded and {checkpoint_dir} was left unchanged.")
    if create_card and not (checkpoint_dir / CARD_NAME).is_file():
        results = _load_results(checkpoint_dir, None)
        write_model_card(checkpoint_dir, results, repo_id=repo_id, paper_reference=paper_reference_for(results))
    files = checkpoint_files(checkpoint_dir)
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, exist_ok=True, private=private)
    target = getattr(repo_url, "repo_id", None) or repo_id
    api.upload_folder(
        folder_path=str(checkpoint_dir),
        repo_id=target,
        allow_patterns=list(files),
        ignore_patterns=list(IGNORE_PATTERNS),
        commit_message=commit_message or f"Upload CDTM checkpoint ({len(files)} files)",
    )
    url = getattr(repo_url, "url", None) or str(repo_url)
    return url if isinstance(url, str) and url.startswith("http") else f"{HUB_ENDPOINT}/{target}"


# ---------------------------------------------------------------------------------------------------------------
# Cards of the published recipes (model_cards/<name>/README.md)
RECIPE_TEMPLATE = """---
{{ card_data }}
---

# {{ name }}

CDTM + staged fine-tuning (SFT) on a {{ family }} backbone pretrained on {{ pretraining }} ({{ library }}
`{{ model_name }}`), for {{ dataset_name }} `{{ dataset_config }}`: {{ dataset_description }}.

> [!IMPORTANT]
> **We have not yet trained and published this checkpoint.** This card describes the recipe that will produce
> it. Every number on this page is THE PAPER'S, copied from Li et al. (2024) for reference; none is ours.

> [!WARNING]
> {{ split_warning }}

> [!CAUTION]
> Research use only. Not a medical device; not for diagnosis or any clinical decision.

## Reproduce

```bash
{{ command_wrapped }}
```

Replace `org` with your Hub namespace and `{{ data_dir }}` with your copy of the data. The hyperparameters are
the ones `examples/run_sft.py` uses for `--finetune_mode sft`; the run records them in `test_results.json` and in
the model card it generates. It writes the best model, `test_results.json`, `confusion_matrix.png` and the card to
`--output_dir` and pushes them with `cdtm_hf.hub.push_checkpoint` (see `docs/hub.md`).

## Reported in the paper (the paper's numbers, not ours)

These are the paper's numbers ({{ paper_table }} of Li et al., 2024, the {{ paper_model }} row, {{ dataset_name }}
with the paper's random {{ ratios }} split). We have not yet trained and published this checkpoint, so there are no
results of ours to show.

| Source | Model | Precision | Recall | Accuracy | F1 |
|---|---|---|---|---|---|
| Li et al. 2024, {{ paper_table }} (the paper's numbers) | {{ paper_model }} | {{ m.precision }} | {{ m.recall }} | {{ m.accuracy }} | {{ m.f1 }} |

{% if efficiency -%}
Model size and cost reported in the paper (Table VII, BreakHis, 224 px; the paper's numbers):
{{ efficiency.params_m }} M parameters, {{ efficiency.gflops }} G "FLOPs" (the paper counts multiply-accumulates),
{{ efficiency.lp_trainable_pct }} % of the parameters trained in the first stage. Measure ours with
`python -m cdtm_hf.efficiency --backbone {{ backbone }}`.

{% endif -%}
## How to use (once published)

```python
from transformers import AutoModelForImageClassification, pipeline

model = AutoModelForImageClassification.from_pretrained("{{ repo_id }}", trust_remote_code=True)
classifier = pipeline("image-classification", model="{{ repo_id }}", trust_remote_code=True)
```

`trust_remote_code=True` runs the model code stored in the repository: review it and pin a `revision`.

## Intended use and limitations

* Research on transfer learning from natural-image pretraining to histopathology; **not for diagnosis**.
* The paper's split is random at image level, so its test numbers overstate performance on new patients.
* Not validated on other scanners, stains, magnifications or institutions.

## Citation

```bibtex
{{ citation }}
```
"""


def recipe_command(recipe: Recipe) -> str:
    """The single-line command that trains, evaluates and pushes the checkpoint of ``recipe``."""
    return " ".join([
        "accelerate launch examples/run_sft.py",
        f"--backbone {recipe.backbone}",
        f"--dataset {recipe.dataset}",
        f"--dataset_config {recipe.dataset_config}",
        f"--data_dir {recipe.data_dir}",
        f"--split_strategy {recipe.split_strategy}",
        f"--finetune_mode {recipe.finetune_mode}",
        f"--output_dir outputs/{recipe.name}",
        "--push_to_hub",
        f"--hub_model_id {recipe.namespace}/{recipe.name}",
    ])


def render_recipe_card(recipe: Recipe, *, license: str = "apache-2.0") -> ModelCard:
    """The model card of a published recipe: the command that reproduces it and the paper's numbers, labelled."""
    preset = BACKBONE_PRESETS[recipe.backbone]
    info = DATASETS[recipe.dataset]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        license=license,
        tags=["cdtm", "image-classification", *info.tags, "medical-imaging", preset.library],
        datasets=[recipe.dataset],
        base_model=_base_model(preset.library, preset.model_name),
    )
    _, split_warning = _split_text(recipe.split_strategy, recipe.dataset)
    split_warning = split_warning.replace("This model was trained and tested on", "The recipe uses")
    command = recipe_command(recipe)
    paper_eff = paper_row("table7", recipe.backbone, "sft_cdtm")
    card = ModelCard.from_template(
        card_data,
        template_str=RECIPE_TEMPLATE,
        name=recipe.name,
        family=preset.family,
        pretraining=preset.pretraining,
        model_name=preset.model_name,
        library=preset.library,
        backbone=recipe.backbone,
        dataset_name=info.name,
        dataset_config=recipe.dataset_config,
        dataset_description=info.description,
        ratios=info.paper_ratios,
        data_dir=recipe.data_dir,
        split_warning=split_warning,
        command_wrapped=command.replace(" --", " \\\n  --"),
        paper_table=recipe.paper_table,
        paper_model=recipe.paper_model,
        m={k: f"{v:.2f}" for k, v in recipe.paper_metrics.items()},
        efficiency=paper_eff,
        repo_id=f"{recipe.namespace}/{recipe.name}",
        citation=PAPER_CITATION,
    )
    return ModelCard(re.sub(r"\n{3,}", "\n\n", str(card)).rstrip("\n") + "\n")


def write_recipe_cards(out_dir: str | Path = "model_cards") -> list[Path]:
    """Write ``<out_dir>/<recipe.name>/README.md`` for every recipe in :data:`RECIPES`."""
    paths = []
    for recipe in RECIPES:
        path = Path(out_dir) / recipe.name / CARD_NAME
        render_recipe_card(recipe).save(path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cdtm_hf.hub", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    push = sub.add_parser("push", help="validate a checkpoint folder and upload it to the Hub")
    push.add_argument("checkpoint_dir")
    push.add_argument("repo_id", help="namespace/name of the model repository")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--token", default=None, help="Hub token (default: `hf auth login`'s or HF_TOKEN)")
    push.add_argument("--commit_message", default=None)
    push.add_argument("--no_card", action="store_true", help="do not generate README.md when it is missing")
    card = sub.add_parser("card", help="write README.md (the model card) into a checkpoint folder")
    card.add_argument("checkpoint_dir")
    card.add_argument("--repo_id", default=None, help="the Hub repository the card is for")
    card.add_argument("--license", default="apache-2.0")
    card.add_argument("--no_paper_reference", action="store_true",
                      help="leave out the paper's numbers for the same setting")
    recipes = sub.add_parser("recipes", help="(re)write the cards of the published recipes")
    recipes.add_argument("--out", default="model_cards")
    args = parser.parse_args(argv)
    try:
        if args.command == "push":
            url = push_checkpoint(args.checkpoint_dir, args.repo_id, token=args.token, private=args.private,
                                  commit_message=args.commit_message, create_card=not args.no_card)
            print(f"pushed {args.checkpoint_dir} to {url}")
        elif args.command == "card":
            results = _load_results(Path(args.checkpoint_dir), None)
            reference = None if args.no_paper_reference else paper_reference_for(results)
            path = write_model_card(args.checkpoint_dir, results, repo_id=args.repo_id, license=args.license,
                                    paper_reference=reference)
            print(f"wrote {path}")
        else:
            for path in write_recipe_cards(args.out):
                print(f"wrote {path}")
    except (CheckpointError, InvalidRepoIdError, MissingTokenError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
