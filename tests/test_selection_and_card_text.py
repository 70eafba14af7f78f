"""Issue 19, item 9: what a table or card must not hide. The kept checkpoint (epoch, stage, why; ties broken on
validation loss; a saturated or still-rising validation metric flagged), every card sentence from what ran (the
stage-2 learning rate, no CDTM claim without a CDTM, Hub id vs local folder) and the backbone weights' provenance."""

from __future__ import annotations

import hashlib
import logging
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from transformers import TrainerState

from cdtm_hf.hub.cards import generate_model_card
from cdtm_hf.training.selection import best_epoch_record, selection_reason
from cdtm_hf.training.trainer import CDTMTrainer
from cdtm_hf.training.weights import record_weights_provenance, weights_file_provenance
from tests.test_cards import REPORT, STAGES, report_with, save_config


def state_with(evals, best_step):
    state = TrainerState()
    state.log_history = [{"eval_f1": f1, "eval_loss": loss, "epoch": float(i + 1), "step": 10 * (i + 1)}
                         for i, (f1, loss) in enumerate(evals)]
    state.best_model_checkpoint = f"out/checkpoint-{best_step}"
    return state


def test_best_epoch_record_reads_the_kept_checkpoint_and_flags_a_rising_metric():
    record = best_epoch_record(state_with([(0.5, 1.0), (0.9, 0.6), (0.8, 0.7)], 20), "f1")
    assert record == {"best_epoch": 2.0, "best_step": 20, "best_eval_loss": 0.6, "eval_epochs": 3,
                      "still_improving": False}
    rising = best_epoch_record(state_with([(0.5, 1.0), (0.6, 0.9), (0.7, 0.8)], 30), "f1")
    assert rising["still_improving"] and rising["best_epoch"] == 3.0


def test_a_cross_stage_tie_is_broken_on_validation_loss():
    assert selection_reason(1.0, 1.0, 0.05, 0.20, "f1", True).endswith("stage 1")
    assert selection_reason(1.0, 1.0, 0.30, 0.20, "f1", True).endswith("stage 2")
    assert selection_reason(0.9, 1.0, 0.05, 0.20, "f1", True).startswith("stage 2 has the better validation f1")


def test_card_says_which_epoch_and_stage_were_kept_and_why_and_warns_at_the_ceiling(tmp_path):
    stages = [{**STAGES[0], "best_metric": 1.0, "best_epoch": 1.0, "best_step": 4, "best_eval_loss": 0.05},
              {**STAGES[1], "best_metric": 1.0, "best_epoch": 2.0, "best_step": 12, "best_eval_loss": 0.2}]
    reason = selection_reason(1.0, 1.0, 0.05, 0.2, "f1", True)
    training = {**REPORT["training"], "stages": stages, "selected_stage": 1, "selection_reason": reason}
    text = generate_model_card(save_config(tmp_path), report_with(training=training)).text
    assert "Kept: stage 1's checkpoint of epoch 1 (step 4), its best validation `f1`; across the stages, tie on" in text
    assert "broken by the lower validation loss (0.0500 in stage 1, 0.2000 in stage 2): stage 1." in text
    assert "Stage 1's validation `f1` reached its ceiling (1.0000)" in text
    assert "`selection_reason`" not in text  # in words, not as a hyperparameter row


def test_card_sentences_come_from_what_ran(tmp_path):
    save_config(tmp_path)
    lower = generate_model_card(tmp_path, REPORT).text
    assert "at a lower learning rate (1e-05 after 0.0001)" in lower
    same = [{**STAGES[0], "learning_rate": 1e-3}, {**STAGES[1], "learning_rate": 1e-3}]
    text = generate_model_card(tmp_path, report_with(training={**REPORT["training"], "stages": same})).text
    assert "at the same learning rate (0.001 in both stages)" in text and "lower learning rate" not in text
    plain = generate_model_card(tmp_path, report_with(use_cdtm=False)).text
    assert "stage 1 freezes the backbone and trains the head;" in plain and "trains the CDTM" not in plain


def test_how_to_use_gives_a_hub_id_only_when_one_is_known(tmp_path):
    folder = save_config(tmp_path / "my-run")
    local = generate_model_card(folder, REPORT).text
    assert 'from_pretrained("my-run", trust_remote_code=True)' in local and "hf download" not in local
    assert str(tmp_path) not in local  # no absolute machine path
    hub = generate_model_card(folder, REPORT, repo_id="org/name").text
    assert 'from_pretrained("org/name"' in hub and "hf download org/name" in hub


def test_weights_file_provenance_is_its_sha256_and_metadata(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.ones(3)}, str(path), metadata={"source": "timm/efficientnet_lite0 ImageNet-1k"})
    record = weights_file_provenance(path)
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["metadata"] == {"source": "timm/efficientnet_lite0 ImageNet-1k"}
    config = SimpleNamespace()
    record_weights_provenance(config, str(path), "ImageNet-1k")
    assert config.backbone_pretraining == "ImageNet-1k" and config.backbone_pretrained_file_provenance == record
    folder = save_config(tmp_path / "ck", backbone_pretrained_file=str(path), backbone_pretraining="ImageNet-1k",
                         backbone_pretrained_file_provenance=record)
    text = generate_model_card(folder, REPORT).text
    assert f"ImageNet-1k; weights from a local file (`weights.safetensors`, sha256 `{record['sha256']}`)" in text
    assert "not recorded" not in text.split("## Model details")[1].split("## Training")[0]


@pytest.mark.parametrize("use_cdtm, claim", [(True, "trained CDTM and the head"), (False, "trained the head")])
def test_the_stage_boundary_message_names_only_what_trained(caplog, use_cdtm, claim):
    model = SimpleNamespace(backbone=torch.nn.Sequential(torch.nn.BatchNorm2d(3)), backbone_norm_eval=True,
                            config=SimpleNamespace(use_cdtm=use_cdtm))
    plan = [SimpleNamespace(index=1, frozen_backbone=True), SimpleNamespace(index=2, frozen_backbone=False)]
    with caplog.at_level(logging.INFO, logger="cdtm_hf.training.trainer"):
        CDTMTrainer._log_boundary(SimpleNamespace(model=model), plan[1], plan, SimpleNamespace(backbone_norm_eval=None))
    assert claim in caplog.text and ("CDTM" in caplog.text) == use_cdtm
