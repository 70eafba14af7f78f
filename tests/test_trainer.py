"""CDTMTrainer: fine-tuning modes, resume, run_sft.py, bad input (see also test_stages.py, test_feature_cache.py)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from cdtm_hf import CDTMConfig, CDTMForImageClassification
from cdtm_hf.evaluation.metrics import compute_metrics
from cdtm_hf.training.arguments import CDTMTrainingArguments
from cdtm_hf.training.trainer import CDTMTrainer
from tests.helpers import write_imagefolder

REPO = Path(__file__).resolve().parents[1]
SIZE = 32


def make_dataset(n, seed):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    pixels = rng.normal(size=(n, 3, SIZE, SIZE)).astype("float32") + labels[:, None, None, None] * 0.5
    return Dataset.from_dict({"pixel_values": pixels, "labels": labels}).with_format("torch")


def make_model(seed=0):
    torch.manual_seed(seed)
    return CDTMForImageClassification(
        CDTMConfig(backbone="test_vit", image_size=SIZE, num_labels=2, num_centers=3)
    )


def make_trainer(model, tmp_path, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path), finetune_mode="sft", stage1_epochs=1, stage2_epochs=1, warmup_epochs=0,
        per_device_train_batch_size=4, per_device_eval_batch_size=8, learning_rate=1e-2, logging_steps=1,
        report_to="none", use_cpu=True, seed=0, full_determinism=True, disable_tqdm=True, save_total_limit=None,
    )
    kwargs.update(overrides)
    args = CDTMTrainingArguments(**kwargs)
    return CDTMTrainer(model=model, args=args, train_dataset=make_dataset(12, 0), eval_dataset=make_dataset(8, 1),
                       compute_metrics=compute_metrics)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_sft_stage1_freezes_backbone_bit_for_bit_then_stage2_trains_it(tmp_path):
    model = make_model()
    backbone0, transfer0, head0 = snapshot(model.backbone), snapshot(model.transfer), snapshot(model.head)
    trainer = make_trainer(model, tmp_path)
    trainer.train()
    stage1 = CDTMForImageClassification.from_pretrained(tmp_path / "stage1_best")
    assert same(backbone0, snapshot(stage1.backbone)), "stage 1 changed a frozen backbone parameter"
    assert not same(transfer0, snapshot(stage1.transfer)) and not same(head0, snapshot(stage1.head))
    final = snapshot(model.backbone)
    changed = [k for k in backbone0 if not torch.equal(backbone0[k], final[k])]
    assert len(changed) > len(backbone0) // 2, "stage 2 should train the backbone"
    # one train() call ran both stages, each with its own checkpoints
    assert (tmp_path / "stage1" / "checkpoint-3").is_dir() and (tmp_path / "stage2" / "checkpoint-3").is_dir()
    stages = {entry.get("stage") for entry in trainer.state.log_history}
    assert stages == {2}  # the state belongs to the last stage; each log line names its stage


def test_lp_never_builds_optimizer_state_for_the_backbone(tmp_path):
    model = make_model()
    trainer = make_trainer(model, tmp_path, finetune_mode="lp", num_train_epochs=1)
    trainer.train()
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    optimizer = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    in_groups = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not backbone_ids & in_groups
    assert not backbone_ids & {id(p) for p in optimizer.state}
    assert len(optimizer.state) == sum(1 for p in model.parameters() if p.requires_grad)


def test_scratch_reinitialises_the_backbone(tmp_path):
    model = make_model()
    with torch.no_grad():  # stand-in for pretrained weights: values no initialiser produces
        for p in model.backbone.parameters():
            p.add_(0.5)
    pretrained = snapshot(model.backbone)
    trainer = make_trainer(model, tmp_path, finetune_mode="scratch", num_train_epochs=1, learning_rate=1e-12)
    trainer.train()
    after = snapshot(model.backbone)
    weights = [k for k in pretrained if k.endswith("weight") and pretrained[k].ndim > 1]
    assert all(not torch.allclose(pretrained[k], after[k]) for k in weights)


def test_fft_trains_everything_from_step_zero(tmp_path):
    model = make_model()
    trainer = make_trainer(model, tmp_path, finetune_mode="fft", num_train_epochs=1, max_steps=1, eval_strategy="no",
                           save_strategy="no", load_best_model_at_end=False)
    before = snapshot(model)
    trainer.train()
    assert all(p.requires_grad for p in model.parameters())
    after = snapshot(model)
    assert not same(snapshot_part(before, "backbone."), snapshot_part(after, "backbone."))
    n_opt = sum(len(g["params"]) for g in trainer.optimizer.param_groups)
    assert n_opt == len(list(model.parameters()))


def snapshot_part(state, prefix):
    return {k: v for k, v in state.items() if k.startswith(prefix)}


class Kill(TrainerCallback):
    """Stop the process (an exception) right after the first stage-2 checkpoint is written."""

    def on_save(self, args, state, control, **kwargs):
        if Path(args.output_dir).name == "stage2" and state.epoch >= 1:
            raise KeyboardInterrupt("killed")


def test_kill_in_stage2_and_resume_equals_uninterrupted(tmp_path):
    overrides = dict(stage1_epochs=2, stage2_epochs=2)
    straight = make_model()
    straight_trainer = make_trainer(straight, tmp_path / "a", **overrides)
    straight_trainer.train()

    victim = make_trainer(make_model(), tmp_path / "b", **overrides)
    victim.add_callback(Kill())
    with pytest.raises(KeyboardInterrupt):
        victim.train()
    assert (tmp_path / "b" / "stage2" / "checkpoint-3").is_dir()
    assert not (tmp_path / "b" / "stage2" / "checkpoint-6").exists()

    resumed = make_model(seed=1)  # different init: everything must come from the checkpoint
    resumed_trainer = make_trainer(resumed, tmp_path / "b", **overrides)
    resumed_trainer.train(resume_from_checkpoint=True)
    # stage 1 finished before the kill: its record is read back from its checkpoint, and equals the straight run's
    assert resumed_trainer.stage_records == straight_trainer.stage_records
    assert resumed_trainer.selected_stage == straight_trainer.selected_stage
    a, b = snapshot(straight), snapshot(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)


# ---------------------------------------------------------------------------------------------------------------
def test_accelerate_launch_run_sft_end_to_end(tmp_path):
    data = write_imagefolder(tmp_path / "data")
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "examples" / "run_sft.py"),
        "--backbone", "test_vit", "--backbone_pretrained", "False", "--image_size", "32", "--num_centers", "4",
        "--dataset", "imagefolder", "--data_dir", str(data), "--finetune_mode", "sft", "--stage1_epochs", "1",
        "--stage2_epochs", "1", "--warmup_epochs", "0", "--per_device_train_batch_size", "4",
        "--output_dir", str(out),
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="1")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "test_results.json").exists() and (out / "test_results.md").exists()
    png = (out / "confusion_matrix.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert list((out / "runs").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    model = CDTMForImageClassification.from_pretrained(out)
    assert model.config.id2label == {0: "benign", 1: "malignant"}


def run_script(args, tmp_path):
    return subprocess.run([sys.executable, str(REPO / "examples" / "run_sft.py"), *args], capture_output=True,
                          text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300, cwd=tmp_path)


BASE = ["--backbone", "test_vit", "--backbone_pretrained", "False", "--image_size", "32", "--report_to", "none"]


def test_missing_and_empty_dataset_dir(tmp_path):
    from cdtm_hf.run import load_run_data
    from cdtm_hf.training.run_arguments import DataArguments

    with pytest.raises(ValueError, match="does not exist"):
        load_run_data(DataArguments(data_dir=str(tmp_path / "nope")))
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        load_run_data(DataArguments(data_dir=str(tmp_path / "empty")))


def test_class_without_images_in_a_split(tmp_path):
    from cdtm_hf.run import load_run_data
    from cdtm_hf.training.run_arguments import DataArguments

    data = write_imagefolder(tmp_path / "data")
    for f in (data / "test" / "malignant").iterdir():
        f.unlink()
    (data / "test" / "malignant" / "only.txt").write_text("not an image")
    with pytest.raises(ValueError, match="class 'malignant' has no images in the test split"):
        load_run_data(DataArguments(data_dir=str(data)))


def test_unknown_finetune_mode_and_sft_without_stage2(tmp_path):
    with pytest.raises(ValueError, match="finetune_mode 'ft' is not one of: scratch, lp, fft, sft"):
        CDTMTrainingArguments(output_dir=str(tmp_path), finetune_mode="ft")
    with pytest.raises(ValueError, match="sft needs stage2_epochs > 0, got 0"):
        CDTMTrainingArguments(output_dir=str(tmp_path), finetune_mode="sft", stage2_epochs=0)
    result = run_script([*BASE, "--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"),
                         "--finetune_mode", "sft", "--stage2_epochs", "0"], tmp_path)
    assert result.returncode != 0 and "sft needs stage2_epochs > 0" in result.stderr


def test_imagefolder_manifest_records_what_decided_its_split(tmp_path):
    from cdtm_hf.run import load_run_data
    from cdtm_hf.training.run_arguments import DataArguments

    def manifest(**kwargs):
        return load_run_data(DataArguments(cache_dir=str(tmp_path / "cache"), **kwargs))[1]

    data = write_imagefolder(tmp_path / "data")
    given = manifest(data_dir=str(data))
    assert (given["split_strategy"], given["grouping"]) == ("folders", "folders") and "given by the folders" in \
        given["description"]
    (data / "validation").rename(data / "dev")  # a name `datasets` reads as the validation split
    assert manifest(data_dir=str(data))["grouping"] == "folders"
    (data / "dev").rename(data / "validation")
    flat = write_imagefolder(tmp_path / "flat_src", per_class=(10, 0, 0))
    shutil.move(str(flat / "train"), str(tmp_path / "flat"))
    carved = manifest(data_dir=str(tmp_path / "flat"))
    assert carved["grouping"] == "random" and "random stratified" in carved["description"]
    described = manifest(data_dir=str(data), split_strategy="spatially disjoint image regions")
    assert described["split_strategy"] == "spatially disjoint image regions"
    assert described["description"].startswith("spatially disjoint image regions (given by the folders")


def test_backbone_norm_eval_keeps_batchnorm_statistics_while_the_backbone_trains(tmp_path):
    torch.manual_seed(0)
    model = CDTMForImageClassification(CDTMConfig(backbone="test_efficientnet", image_size=SIZE, num_labels=2,
                                                  num_centers=3))
    bn = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn
    stats = [m.running_mean.clone() for m in bn]
    weights = snapshot(model.backbone)
    trainer = make_trainer(model, tmp_path, finetune_mode="fft", num_train_epochs=1, backbone_norm_eval=True)
    trainer.train()
    assert all(torch.equal(a, m.running_mean) for a, m in zip(stats, bn))
    assert not same(weights, snapshot(model.backbone))  # the backbone did train
    model.backbone_norm_eval = False
    model.train()
    assert all(m.training for m in bn)
