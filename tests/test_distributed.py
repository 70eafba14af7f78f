"""Launches that would not make one run are refused with what to pass (issue 18, item 3); the shipped accelerate
configs load with accelerate's own loader. The two-process run itself: tests/test_loss_scaling.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import write_imagefolder

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "examples" / "accelerate").glob("*.yaml"))
TINY = ["--backbone", "test_vit", "--backbone_library", "timm", "--no_backbone_pretrained", "--image_size", "32",
        "--num_centers", "3", "--report_to", "none", "--finetune_mode", "fft", "--num_train_epochs", "1"]


def launch(tmp_path, *accelerate_args: str) -> subprocess.CompletedProcess:
    data = write_imagefolder(tmp_path / "data", per_class=(2, 1, 1), size=32)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", *accelerate_args, "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29518",
               str(REPO / "examples" / "run_sft.py"), *TINY, "--data_dir", str(data),
               "--output_dir", str(tmp_path / "out")]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)


def test_accelerate_cpu_flag_with_two_processes_is_refused(tmp_path):
    """`accelerate launch --cpu --num_processes 2` takes accelerate's single-process launcher."""
    done = launch(tmp_path, "--cpu", "--num_processes", "2")
    assert done.returncode != 0
    assert "asked for several processes but started one" in done.stderr
    assert "examples/accelerate/ddp_cpu.yaml" in done.stderr and "--use_cpu True" in done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="the mismatch is that of a machine without GPUs")
def test_two_ranks_on_cpu_without_use_cpu_are_refused(tmp_path):
    """Without --use_cpu True each rank sets itself up as a world of one: two runs into one folder."""
    done = launch(tmp_path, "--multi_gpu", "--num_processes", "2")
    assert done.returncode != 0
    assert "the launcher started 2 processes (WORLD_SIZE=2)" in done.stderr
    assert "add --use_cpu True" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_with_accelerate(path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(path))  # refuses unknown keys
    options = {a.dest for a in launch_command_parser()._actions}
    for key in {**config.fsdp_config, **config.deepspeed_config}:  # each becomes an `accelerate launch` option
        assert key in options, key
    assert config.num_processes >= 2 and config.num_machines >= 1


def test_shipped_configs_cover_the_documented_setups():
    names = {p.name for p in CONFIGS}
    assert names == {"ddp_cpu.yaml", "ddp_multi_gpu.yaml", "multi_node.yaml", "fsdp.yaml", "deepspeed_zero2.yaml",
                     "deepspeed_zero3.yaml"}
    fsdp = yaml.safe_load((REPO / "examples" / "accelerate" / "fsdp.yaml").read_text())["fsdp_config"]
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"  # wraps the model's _no_split_modules
    stages = {n: yaml.safe_load((REPO / "examples" / "accelerate" / n).read_text())["deepspeed_config"]["zero_stage"]
              for n in ("deepspeed_zero2.yaml", "deepspeed_zero3.yaml")}
    assert stages == {"deepspeed_zero2.yaml": 2, "deepspeed_zero3.yaml": 3}
    docs = (REPO / "docs" / "distributed.md").read_text()
    assert all(f"examples/accelerate/{n}" in docs for n in names)
