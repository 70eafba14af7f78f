"""The loss and the gradients do not depend on gradient accumulation or on the process count (issue 18, item 1).

`CDTMForImageClassification.forward(**kwargs)` made the Trainer assume the model normalises its loss by
`num_items_in_batch`: it then skipped the division by `gradient_accumulation_steps` and multiplied the loss by the
process count, doubling the logged losses and the gradients at GA 2 or on two processes. At lr 1e-12 the weights do
not move, so one epoch over the same images must log the same losses and sum to the same gradient, whatever the
accumulation or the number of processes that split each batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import write_imagefolder

REPO = Path(__file__).resolve().parents[1]
RUN = ["--backbone", "test_vit", "--backbone_library", "timm", "--no_backbone_pretrained", "--image_size", "32",
       "--num_centers", "3", "--report_to", "none", "--disable_tqdm", "True", "--finetune_mode", "fft",
       "--num_train_epochs", "1", "--warmup_epochs", "0", "--learning_rate", "1e-12", "--logging_steps", "1",
       "--lr_scheduler_type", "constant", "--max_grad_norm", "0", "--seed", "0"]


def install_probe(trainer_cls, records: dict) -> None:
    """Record every logged dict and the gradient of every optimizer step (after accumulation and DDP's average)."""
    create_optimizer, log = trainer_cls.create_optimizer, trainer_cls.log

    def probed_create_optimizer(self, model=None):
        optimizer = create_optimizer(self, model)
        if not getattr(optimizer, "_loss_probe", False):
            def hook(opt, args, kwargs):
                grads = [p.grad.detach().flatten().clone() for g in opt.param_groups for p in g["params"]
                         if p.grad is not None]
                records["grads"].append(torch.cat(grads))

            optimizer.register_step_pre_hook(hook)
            optimizer._loss_probe = True
        return optimizer

    def probed_log(self, logs, *args, **kwargs):
        records["logs"].append(dict(logs))
        return log(self, logs, *args, **kwargs)

    trainer_cls.create_optimizer, trainer_cls.log = probed_create_optimizer, probed_log


#: `accelerate launch` runs this: the probe, then examples/run_sft.py with the given arguments, then the records.
LAUNCHED = """
import os, runpy, sys, torch
from cdtm_hf.training.trainer import CDTMTrainer
from tests.test_loss_scaling import install_probe
records = {"logs": [], "grads": []}
install_probe(CDTMTrainer, records)
target = sys.argv.pop(1)
sys.argv[0] = os.path.join("examples", "run_sft.py")
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as stop:  # run_sft.py exits with the CLI's status
    if stop.code:
        raise
torch.save(records, f"{target}.rank{os.environ.get('RANK', '0')}.pt")
"""


def summary(records: dict, out: Path) -> dict:
    """The losses a user reads (per-step train losses, the epoch's train loss, eval and test loss) and the
    gradient summed over the epoch's optimizer steps."""
    logs = records["logs"]
    return {
        "train": [d["loss"] for d in logs if "loss" in d],
        "train_loss": [d["train_loss"] for d in logs if "train_loss" in d],
        "eval_loss": [d["eval_loss"] for d in logs if "eval_loss" in d],
        "test_loss": json.loads((out / "test_results.json").read_text())["metrics"]["loss"],
        "grad": torch.stack(records["grads"]).sum(0),
        "steps": len(records["grads"]),
    }


def run_here(monkeypatch, data: Path, out: Path, *extra: str) -> dict:
    from cdtm_hf.cli.train import main
    from cdtm_hf.training.trainer import CDTMTrainer

    records = {"logs": [], "grads": []}
    with monkeypatch.context() as m:
        m.setattr(CDTMTrainer, "create_optimizer", CDTMTrainer.create_optimizer)
        m.setattr(CDTMTrainer, "log", CDTMTrainer.log)
        install_probe(CDTMTrainer, records)
        main([*RUN, "--data_dir", str(data), "--output_dir", str(out), *extra])
    return summary(records, out)


def assert_same(a: dict, b: dict) -> None:
    assert a["steps"] == b["steps"]  # the same optimizer steps, each over the same number of images
    for key in ("train_loss", "eval_loss", "test_loss"):
        assert a[key] == pytest.approx(b[key], abs=1e-5), key
    assert sum(a["train"]) / len(a["train"]) == pytest.approx(sum(b["train"]) / len(b["train"]), abs=1e-5)
    torch.testing.assert_close(a["grad"], b["grad"], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("loss") / "data", per_class=(4, 2, 2), size=32)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """One process, batch 4, no accumulation: two optimizer steps over the 8 training images."""
    mp = pytest.MonkeyPatch()
    try:
        return run_here(mp, data, tmp_path_factory.mktemp("ga1") / "out", "--per_device_train_batch_size", "4",
                        "--per_device_eval_batch_size", "4")
    finally:
        mp.undo()


def test_gradient_accumulation_keeps_losses_and_gradients(data, reference, tmp_path, monkeypatch):
    accumulated = run_here(monkeypatch, data, tmp_path / "out", "--per_device_train_batch_size", "2",
                           "--gradient_accumulation_steps", "2", "--per_device_eval_batch_size", "4")
    assert reference["steps"] == 2
    assert_same(accumulated, reference)
    assert_card_batch(tmp_path / "out", accumulation=2, devices=1)


def assert_card_batch(out: Path, accumulation: int, devices: int) -> None:
    """The card states the batch of one optimizer step (per device x accumulation x devices) and the versions the
    run ran with, as HF's Trainer cards do (issue 18, item 7)."""
    import timm
    import transformers

    import cdtm_hf

    card = (out / "README.md").read_text()
    assert f"| `gradient_accumulation_steps` | {accumulation} |" in card
    assert f"| `num_devices` | {devices} |" in card
    assert "| `total_train_batch_size` | 4 |" in card  # 2 x 2 x 1 or 2 x 1 x 2: the reference's 4
    versions = card.split("### Framework versions", 1)[1].split("##", 1)[0]
    for name, version in (("cdtm_hf", cdtm_hf.__version__), ("transformers", transformers.__version__),
                          ("torch", torch.__version__), ("timm", timm.__version__)):
        assert f"- {name} {version}\n" in versions
    recorded = json.loads((out / "run_args.json").read_text())["training"]
    assert recorded["total_train_batch_size"] == 4 and recorded["framework_versions"]["torch"] == torch.__version__


def test_model_tells_the_trainer_its_loss_is_a_batch_mean():
    from cdtm_hf.core.modeling_cdtm import CDTMForImageClassification

    assert CDTMForImageClassification.accepts_loss_kwargs is False


def test_two_cpu_processes_keep_losses_and_gradients(data, reference, tmp_path):
    """`accelerate launch --config_file examples/accelerate/ddp_cpu.yaml examples/run_sft.py ... --use_cpu True`:
    two ranks on CPU (gloo), each batch of 4 split into 2 + 2 (accelerate's `--cpu` would take its single-process
    launcher)."""
    out = tmp_path / "out"
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "examples" / "accelerate" / "ddp_cpu.yaml"), "--main_process_port", "29517", str(script),
               str(tmp_path / "records"), *RUN,
               "--data_dir", str(data), "--output_dir", str(out), "--use_cpu", "True",
               "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"records.rank{r}.pt", weights_only=True) for r in (0, 1)]
    torch.testing.assert_close(ranks[0]["grads"], ranks[1]["grads"])  # DDP: every rank steps with the same gradient
    assert_same(summary(ranks[0], out), reference)
    assert done.stdout.count("results: ") == 1  # only rank 0 prints the final results line
    assert_card_batch(out, accumulation=1, devices=2)
