"""Issue 20: a two-process CPU `accelerate launch` of SFT with an FSDP accelerate config, and what accelerate makes of
it without an accelerator (docs/backbones.md, "FSDP and DeepSpeed", says the same)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import write_imagefolder

REPO = Path(__file__).resolve().parents[1]

# examples/accelerate/fsdp.yaml with use_cpu and two processes: the CPU rehearsal of the multi-GPU config
FSDP_CPU = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
use_cpu: true
num_machines: 1
num_processes: 2
machine_rank: 0
main_process_port: {port}
mixed_precision: 'no'
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_reshard_after_forward: true
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(config: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), *argv],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_two_cpu_processes_run_sft_with_the_fsdp_config(tmp_path):
    config = tmp_path / "fsdp_cpu.yaml"
    config.write_text(FSDP_CPU.format(port=_free_port()))
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent("""
        import json, os
        from accelerate import PartialState
        state = PartialState(cpu=True)  # what TrainingArguments(use_cpu=True) asks for
        record = json.dumps({"type": str(state.distributed_type), "world": state.num_processes})
        os.write(1, f"STATE {record}\\n".encode())  # one write: the two ranks' lines cannot interleave
    """))
    seen = _launch(config, str(probe), cwd=tmp_path)
    assert seen.returncode == 0, seen.stderr[-3000:]
    # two ranks print at once: their lines may interleave, so read every STATE record wherever it is
    states = [json.loads(found) for found in re.findall(r"STATE (\{[^}]*\})", seen.stdout)]
    # without an accelerator, accelerate runs the FSDP config as CPU data parallelism (gloo): FSDP sharding is only
    # chosen for GPU/XPU/NPU/... process groups (accelerate.state, AcceleratorState._prepare_backend)
    assert states == [{"type": "DistributedType.MULTI_CPU", "world": 2}] * 2, seen.stdout + seen.stderr[-3000:]

    config.write_text(FSDP_CPU.format(port=_free_port()))  # a fresh port for the second launch
    data = write_imagefolder(tmp_path / "data")
    out = tmp_path / "out"
    run = _launch(config, str(REPO / "examples" / "run_sft.py"), "--backbone", "test_vit", "--no_backbone_pretrained",
                  "--image_size", "32", "--num_centers", "3", "--data_dir", str(data), "--output_dir", str(out),
                  "--stage1_epochs", "1", "--stage2_epochs", "1", "--warmup_epochs", "0",
                  "--per_device_train_batch_size", "2", "--report_to", "none", "--disable_tqdm", "True",
                  "--use_cpu", "True", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert "Total train batch size (w. parallel, distributed & accumulation) = 4" in log  # 2 processes x 2
    report = json.loads((out / "test_results.json").read_text())
    assert [s["stage"] for s in report["training"]["stages"]] == [1, 2]
