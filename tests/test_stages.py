"""SFT stages: per-stage records, arguments left intact, one TensorBoard stream, the BatchNorm boundary, selection."""

import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from cdtm_hf import CDTMConfig, CDTMForImageClassification
from cdtm_hf.training.arguments import CDTMTrainingArguments
from cdtm_hf.training.output_dir import prune_optimizer_states
from cdtm_hf.training.stages import stage_plan
from cdtm_hf.training.trainer import STAGE_RECORD_KEYS
from tests.test_trainer import SIZE, make_model, make_trainer, snapshot

REPO = Path(__file__).resolve().parents[1]


class LogCollector(TrainerCallback):
    """Every log line of every stage (the trainer's own `state.log_history` holds the last stage only)."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """One SFT run (2 + 2 epochs, 1 warmup epoch, constant after warmup, TensorBoard on), shared by the tests."""
    out = tmp_path_factory.mktemp("sft")
    trainer = make_trainer(
        make_model(), out, stage1_epochs=2, stage2_epochs=2, warmup_epochs=1, lr_scheduler_type="constant_with_warmup",
        learning_rate=1e-2, report_to="tensorboard", save_total_limit=1,
    )
    user_args = trainer.args
    collector = LogCollector()
    trainer.add_callback(collector)
    trainer.train()
    return trainer, user_args, collector.logs, out


def stage_logs(logs, stage, key):
    return [entry[key] for entry in logs if entry.get("stage") == stage and key in entry]


def test_records_hold_what_each_stage_ran(sft_run):
    trainer, _, logs, out = sft_run
    records = trainer.stage_records
    assert [r["stage"] for r in records] == [1, 2]
    assert all(tuple(r) == STAGE_RECORD_KEYS for r in records)
    assert [r["backbone"] for r in records] == ["frozen", "trained"]
    assert [r["epochs"] for r in records] == [2.0, 2.0]
    for record in records:
        lrs = stage_logs(logs, record["stage"], "learning_rate")
        assert lrs, f"no learning rate logged in stage {record['stage']}"
        # the recorded peak is the logged one; the warm-up steps are the steps logged below it (HF logs the
        # learning rate each step used: 0, 1/3, 2/3 of the peak for 3 warm-up steps)
        assert record["learning_rate"] == pytest.approx(max(lrs), rel=1e-9)
        assert record["warmup_steps"] == 3 == sum(lr < max(lrs) for lr in lrs)
        assert record["best_metric"] == pytest.approx(max(stage_logs(logs, record["stage"], "eval_f1")))
        assert (out / record["best_checkpoint"]).is_dir() and not os.path.isabs(record["best_checkpoint"])
    assert records[0]["learning_rate"] == 1e-2 and records[1]["learning_rate"] == pytest.approx(1e-3)
    assert [r["backbone_norm_eval"] for r in records] == [False, False]  # test_vit has no BatchNorm
    m1, m2 = records[0]["best_metric"], records[1]["best_metric"]
    tie_to_stage1 = m1 == m2 and records[0]["best_eval_loss"] < records[1]["best_eval_loss"]  # issue 19 tie-break
    expected = 1 if m1 > m2 or tie_to_stage1 else 2
    assert trainer.selected_stage == expected
    for record in records:  # issue 19: the kept checkpoint's epoch and validation loss are the logged ones
        tied = [e for e in logs if e.get("stage") == record["stage"] and e.get("eval_f1") == record["best_metric"]]
        best = min(tied, key=lambda e: e["eval_loss"])  # issue 19 item 9: of tied epochs, the lowest loss (then first)
        assert record["best_epoch"] == best["epoch"] and record["best_eval_loss"] == best["eval_loss"]


def test_train_leaves_the_users_arguments_as_they_were(sft_run):
    trainer, user_args, _, out = sft_run
    assert trainer.args is user_args
    assert (trainer.args.learning_rate, trainer.args.num_train_epochs) == (1e-2, 75)
    assert trainer.args.warmup_steps == 0 and trainer.args.output_dir == str(out)
    assert [s.learning_rate for s in stage_plan(trainer.args)] == [1e-2, pytest.approx(1e-3)]


def test_tensorboard_is_one_stream_whose_steps_continue_across_stages(sft_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    *_, out = sft_run
    files = list((out / "runs").rglob("events.out.tfevents.*"))
    assert len(files) == 1, files
    events = EventAccumulator(str(files[0])).Reload()
    stage = [(e.step, e.value) for e in events.Scalars("train/stage")]
    last_of_1 = max(step for step, value in stage if value == 1)
    first_of_2 = min(step for step, value in stage if value == 2)
    assert first_of_2 > last_of_1 == 6
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted(steps) and len(set(steps)) == len(steps) == 12


def test_prune_optimizer_states_keeps_the_weights(sft_run, tmp_path):
    *_, out = sft_run
    copy = shutil.copytree(out, tmp_path / "run")
    assert list(copy.rglob("optimizer.pt"))
    freed = prune_optimizer_states(copy)
    assert freed > 0 and not list(copy.rglob("optimizer.pt")) and not list(copy.rglob("scheduler.pt"))
    checkpoints = list(copy.glob("stage*/checkpoint-*"))
    assert checkpoints and all((c / "model.safetensors").is_file() for c in checkpoints)


# ---------------------------------------------------------------------------------------------------------------
def batchnorm_model(**backbone_kwargs):
    torch.manual_seed(0)
    return CDTMForImageClassification(CDTMConfig(
        backbone="test_efficientnet", image_size=SIZE, num_labels=2, num_centers=3, backbone_kwargs=backbone_kwargs,
    ))


def running_means(model):
    return [m.running_mean.clone() for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_auto_keeps_batchnorm_statistics_fixed_in_sft_stage2(tmp_path, caplog):
    model = batchnorm_model()
    stats, weights = running_means(model), snapshot(model.backbone)
    assert stats
    trainer = make_trainer(model, tmp_path)  # backbone_norm_eval defaults to "auto"
    with caplog.at_level(logging.INFO, logger="cdtm_hf.training.trainer"):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(stats, running_means(model))), "stage 2 moved BatchNorm statistics"
    assert any(torch.equal(a, b) is False for a, b in zip(weights.values(), snapshot(model.backbone).values()))
    assert [r["backbone_norm_eval"] for r in trainer.stage_records] == [False, True]
    assert any("keeping the running statistics" in r.message and "BatchNorm" in r.message for r in caplog.records)


@pytest.mark.parametrize("setting, mode, bn_fixed", [
    ("auto", "sft", [True, True]), (False, "sft", [True, False]), ("auto", "fft", [False]), (True, "fft", [True]),
])
def test_boundary_switches_under_each_setting(tmp_path, setting, mode, bn_fixed):
    """BatchNorm statistics per stage; dropout/drop-path are active exactly while the backbone trains (documented)."""
    model = batchnorm_model(drop_path_rate=0.1, drop_rate=0.1)
    bn = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    drop = [m for m in model.backbone.modules() if getattr(m, "drop_prob", 0) > 0]
    assert bn and drop
    trainer = make_trainer(model, tmp_path, finetune_mode=mode, num_train_epochs=1, backbone_norm_eval=setting,
                           feature_cache=False)
    plan = stage_plan(trainer.args)
    fixed = []
    for stage in plan:
        trainer._stage_trainer(stage, plan)  # sets the backbone up for the stage, as train() does
        model.train()
        fixed.append(not any(m.training for m in bn))
        assert all(m.training is not stage.frozen_backbone for m in drop)
    assert fixed == bn_fixed


@pytest.mark.parametrize("value, parsed", [("auto", "auto"), ("True", True), ("false", False), (True, True)])
def test_backbone_norm_eval_values(tmp_path, value, parsed):
    assert CDTMTrainingArguments(output_dir=str(tmp_path), backbone_norm_eval=value).backbone_norm_eval == parsed


def test_backbone_norm_eval_refuses_other_values(tmp_path):
    with pytest.raises(ValueError, match="'sometimes' is not one of: auto, True, False"):
        CDTMTrainingArguments(output_dir=str(tmp_path), backbone_norm_eval="sometimes")


# ---------------------------------------------------------------------------------------------------------------
def separable(n, seed):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    pixels = rng.normal(size=(n, 3, SIZE, SIZE)).astype("float32") * 0.1 + labels[:, None, None, None] * 2.0
    return Dataset.from_dict({"pixel_values": pixels, "labels": labels}).with_format("torch")


def test_stage1_best_is_kept_when_stage2_gets_worse(tmp_path):
    model = make_model()
    trainer = make_trainer(model, tmp_path, stage1_epochs=2, stage2_epochs=1, stage2_learning_rate=50.0)
    trainer.train_dataset, trainer.eval_dataset = separable(12, 0), separable(8, 1)
    trainer.train()
    first, second = trainer.stage_records
    assert first["best_metric"] > second["best_metric"], "the test needs a stage 2 that does worse"
    assert trainer.selected_stage == 1
    kept = CDTMForImageClassification.from_pretrained(tmp_path / "stage1_best")
    for key, value in snapshot(kept).items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert trainer.evaluate()["eval_f1"] == pytest.approx(first["best_metric"])


def test_gpu_check_exits_cleanly_without_cuda(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                            env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no CUDA device" in result.stdout
