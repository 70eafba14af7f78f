"""The card's words on a run's statistics (issue 19): the bootstrap intervals, calibration, patient-level results and
plots, which checkpoint was kept and why, and the fine-tuning sentence from the stages that ran. The wording of the
card stays in `templates/model_card.md`; these build its context from the run report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .card_sections import _fmt, is_number

__all__ = ["PLOT_TITLES", "bracket", "extra_tests_table", "selection_context", "statistics_context"]
#: plot file -> what the card calls it
PLOT_TITLES = {"reliability_diagram.png": "Reliability diagram (test split)",
               "roc_pr_curves.png": "ROC and precision-recall curves per class (test split)",
               "training_curves.png": "Training curves (validation loss and metric; dashed line: stage boundary)"}


def bracket(record: Mapping[str, Any] | None) -> str:
    """`"[88.2, 94.6]"` of an interval record in percent, or "" without one."""
    if not record or not is_number(record.get("low")) or not is_number(record.get("high")):
        return ""
    return f"[{100 * record['low']:.1f}, {100 * record['high']:.1f}]"


def statistics_context(report: Mapping[str, Any], checkpoint_dir: Any = None) -> dict[str, Any]:
    """The card's words on the intervals, calibration, patient-level results and plots, from what the run wrote."""
    from pathlib import Path

    from ..evaluation.run_statistics import bootstrap_sentence, calibration_table, patient_table

    boot = report.get("bootstrap") or {}
    out: dict[str, Any] = {"bootstrap_text": "", "calibration_table": "", "temperature_text": "",
                           "patient_table": "", "plots": [], "extra_table": ""}
    if report.get("intervals"):
        out["bootstrap_text"] = (
            f"Brackets: {100 * boot.get('level', 0.95):.0f} % bootstrap intervals ({bootstrap_sentence(boot)}). They "
            "show how much each number could move on another test set of this size from the same source; they do "
            "not cover training randomness (seeds) or a shift to another site. The model-index holds the point "
            "values.")
    elif boot.get("resamples") == 0:
        out["bootstrap_text"] = "No confidence intervals: the run turned the bootstrap off (`--bootstrap_resamples 0`)."
    calibration = report.get("calibration") or {}
    if calibration:
        out["calibration_table"] = calibration_table(calibration)
    fit = report.get("temperature_scaling") or {}
    if calibration.get("temperature") is not None and (fit.get("identified", True)):
        out["temperature_text"] = (
            f"A temperature T = {calibration['temperature']:.3g} fitted on the validation split (`--calibrate`, "
            "minimising its NLL) is recorded in `config.json` as `calibration_temperature`; `pipeline()` and "
            "`cdtm-predict` divide the logits by it. It changes no prediction (accuracy and F1 are the same), only "
            "the probabilities.")
    elif fit.get("warning"):
        out["temperature_text"] = f"`--calibrate` fitted no temperature: {fit['warning']}."
    if report.get("patient_level"):
        out["patient_table"] = patient_table(report["patient_level"])
    out["extra_table"] = extra_tests_table(report)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    for name in (report.get("plots") or {}).values():
        if name in PLOT_TITLES and (folder is None or (folder / name).is_file()):
            out["plots"].append({"file": name, "title": PLOT_TITLES[name]})
    return out


def _mode_description(mode: str | None, stages: list[Mapping[str, Any]], use_cdtm: bool) -> str | None:
    """The fine-tuning sentence from what ran: the learning rates of the stages and whether a CDTM was trained."""
    trained = "the CDTM and the head" if use_cdtm else "the head"
    if mode == "sft" and len(stages) == 2:
        lr1, lr2 = stages[0].get("learning_rate"), stages[1].get("learning_rate")
        if is_number(lr1) and is_number(lr2):
            how = ("at a lower learning rate" if lr2 < lr1 else "at a higher learning rate" if lr2 > lr1
                   else "at the same learning rate")
            rates = f"({_fmt(lr2)} after {_fmt(lr1)})" if lr1 != lr2 else f"({_fmt(lr1)} in both stages)"
            return (f"Staged fine-tuning (SFT): stage 1 freezes the backbone and trains {trained}; stage 2 unfreezes "
                    f"everything and fine-tunes the whole model {how} {rates}.")
    if mode == "lp":
        return f"Linear probing (LP): the backbone is frozen; only {trained} {'are' if use_cdtm else 'is'} trained."
    return None


def _within_stage_tie(kept: Mapping[str, Any]) -> str:
    """Issue 19 item 9: the words on a tie within the kept stage (`tied_epochs` / `tied_losses` of its record)."""
    tied = list(zip(kept.get("tied_epochs") or [], kept.get("tied_losses") or []))
    if not tied:
        return ""
    epochs = f"epoch{'s' if len(tied) > 1 else ''} {', '.join(_fmt(e) for e, _ in tied)}"
    loss, others = kept.get("best_eval_loss"), [l for _, l in tied if is_number(l)]
    if is_number(loss) and others and loss < min(others):
        return f", tied with {epochs} and kept for its lower validation loss ({loss:.4f} against {min(others):.4f})"
    return f", tied with {epochs} (validation loss tied or not recorded: the earliest kept)"


def selection_context(report: Mapping[str, Any], stages: list[Mapping[str, Any]], selected: int | None,
                      metric: str) -> dict[str, Any]:
    """Which epoch and stage were kept and why, and warnings on a saturated or still-rising validation metric."""
    training = report.get("training") or {}
    use_cdtm = report.get("use_cdtm", True)
    out: dict[str, Any] = {"selection_text": "", "selection_warnings": []}
    description = _mode_description(report.get("finetune_mode") or training.get("finetune_mode"), stages,
                                    bool(use_cdtm))
    if description:
        out["finetune_description"] = description
    kept = next((s for s in stages if s.get("stage") == selected), None)
    if kept is not None and kept.get("best_epoch") is not None:
        where = f"stage {selected}'s " if len(stages) > 1 else ""
        text = (f"Kept: {where}checkpoint of epoch {_fmt(kept['best_epoch'])} (step {kept.get('best_step')}), "
                f"its best validation `{metric}`")
        text += _within_stage_tie(kept)  # issue 19 item 9
        reason = training.get("selection_reason")
        out["selection_text"] = text + (f"; across the stages, {reason}." if reason and len(stages) > 1 else ".")
    higher = metric.replace("eval_", "") not in ("loss",)
    for stage in stages:
        best = stage.get("best_metric")
        if higher and is_number(best) and best >= 0.9999:
            out["selection_warnings"].append(
                f"Stage {stage.get('stage')}'s validation `{metric}` reached its ceiling ({best:.4f}): the kept "
                "checkpoint was chosen among ties (by the lower validation loss), so the "
                "validation set cannot rank these checkpoints; a larger or harder validation set can.")
        if stage.get("still_improving"):
            out["selection_warnings"].append(
                f"Stage {stage.get('stage')}'s validation `{metric}` was still rising at its last evaluation: it had "
                "not converged; more epochs or another learning rate may change the result.")
    return out


def extra_tests_table(report: Mapping[str, Any]) -> str:
    """The shifted test sets (`--extra_test`): images, accuracy and macro-F1 with intervals, beside the own test."""
    from ..evaluation.reporting import markdown_table
    from ..evaluation.uncertainty import format_interval

    extras = report.get("extra_tests") or {}
    if not extras:
        return ""

    def cell(entry: Mapping[str, Any], key: str) -> str:
        record = (entry.get("intervals") or {}).get(key)
        value = (entry.get("metrics") or {}).get(key)
        return format_interval(record) if record else (f"{100 * value:.1f}" if is_number(value) else "–")

    rows = [["own test split", "", report.get("num_test_examples"), cell(report, "accuracy"), cell(report, "f1")]]
    rows += [[name, f"{e.get('kind')}: `{e.get('source')}`", e.get("num_images"), cell(e, "accuracy"), cell(e, "f1")]
             for name, e in extras.items()]
    return markdown_table(["Test set", "Source", "Images", "Accuracy (%)", "Macro-F1 (%)"], rows)
