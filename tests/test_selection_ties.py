"""Issue 19, item 9: on a saturated validation set the kept checkpoint is chosen on validation loss within a stage
(transformers alone keeps the earliest of tied evaluations; `TieBreakOnLossCallback` makes a later one with a lower
loss win), the stage record lists the tied epochs, and the card says which epoch was kept and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import write_imagefolder
from tests.test_run_sft import TINY, run_sft

# separable classes (brightness 0-100 vs 120-220), a large constant lr: validation F1 reaches 1.0 early and stays
FAST = ["--warmup_epochs", "0", "--per_device_train_batch_size", "4", "--logging_steps", "1",
        "--lr_scheduler_type", "constant", "--learning_rate", "1e-2", "--seed", "0", "--bootstrap_resamples", "0"]


def _evals(folder: Path) -> list[dict]:
    """The evaluations of a stage, from its last checkpoint's trainer_state.json (what the Trainer logged)."""
    last = max(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    history = json.loads((last / "trainer_state.json").read_text())["log_history"]
    return [e for e in history if "eval_f1" in e]


@pytest.fixture(scope="module")
def sft_ties(tmp_path_factory):
    """One tiny SFT run whose validation F1 saturates in both stages: (output dir, report)."""
    root = tmp_path_factory.mktemp("ties")
    data = write_imagefolder(root / "data")
    out = root / "out"
    report = run_sft.main([*TINY, *FAST, "--stage1_epochs", "4", "--stage2_epochs", "2", "--stage2_learning_rate",
                           "3e-3", "--data_dir", str(data), "--output_dir", str(out)])
    return out, report


def test_a_tie_within_a_stage_goes_to_the_lower_validation_loss(sft_ties):
    out, report = sft_ties
    evals = _evals(out / "stage1")
    top = max(e["eval_f1"] for e in evals)
    tied = [e for e in evals if e["eval_f1"] == top]
    assert top == 1.0 and len(tied) >= 2, "the fixture must saturate validation for the test to mean anything"
    expected = min(tied, key=lambda e: e["eval_loss"])
    assert expected is not tied[0]  # transformers alone would keep tied[0], the earliest
    record = report["training"]["stages"][0]
    assert record["best_step"] == expected["step"] and record["best_epoch"] == expected["epoch"]
    assert record["best_eval_loss"] == pytest.approx(expected["eval_loss"])
    assert record["best_checkpoint"] == f"stage1/checkpoint-{expected['step']}"
    others = [e for e in tied if e is not expected]
    assert record["tied_epochs"] == [e["epoch"] for e in others]
    assert record["tied_losses"] == pytest.approx([e["eval_loss"] for e in others])


def test_the_card_says_which_epoch_was_kept_for_its_lower_loss(sft_ties):
    out, report = sft_ties
    training = report["training"]
    kept = next(s for s in training["stages"] if s["stage"] == training["selected_stage"])
    card = (out / "README.md").read_text()
    epochs = ", ".join(f"{e:g}" for e in kept["tied_epochs"])
    assert kept["tied_epochs"], "both stages of the fixture saturate; the kept one has ties"
    assert (f"Kept: stage {kept['stage']}'s checkpoint of epoch {kept['best_epoch']:g} (step {kept['best_step']}), "
            f"its best validation `f1`, tied with epoch{'s' if len(kept['tied_epochs']) > 1 else ''} {epochs} and "
            f"kept for its lower validation loss ({kept['best_eval_loss']:.4f} against "
            f"{min(kept['tied_losses']):.4f}); across the stages, {training['selection_reason']}.") in card
    assert "validation `f1` reached its ceiling (1.0000): the kept checkpoint was chosen among ties (by the lower " \
           "validation loss)" in card


def test_sft_keeps_the_stage_with_the_lower_validation_loss_on_a_tie(sft_ties):
    out, report = sft_ties
    first, last = report["training"]["stages"]
    assert first["best_metric"] == last["best_metric"] == 1.0, "both stages must saturate for a tie"
    expected = 1 if first["best_eval_loss"] < last["best_eval_loss"] else 2
    assert report["training"]["selected_stage"] == expected
    assert report["training"]["selection_reason"].endswith(f"stage {expected}")
    assert "broken by the lower validation loss" in report["training"]["selection_reason"]
