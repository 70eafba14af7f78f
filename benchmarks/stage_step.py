"""Time per training step: our SFT stage 2 vs HF Trainer + TimmWrapperForImageClassification doing FFT.

    python benchmarks/stage_step.py [--backbone vit_small_patch16_224] [--steps 8] [--batch 8]

Both run in this process on the same backbone, batch and data; the first steps are warm-up and dropped.
Target ratio: <= 1.10. (CDTM itself adds compute: the FLOP ratio is printed beside the time ratio.)
"""

import argparse
import statistics
import tempfile
import time

import _timing  # noqa: F401  (sets HF_HUB_OFFLINE)
import numpy as np
import torch
from datasets import Dataset
from transformers import (
    Trainer, TimmWrapperConfig, TimmWrapperForImageClassification, TrainerCallback, TrainingArguments,
)

from cdtm_hf import CDTMConfig, CDTMForImageClassification
from cdtm_hf.evaluation.reporting import format_number, markdown_table
from cdtm_hf.training.arguments import CDTMTrainingArguments
from cdtm_hf.training.trainer import CDTMTrainer


class StepTimer(TrainerCallback):
    def __init__(self, only_stage=None, trainer=None):
        self.times, self._start, self.only_stage, self.trainer = [], None, only_stage, trainer

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.only_stage is None or self.trainer.stage.index == self.only_stage:
            self.times.append(time.perf_counter() - self._start)


def dataset(n, size, classes=4):
    rng = np.random.default_rng(0)
    return Dataset.from_dict({
        "pixel_values": rng.normal(size=(n, 3, size, size)).astype("float32"), "labels": np.arange(n) % classes,
    }).with_format("torch")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="vit_small_patch16_224")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--optims", nargs="+", default=["adamw_torch", "adamw_torch_fused"],
                        help="HF `optim` values; each is run on both sides")
    args = parser.parse_args()
    data = dataset(args.batch * args.steps, 224)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.backbone}, batch {args.batch}")
    rows = []
    for optim in args.optims:
        ours_t, ref_t = measure(args, data, optim)
        ratio = format_number(ours_t / ref_t, 3, suffix="x")
        rows.append([optim, format_number(ref_t, 3), format_number(ours_t, 3), ratio])
    print(markdown_table(["optimizer (both sides)", "HF Trainer + TimmWrapper, FFT (s/step)",
                          "CDTMTrainer, SFT stage 2 (s/step)", "ratio"], rows))
    print("target: ratio <= 1.10 (CDTMTrainingArguments defaults to adamw_torch_fused)")


def measure(args, data, optim):
    common = dict(per_device_train_batch_size=args.batch, optim=optim, report_to="none", use_cpu=True,
                  disable_tqdm=True, save_strategy="no", eval_strategy="no", logging_strategy="no", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        ours = CDTMForImageClassification(CDTMConfig(backbone=args.backbone, num_labels=4))
        targs = CDTMTrainingArguments(output_dir=tmp + "/ours", finetune_mode="sft", stage1_epochs=1, stage2_epochs=1,
                                      load_best_model_at_end=False, stage2_from_best=False, warmup_epochs=0,
                                      feature_cache=False, **common)
        trainer = CDTMTrainer(model=ours, args=targs, train_dataset=data)
        ours_timer = StepTimer(only_stage=2, trainer=trainer)
        trainer.add_callback(ours_timer)
        trainer.train()

        ref_model = TimmWrapperForImageClassification(TimmWrapperConfig(architecture=args.backbone, num_labels=4))
        ref_timer = StepTimer()
        ref = Trainer(model=ref_model, args=TrainingArguments(output_dir=tmp + "/ref", num_train_epochs=1,
                                                              remove_unused_columns=False, **common),
                      train_dataset=data, callbacks=[ref_timer])
        ref.train()
    skip = args.warmup_steps
    return statistics.median(ours_timer.times[skip:]), statistics.median(ref_timer.times[skip:])


if __name__ == "__main__":
    main()
