"""The sections of a model card, built from the run's facts: the backbone, the split, results, training, efficiency.

Each function reads the run report (`test_results.json`) or `config.json` and returns text or tables for the
templates (`cdtm_hf/hub/templates/*.md`), which hold the wording. Every table goes through
`cdtm_hf.evaluation.reporting.markdown_table`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.configuration_cdtm import CDTM_VARIANTS
from ..core.presets import BACKBONE_PRESETS, BackbonePreset
from ..evaluation.metrics import METRIC_DISPLAY_NAMES
from ..evaluation.reporting import format_number, format_pct, markdown_table

__all__ = [
    "METRICS", "MODE_DESCRIPTIONS", "CardBackbone", "is_number", "backbone_hub_id", "builder_of", "dataset_link", "details_table",
    "efficiency_table", "framework_versions_list", "paper_table", "results_context", "split_facts", "counts_table",
    "training_context",
]

# key in the report's "metrics" -> (Hub metric type, Hub metric config); display names: metrics.METRIC_DISPLAY_NAMES
METRICS: dict[str, tuple[str, str | None]] = {
    "accuracy": ("accuracy", None),
    "precision": ("precision", "macro"),
    "recall": ("recall", "macro"),
    "f1": ("f1", "macro"),
    "f1_eq12": ("f1", "harmonic_mean_of_macro_precision_and_recall"),
    "auroc": ("roc_auc", "macro"),
}

# What each fine-tuning mode trains (the modes themselves are cdtm_hf.training.trainer.FINETUNE_MODES).
MODE_DESCRIPTIONS: dict[str, str] = {
    "sft": (
        "Staged fine-tuning (SFT): stage 1 freezes the backbone and trains the CDTM and the head; stage 2 "
        "unfreezes everything and fine-tunes the whole model at a lower learning rate."
    ),
    "lp": "Linear probing (LP): the backbone is frozen; only the CDTM and the head are trained.",
    "fft": "Full fine-tuning (FFT): all parameters are trained from the start.",
    "scratch": "Training from scratch: the backbone is randomly initialised and all parameters are trained.",
}

# ---------------------------------------------------------------------------------------------------------------
# Small helpers
def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any) -> str:
    """A value in a table: floats without binary noise (1e-06, not 1.0000000000000002e-06), lists joined."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return "–" if value is None else str(value)


def builder_of(dataset: str | None) -> type | None:
    """The dataset's builder class (the home of its facts), or None for an imagefolder or an unknown name."""
    if not dataset:
        return None
    from ..data import get_builder_class

    try:
        return get_builder_class(dataset)
    except ValueError:
        return None


def dataset_link(builder: type) -> str:
    """The data set's display name, linked to its homepage where the builder gives a URL."""
    home = builder.HOMEPAGE or ""
    if re.fullmatch(r"https?://\S+", home):
        return f"[{builder.DISPLAY_NAME}]({home})"
    return f"{builder.DISPLAY_NAME} ({home})" if home else builder.DISPLAY_NAME


def backbone_hub_id(library: str, model_name: str | None, pretrained_tag: str | None = None) -> str | None:
    """The Hub repository of a backbone's pretrained weights, from the library's own pretrained config.

    Args:
        library (`str`): `"timm"` or `"open_clip"`.
        model_name (`str`): the timm model name (with or without its `.tag`) or the open_clip architecture.
        pretrained_tag (`str`, *optional*): the open_clip pretrained tag.

    Returns:
        `str | None`: e.g. `"timm/vit_base_patch16_clip_224.laion2b"`; None where the library names no Hub repository.
    """
    if not model_name:
        return None
    if library == "open_clip":
        import open_clip

        hub_id = (open_clip.get_pretrained_cfg(model_name, pretrained_tag or "") or {}).get("hf_hub") or ""
        return hub_id.strip("/") or None
    if library == "timm":
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(model_name)
        return getattr(cfg, "hf_hub_id", None) or None
    return None


def _preset_of(config: Mapping[str, Any], report: Mapping[str, Any]) -> tuple[str | None, BackbonePreset | None]:
    """The preset a checkpoint was built from; config.json is the authority on what the checkpoint holds."""
    for name in (config.get("backbone_preset"), report.get("backbone_preset")):
        preset = BACKBONE_PRESETS.get(name or "")
        if preset and preset.model_name == config.get("backbone"):
            return name, preset
    for name, preset in BACKBONE_PRESETS.items():
        if (preset.library, preset.model_name) == (config.get("backbone_library", "timm"), config.get("backbone")) and (
            preset.pretrained_tag in (None, config.get("backbone_pretrained_tag"))
        ) and not preset.weights_repo:  # a foundation model shares its timm name: only its recorded preset names it
            return name, preset
    return None, None


# ---------------------------------------------------------------------------------------------------------------
# The split: what it really was (report["split"], the builder's facts)
def split_facts(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the run's split really was, for the templates (which hold the wording).

    `kind` is `"random"` (the paper's split, or a random one), `"patient"` (strategy and recorded grouping both
    "patient", and no group in several splits: the only kind described as keeping each patient in one split),
    `"image"` (one group per image, as a builder falls back to without patient ids), `"folders"`, `"official"`, or
    `"other"`. The run's free-text `split.description` is not repeated: the card words the split from these facts
    alone, so that it cannot claim more than they show.
    """
    split = dict(report.get("split") or {})
    manifest = split.get("manifest") or {}
    strategy = split.get("strategy") or report.get("split_strategy")
    grouping = split.get("grouping") or manifest.get("grouping")
    builder = builder_of(report.get("dataset"))
    if strategy == "paper" or grouping == "random":
        kind = "random"
    elif strategy == "patient" and grouping == "patient" and not manifest.get("groups_in_several_splits"):
        kind = "patient"
    elif grouping in ("image", "folders") or strategy == "official":
        kind = grouping if grouping in ("image", "folders") else "official"
    else:
        kind = "other"
    ratios = manifest.get("ratios") or (builder.DEFAULT_RATIOS if builder else None)
    return {
        "kind": kind, "strategy": strategy, "grouping": grouping,
        "ratios": ":".join(_fmt(float(r)) for r in ratios) if ratios else "",
        "has_patient_ids": builder is None or builder.HAS_PATIENT_IDS,
        "dataset_name": builder.DISPLAY_NAME if builder else (report.get("dataset") or "the data set"),
    }


def counts_table(manifest: Mapping[str, Any]) -> str:
    """Images per split and class, from the split manifest's `counts`."""
    counts = manifest.get("counts") or {}
    splits = [s for s in ("train", "validation", "test") if s in counts]
    if not splits:
        return ""
    classes = list(dict.fromkeys(c for s in splits for c in counts[s]))
    rows = [[c, *(counts[s].get(c, 0) for s in splits)] for c in classes]
    rows.append(["**total**", *(sum(counts[s].values()) for s in splits)])
    return markdown_table(["Class", *splits], rows)


# ---------------------------------------------------------------------------------------------------------------
# Results, the paper's numbers, training
def results_context(report: Mapping[str, Any]) -> dict[str, str]:
    """The tables of this checkpoint's test results: `results_table`, `per_class_table`, `confusion_table`."""
    metrics = report.get("metrics") or {}
    keys = [k for k in METRICS if k in metrics]
    out = {"results_table": "", "per_class_table": "", "confusion_table": ""}
    if keys:
        from .card_results import bracket as _bracket  # issue 19: the value with its bootstrap interval

        intervals = report.get("intervals") or {}
        out["results_table"] = markdown_table(
            [METRIC_DISPLAY_NAMES[k] for k in keys],
            [[f"{format_pct(metrics[k], suffix=' %')} {_bracket(intervals.get(k))}".strip() for k in keys]]
        )
    per_class = report.get("per_class") or {}
    if per_class:
        from .card_results import bracket as _bracket  # issue 19

        boot = report.get("per_class_intervals") or {}
        out["per_class_table"] = markdown_table(
            ["Class", "Precision", "Recall", "F1", "Support"],
            [[label, *(f"{format_pct(row.get(k))} {_bracket((boot.get(label) or {}).get(k))}".strip()
                       for k in ("precision", "recall", "f1")), row.get("support")]
             for label, row in per_class.items()],
        )
    matrix = report.get("confusion_matrix")
    labels = list(report.get("labels") or [])
    if matrix and len(labels) == len(matrix):
        out["confusion_table"] = markdown_table(
            ["true \\ predicted", *labels], [[f"**{label}**", *row] for label, row in zip(labels, matrix)]
        )
    return out


def paper_table(report: Mapping[str, Any], reference: Mapping[str, Any] | None, model: str) -> str:
    """This checkpoint's precision, recall, accuracy and F1 (Eq. 12) beside the paper's, both rows labelled."""
    if not reference:
        return ""
    ours = report.get("metrics") or {}
    columns = ("precision", "recall", "accuracy", "f1")  # the paper's "f1" is its Eq. 12
    rows = [[f"Li et al. 2024, {reference.get('table', 'paper')} (the paper's numbers)", reference.get("model", "CDTM"),
             *(format_number(reference.get(k), suffix=" %") for k in columns)]]
    if ours:
        rows.append(["This checkpoint (ours)", model,
                     *(format_pct(ours.get("f1_eq12" if k == "f1" else k), suffix=" %") for k in columns)])
    headers = ["Source", "Model", "Precision", "Recall", "Accuracy", "F1 (Eq. 12)"]
    return markdown_table(headers, rows)


def _stages_table(stages: list[Mapping[str, Any]], selected: int | None, metric: str) -> str:
    headers = ["Stage", "Backbone", "Epochs", "Learning rate", "Warmup steps", "Backbone LR x", "BatchNorm statistics",
               f"Best validation `{metric}`", "Kept"]
    rows = [
        [stage.get("stage"), stage.get("backbone"), _fmt(stage.get("epochs")), _fmt(stage.get("learning_rate")),
         stage.get("warmup_steps"), _fmt(stage.get("backbone_lr_multiplier")),
         "fixed (backbone frozen)" if stage.get("backbone") == "frozen"
         else "fixed (eval mode)" if stage.get("backbone_norm_eval") else "updated",
         format_number(stage.get("best_metric"), digits=4), "yes" if stage.get("stage") == selected else ""]
        for stage in stages
    ]
    if any(stage.get("ema") for stage in stages):  # issue 18: --model_ema, what each stage compared and kept
        headers.append("EMA weights (validation)")
        for row, stage in zip(rows, stages):
            ema = stage.get("ema") or {}
            row.append(f"{format_number(ema.get('metric'), digits=4)}, {'kept' if ema.get('kept') else 'not kept'}"
                       if ema else "")
    return markdown_table(headers, rows)


def framework_versions_list(versions: Mapping[str, str] | None) -> str:
    """The "Framework versions" list of HF's Trainer cards, from the versions the run recorded ('' if none)."""
    return "\n".join(f"- {name} {version}" for name, version in (versions or {}).items())


def training_context(report: Mapping[str, Any]) -> dict[str, str]:
    """The training section: mode, each stage's real hyperparameters, which stage was kept, shared settings."""
    training = dict(report.get("training") or {})
    mode = report.get("finetune_mode") or training.get("finetune_mode")
    stages = list(training.pop("stages", None) or [])
    selected = training.pop("selected_stage", None)
    metric = training.get("metric_for_best_model") or "f1"
    out: dict[str, Any] = {
        "finetune_description": MODE_DESCRIPTIONS.get(
            mode or "", f"Fine-tuning mode: `{mode}`." if mode else "Fine-tuning mode not recorded."),
        "stages_table": _stages_table(stages, selected, metric) if stages else "",
        "stages": stages, "selected": next((s for s in stages if s.get("stage") == selected), None), "metric": metric,
    }
    training.pop("finetune_mode", None)
    out["framework_versions"] = framework_versions_list(training.pop("framework_versions", None))
    from .card_results import selection_context  # issue 19

    out.update(selection_context(report, stages, selected, metric))
    training.pop("selection_reason", None)
    rows = [[f"`{k}`", _fmt(v)] for k, v in training.items() if v is not None]
    if "seed" in report:
        rows.append(["`seed`", report["seed"]])
    out["hyperparameters_table"] = markdown_table(["Hyperparameter", "Value"], rows) if rows else ""
    return out


def efficiency_table(report: Mapping[str, Any]) -> str:
    eff = report.get("efficiency") or {}
    row = [
        format_number(eff.get("params_m")),
        f"{int(eff['added_params']):,}" if is_number(eff.get("added_params")) else None,
        format_number(eff["gmacs"]) if is_number(eff.get("gmacs")) else "not recorded",
        format_number(eff.get("lp_trainable_pct"), digits=1, suffix=" %"),
    ]
    return markdown_table(["Params (M)", "Added by CDTM", "GMACs (1 image)", "Trainable in stage 1 / LP"], [row])


# ---------------------------------------------------------------------------------------------------------------
# The card of a trained checkpoint
@dataclass(frozen=True)
class CardBackbone:
    """What the card says about the backbone, read from config.json (and the presets); the template words it."""

    library: str
    name: str
    preset_name: str | None
    family: str
    pretraining: str
    from_pretrained: bool
    hub_id: str | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], report: Mapping[str, Any]) -> CardBackbone:
        library = config.get("backbone_library") or "timm"
        name = config.get("backbone") or report.get("backbone") or "unknown"
        preset_name, preset = _preset_of(config, report)
        pretrained_file = config.get("backbone_pretrained_file")
        from_pretrained = bool(config.get("backbone_pretrained") or pretrained_file) and (
            report.get("finetune_mode") != "scratch"
        )
        if not from_pretrained:
            pretraining = "none, the backbone was not initialised from pretrained weights"
        elif config.get("backbone_pretraining"):  # issue 19: named by the user (--backbone_pretraining)
            pretraining = str(config["backbone_pretraining"])
        elif preset and not pretrained_file:
            pretraining = preset.pretraining
        else:
            pretraining = "not recorded (pass --backbone_pretraining to name it)"
        provenance = config.get("backbone_pretrained_file_provenance") or {}
        if from_pretrained and pretrained_file:  # issue 19: the file's hash, not its path as typed
            digest = f", sha256 `{provenance['sha256']}`" if provenance.get("sha256") else ", no hash recorded"
            pretraining += f"; weights from a local file (`{Path(str(pretrained_file)).name}`{digest})"
        # weights from a local file are not the library's Hub weights: no base_model claim for them
        hub_id = None
        if from_pretrained and not pretrained_file:
            hub_id = (preset.weights_repo if preset and preset.weights_repo else
                      backbone_hub_id(library, name, config.get("backbone_pretrained_tag")))
        family = preset.family if preset else name
        return cls(library, name, preset_name, family, pretraining, from_pretrained, hub_id)

def details_table(config: Mapping[str, Any], backbone: CardBackbone, labels: list[str], use_cdtm: bool) -> str:
    variant = next(
        (name for name, switches in CDTM_VARIANTS.items() if all(config.get(k) == v for k, v in switches.items())),
        "custom",
    )
    cdtm = (f"yes: {config.get('num_centers')} centres, {config.get('num_cdtm_blocks', 1)} block(s), `{variant}` "
            "variant") if use_cdtm else "no (baseline)"
    preset = f" (preset `{backbone.preset_name}`)" if backbone.preset_name else ""
    rows = [
        ("Backbone", f"{backbone.family}: {backbone.library} `{backbone.name}`{preset}"),
        ("Backbone pretraining data", backbone.pretraining),
        ("CDTM", cdtm),
        ("Head", config.get("head_type", "linear")),
        ("Input", f"{config.get('image_size')} x {config.get('image_size')} RGB"),
        ("Tokens p x width d", f"{config.get('num_tokens')} x {config.get('hidden_size')}"),
        *([("CDTM token grid", f"{config['cdtm_token_grid']} x {config['cdtm_token_grid']} (the backbone's token grid "
            "average-pooled before CDTM)")] if config.get("cdtm_token_grid") else []),
        ("Labels", ", ".join(f"`{x}`" for x in labels)),
        ("Problem type", config.get("problem_type") or "single_label_classification"),
    ]
    return markdown_table(["", ""], rows)

