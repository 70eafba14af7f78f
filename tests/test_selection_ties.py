"""Issue 19, item 9: on a saturated validation set the kept checkpoint is chosen on validation loss, within a stage
(transformers keeps the earliest of tied evaluations) and across SFT's stages (stage 2 used to win every tie), the
run says which epoch and stage it kept and why, and warns when the selection metric sits at its ceiling."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cdtm_hf.training.tie_break import cross_stage_choice
from tests.helpers import write_imagefolder
from tests.test_run_sft import TINY, Collect, run_sft

# separable classes (brightness 0-100 vs 120-220), a large constant lr: validation F1 reaches 1.0 early and stays
FAST = ["--warmup_epochs", "0", "--per_device_train_batch_size", "4", "--logging_steps", "1",
        "--lr_scheduler_type", "constant", "--learning_rate", "1e-2", "--seed", "0"]


def _evals(folder: Path) -> list[dict]:
    """The evaluations of a stage, from its last checkpoint's trainer_state.json (what the Trainer logged)."""
    last = max(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    history = json.loads((last / "trainer_state.json").read_text())["log_history"]
    return [e for e in history if "eval_f1" in e]


@pytest.fixture(scope="module")
def sft_ties(tmp_path_factory):
    """One tiny SFT run whose validation F1 saturates in both stages: (output dir, report, log messages)."""
    root = tmp_path_factory.mktemp("ties")
    data = write_imagefolder(root / "data")
    out = root / "out"
    handler = Collect()
    logging.getLogger("cdtm_hf").addHandler(handler)
    try:
        report = run_sft.main([*TINY, *FAST, "--stage1_epochs", "4", "--stage2_epochs", "2", "--stage2_learning_rate",
                               "3e-3", "--data_dir", str(data), "--output_dir", str(out)])
    finally:
        logging.getLogger("cdtm_hf").removeHandler(handler)
    return out, report, handler.messages


def test_a_tie_within_a_stage_goes_to_the_lower_validation_loss(sft_ties):
    out, report, messages = sft_ties
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
    assert record["selection"].startswith(f"stage 1, epoch {expected['epoch']:g}: val f1 1.000, tie with epoch(s) ")
    assert "broken on val loss" in record["selection"]


def test_the_card_and_log_say_what_was_kept_and_warn_at_the_ceiling(sft_ties):
    out, report, messages = sft_ties
    warnings = report["training"]["selection_warnings"]
    assert len(warnings) == 1 and "at its ceiling (1.0000)" in warnings[0]
    assert any("Selection: the validation f1 of the kept model is at its ceiling" in m for m in messages)
    card = (out / "README.md").read_text()
    assert report["training"]["selection_reason"] in card
    assert "at its ceiling (1.0000)" in card


@pytest.mark.parametrize("first, last, stage1, words", [
    ({"stage": 1, "best_metric": 1.0, "best_eval_loss": 0.12}, {"stage": 2, "best_metric": 1.0, "best_eval_loss": 0.15},
     True, "stage 1 kept: val f1 tied at 1.0000, broken on val loss 0.12 < 0.15"),
    ({"stage": 1, "best_metric": 1.0, "best_eval_loss": 0.2}, {"stage": 2, "best_metric": 1.0, "best_eval_loss": 0.15},
     False, "stage 2 kept: val f1 tied at 1.0000, broken on val loss 0.15 < 0.2"),
    ({"stage": 1, "best_metric": 0.9, "best_eval_loss": 0.1}, {"stage": 2, "best_metric": 1.0, "best_eval_loss": 0.15},
     False, "stage 2 kept: better val f1 (0.9000 in stage 1, 1.0000 in stage 2)"),
])
def test_cross_stage_choice(first, last, stage1, words):
    assert cross_stage_choice(first, last, "f1", True) == (stage1, words)


def test_sft_keeps_the_stage_with_the_lower_validation_loss_on_a_tie(sft_ties):
    out, report, _ = sft_ties
    first, last = report["training"]["stages"]
    assert first["best_metric"] == last["best_metric"] == 1.0, "both stages must saturate for a tie"
    expected = 1 if first["best_eval_loss"] < last["best_eval_loss"] else 2
    assert report["training"]["selected_stage"] == expected
    kept = first if expected == 1 else last
    assert report["training"]["selection_reason"] == (
        f"{kept['selection']}; stage {expected} kept: val f1 tied at 1.0000, broken on val loss "
        f"{min(first['best_eval_loss'], last['best_eval_loss']):.3g} < "
        f"{max(first['best_eval_loss'], last['best_eval_loss']):.3g}")


@pytest.mark.parametrize("use_cdtm, trained", [("False", "stage 1 trained the head on"),
                                               ("True", "stage 1 trained CDTM and the head on")])
def test_the_batchnorm_boundary_message_says_what_stage_1_trained(tmp_path, use_cdtm, trained):
    data = write_imagefolder(tmp_path / "data", per_class=(4, 2, 2))
    handler, package = Collect(), logging.getLogger("cdtm_hf")
    package.addHandler(handler)
    try:  # test_resnet has BatchNorm layers: stage 2 keeps their statistics fixed and says why
        run_sft.main(["--backbone", "test_resnet", "--backbone_library", "timm", "--no_backbone_pretrained",
                      "--image_size", "32", "--num_centers", "3", "--report_to", "none", "--disable_tqdm", "True",
                      *FAST, "--stage1_epochs", "1", "--stage2_epochs", "1", "--use_cdtm", use_cdtm,
                      "--feature_cache", "False", "--data_dir", str(data), "--output_dir", str(tmp_path / "out")])
    finally:
        package.removeHandler(handler)
        package.setLevel(logging.NOTSET)
    boundary = [m for m in handler.messages if "BatchNorm layers fixed" in m]
    assert len(boundary) == 1 and trained in boundary[0]
