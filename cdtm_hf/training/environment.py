"""How a run was launched and on what: refuse a launch whose processes would not make one run, before any data is
read; the batch one optimizer step sees and the framework versions, which the run records and the card states.

Two launches look like a distributed run and are not (docs/distributed.md):

- `accelerate launch --num_processes 2` (or `--cpu --num_processes 2`) on a machine without GPUs: accelerate takes
  its single-process launcher, so one process trains alone while the user expects two;
- `torchrun` / `accelerate launch --multi_gpu` with `WORLD_SIZE=2` on CPU without `--use_cpu True`: each rank sets
  itself up as a single-process run (world size 1), so two independent runs write into one folder.
"""

from __future__ import annotations

import os

#: the environment variables a launcher sets for the process count (torchrun/accelerate, MPI flavours)
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
#: an example two-process CPU launch, named in the errors
CPU_LAUNCH = ("accelerate launch --config_file examples/accelerate/ddp_cpu.yaml examples/run_sft.py ... "
              "--use_cpu True")

__all__ = ["CPU_LAUNCH", "FRAMEWORKS", "batch_facts", "check_launch", "framework_versions", "launched_world_size"]


def launched_world_size() -> int:
    """The process count the launcher asked for (1 when no launcher set one)."""
    for name in WORLD_SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 1


def _accelerate_single_process_launch() -> bool:
    """`accelerate launch` with more than one process that ran through its single-process launcher: it sets
    `MASTER_ADDR` for num_processes (or num_machines) > 1, and its `ACCELERATE_*` variables, but no world size."""
    launched_by_accelerate = "ACCELERATE_MIXED_PRECISION" in os.environ or "ACCELERATE_USE_CPU" in os.environ
    has_world_size = any(name in os.environ for name in WORLD_SIZE_VARIABLES)
    return launched_by_accelerate and "MASTER_ADDR" in os.environ and not has_world_size


def check_launch(training_args) -> None:
    """Raise when the processes of this launch would not form one run, naming what to pass instead.

    Args:
        training_args (`TrainingArguments`): the run's arguments; their `world_size` is the process group the
            Trainer will use.

    Raises:
        `RuntimeError`: a launch of N processes that became N independent runs, or a multi-process `accelerate
            launch` that runs a single process.
    """
    import torch

    requested = launched_world_size()
    if requested > 1 and training_args.world_size != requested:
        remedy = (
            "this machine has no CUDA GPU: add --use_cpu True to the script's arguments (gloo backend), e.g. "
            f"{CPU_LAUNCH}"
            if not torch.cuda.is_available() and not training_args.use_cpu
            else "check that every rank sees its device and that the launcher's process count matches the devices"
        )
        raise RuntimeError(
            f"the launcher started {requested} processes (WORLD_SIZE={requested}), but this process set itself up as "
            f"a run of world size {training_args.world_size}: the ranks would train as independent runs into one "
            f"output folder. {remedy[0].upper()}{remedy[1:]} (docs/distributed.md)"
        )
    if requested == 1 and _accelerate_single_process_launch():
        raise RuntimeError(
            "accelerate launch was asked for several processes but started one: without GPUs (or with accelerate's "
            "--cpu) it uses its single-process launcher. For several CPU processes launch through torchrun, e.g. "
            f"{CPU_LAUNCH} (or accelerate launch --multi_gpu --num_processes 2 examples/run_sft.py ... --use_cpu "
            "True); for one process, drop --num_processes (docs/distributed.md)"
        )


#: the libraries a run's record and card name with their versions (HF's Trainer cards: "Framework versions"), in
#: order; one not installed is left out
FRAMEWORKS = ("cdtm_hf", "transformers", "torch", "timm", "open_clip_torch", "datasets", "accelerate", "peft",
              "safetensors", "huggingface_hub", "deepspeed")


#: distribution name -> module name, where they differ
_MODULES = {"open_clip_torch": "open_clip"}


def framework_versions() -> dict[str, str]:
    """The version of each of `FRAMEWORKS` that is installed: a loaded module's own `__version__` (cdtm_hf's is the
    package that runs; torch's names its build, e.g. 2.5.1+cu121, as in HF's cards), else the installed metadata."""
    import sys
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in FRAMEWORKS:
        loaded = getattr(sys.modules.get(_MODULES.get(name, name)), "__version__", None)
        try:
            versions[name] = str(loaded) if loaded else version(name)
        except PackageNotFoundError:
            continue
    return versions


def batch_facts(training_args) -> dict[str, int]:
    """What one optimizer step sees, as the Trainer computes it: the per-device batch x accumulation x devices."""
    return {
        "gradient_accumulation_steps": int(training_args.gradient_accumulation_steps),
        "num_devices": int(training_args.world_size),
        "total_train_batch_size": int(training_args.train_batch_size * training_args.gradient_accumulation_steps
                                      * training_args.world_size),
    }
