"""The Python side of `benchmarks/gpu_check.sh`: a short bf16 SFT on a GPU against HF Trainer + TimmWrapper.

    python benchmarks/gpu_check.py [--backbone vit_base_patch16_224] [--batch 32] [--steps 24] [--compile both]

For each `torch.compile` setting, in one process on the same data:
    ours  CDTMTrainer, finetune_mode="sft", one epoch per stage (stage 1 on the float16 feature cache).
    ref   HF `Trainer` + `TimmWrapperForImageClassification`, one epoch of FFT (the same backbone, batch, optimizer).
Prints the median seconds per optimizer step (the first `--warmup` steps of each run dropped; CUDA synchronised at
both ends of a step), the ratio of our stage 2 step to the reference step, and the peak GPU memory of each run.
Random weights: nothing is downloaded. `--allow_cpu` runs the same code on the CPU (a smoke test, not a measure).

    python benchmarks/gpu_check.py --large [--large_backbone uni] [--batch 32] [--steps 24]

The large-backbone case (issue 20): ViT-L/16 with UNI's architecture (the `uni` preset, random weights), one SFT run
per stage-2 setting: full stage 2, LoRA stage 2 (r = 8), and full stage 2 with gradient checkpointing. Prints the
median stage-2 step time and the peak GPU memory of stage 2 (reset when stage 2 starts), and the ratios to full.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time

import _timing  # noqa: F401  (sets HF_HUB_OFFLINE)
import torch
from torch.utils.data import Dataset
from transformers import (
    Trainer, TimmWrapperConfig, TimmWrapperForImageClassification, TrainerCallback, TrainingArguments,
)

from cdtm_hf import CDTMConfig, CDTMForImageClassification
from cdtm_hf.evaluation.reporting import format_number, markdown_table
from cdtm_hf.training.arguments import CDTMTrainingArguments
from cdtm_hf.training.trainer import CDTMTrainer

NUM_LABELS = 4


def _stage_of(args) -> int:
    """The stage a callback runs in: each stage's trainer writes to <output_dir>/stage<k> (1 for a plain Trainer)."""
    name = os.path.basename(os.path.normpath(args.output_dir))
    return int(name[5:]) if name.startswith("stage") and name[5:].isdigit() else 1


class StepTimer(TrainerCallback):
    """Seconds per optimizer step, per stage (`trainer.stage.index`; 1 for a plain Trainer)."""

    def __init__(self, trainer=None):
        self.trainer, self.times, self._start = trainer, {}, None

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        stage = _stage_of(args)
        self.times.setdefault(stage, []).append(time.perf_counter() - self._start)


class RandomImages(Dataset):
    """`n` fixed random images (seeded by index, made on the fly: no Arrow table of hundreds of MB to build)."""

    def __init__(self, n: int, size: int):
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(i)
        pixels = torch.randn(3, self.size, self.size, generator=generator)
        return {"pixel_values": pixels, "labels": torch.tensor(i % NUM_LABELS)}


def common_args(args, compile_on: bool) -> dict:
    return dict(
        per_device_train_batch_size=args.batch, bf16=True, torch_compile=compile_on, report_to="none",
        optim="adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch", disable_tqdm=True,
        save_strategy="no", eval_strategy="no", logging_strategy="no", seed=0, dataloader_num_workers=2,
        use_cpu=not torch.cuda.is_available(),
    )


def median_after(times: list[float], warmup: int) -> float:
    kept = times[warmup:] or times
    return statistics.median(kept) if kept else float("nan")


def peak_gb() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def reset_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_ours(args, data, compile_on: bool, tmp: str) -> dict:
    reset_memory()
    config = CDTMConfig(backbone=args.backbone, image_size=args.image_size, num_labels=NUM_LABELS)
    model = CDTMForImageClassification(config)
    targs = CDTMTrainingArguments(
        output_dir=f"{tmp}/ours-{compile_on}", finetune_mode="sft", stage1_epochs=1, stage2_epochs=1, warmup_epochs=0,
        load_best_model_at_end=False, stage2_from_best=False, feature_cache_dir=f"{tmp}/cache",
        **common_args(args, compile_on),
    )
    trainer = CDTMTrainer(model=model, args=targs, train_dataset=data)
    timer = StepTimer(trainer)
    trainer.add_callback(timer)
    trainer.train()
    result = {"stage1": median_after(timer.times.get(1, []), args.warmup),
              "stage2": median_after(timer.times.get(2, []), args.warmup), "peak": peak_gb()}
    del trainer, model
    return result


class Stage2Peak(TrainerCallback):
    """Reset the peak-memory counter when stage 2 starts, so its peak is stage 2's alone."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if _stage_of(args) == 2 and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()


LARGE_CASES = {
    "full": {},
    "lora r=8": {"stage2_method": "lora", "lora_r": 8, "lora_alpha": 16},
    "full + gradient checkpointing": {"gradient_checkpointing": True},
}


def run_large(args, data, name: str, extra: dict, tmp: str) -> dict:
    """One SFT run of the large backbone with one stage-2 setting; stage 2's median step and peak memory."""
    reset_memory()
    model = CDTMForImageClassification(CDTMConfig(backbone=args.large_backbone, image_size=args.image_size,
                                                  num_labels=NUM_LABELS))
    slug = name.replace(" ", "_").replace("=", "").replace("+", "")
    targs = CDTMTrainingArguments(
        output_dir=f"{tmp}/large-{slug}", finetune_mode="sft", stage1_epochs=1, stage2_epochs=1, warmup_epochs=0,
        load_best_model_at_end=False, stage2_from_best=False, feature_cache_dir=f"{tmp}/cache-large",
        **common_args(args, False), **extra,
    )
    trainer = CDTMTrainer(model=model, args=targs, train_dataset=data)
    timer = StepTimer(trainer)
    trainer.add_callback(timer)
    trainer.add_callback(Stage2Peak(trainer))
    trainer.train()
    record = trainer.stage_records[-1]
    result = {"stage2": median_after(timer.times.get(2, []), args.warmup), "peak": peak_gb(),
              "share": record["trainable_share"], "params": model.num_parameters()}
    del trainer, model
    return result


def main_large(args) -> int:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"large backbone: torch {torch.__version__}, {device}, preset {args.large_backbone} (random weights), "
          f"{args.image_size}px, bf16, batch {args.batch}, {args.steps} steps per stage, first {args.warmup} dropped")
    data = RandomImages(args.batch * args.steps, args.image_size)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in LARGE_CASES.items():
            try:
                results[name] = run_large(args, data, name, extra, tmp)
            except Exception as exc:  # an out-of-memory is a result to print, not a crash of the check
                results[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    full = results.get("full", {})
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append([name, f"failed: {r['error']}", "–", "–", "–", "–"])
            continue
        rows.append([name, format_number(100 * r["share"], 2, suffix=" %"), format_number(r["stage2"], 4),
                     format_number(r["stage2"] / full["stage2"], 2, suffix="x") if "stage2" in full else "–",
                     format_number(r["peak"], 2),
                     format_number(r["peak"] / full["peak"], 2, suffix="x") if "peak" in full else "–"])
    print(markdown_table(["stage 2", "trainable", "s/step", "step vs full", "peak (GiB)", "peak vs full"], rows))
    return 0


def run_reference(args, data, compile_on: bool, tmp: str) -> dict:
    reset_memory()
    model_args = {"img_size": args.image_size} if args.image_size != 224 and "vit" in args.backbone else None
    model = TimmWrapperForImageClassification(
        TimmWrapperConfig(architecture=args.backbone, num_labels=NUM_LABELS, model_args=model_args)
    )
    timer = StepTimer()
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=f"{tmp}/ref-{compile_on}", num_train_epochs=1,
                                                          remove_unused_columns=False, **common_args(args, compile_on)),
                      train_dataset=data, callbacks=[timer])
    trainer.train()
    result = {"step": median_after(timer.times.get(1, []), args.warmup), "peak": peak_gb()}
    del trainer, model
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="vit_base_patch16_224")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per stage (one epoch)")
    parser.add_argument("--warmup", type=int, default=6, help="steps dropped from the start of each run")
    parser.add_argument("--compile", choices=("off", "on", "both"), default="both")
    parser.add_argument("--allow_cpu", action="store_true", help="run on the CPU (a smoke test of this script)")
    parser.add_argument("--large", action="store_true", help="the large-backbone case: full vs LoRA vs grad ckpt")
    parser.add_argument("--large_backbone", default="uni", help="a preset (default uni: ViT-L/16)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing measured.")
        return 0
    if args.large:
        return main_large(args)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"torch {torch.__version__}, {device}, {args.backbone} (random weights), {args.image_size}px, bf16, "
          f"batch {args.batch}, {args.steps} steps per stage, first {args.warmup} steps dropped")
    data = RandomImages(args.batch * args.steps, args.image_size)
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for compile_on in settings:
            try:
                ours, ref = run_ours(args, data, compile_on, tmp), run_reference(args, data, compile_on, tmp)
            except Exception as exc:  # a compile failure is a result to print, not a crash of the check
                rows.append([("on" if compile_on else "off"), f"failed: {type(exc).__name__}: {exc}"[:200],
                             *["–"] * 6])
                continue
            rows.append([
                "on" if compile_on else "off", format_number(ours["stage1"], 4), format_number(ours["stage2"], 4),
                format_number(ref["step"], 4), format_number(ours["stage2"] / ref["step"], 3, suffix="x"),
                format_number(ours["peak"], 2), format_number(ref["peak"], 2),
                format_number(ours["peak"] / ref["peak"], 2, suffix="x"),
            ])
    print(markdown_table(
        ["torch.compile", "ours stage 1 (s/step, cached)", "ours stage 2 (s/step)",
         "HF Trainer + TimmWrapper FFT (s/step)", "stage 2 / HF", "ours peak (GiB)", "HF peak (GiB)", "peak ratio"],
        rows,
    ))
    print("target: stage 2 / HF <= 1.10 (CDTM adds the CCA blocks' compute; stage 1 skips the backbone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
