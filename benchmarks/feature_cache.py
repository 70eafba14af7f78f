"""Frozen-stage feature cache: the time of a later stage-1 epoch against the first one (which builds the cache).

    python benchmarks/feature_cache.py [--backbone vitb16.laion2b] [--images 48]

The training images are BreakHis-sized PNGs (700x460) on disk, decoded and resized each epoch as in a real run.
Epoch 1 = decode + frozen backbone forward (the cache is written) + CDTM/head step; later epochs read the cache.
Target: <= 0.05. Also prints the no-cache epoch time, and the float16 (default) against the float32 cache: the
size on disk and the largest difference of their stage-1 loss curves (target <= 1e-3).
"""

import argparse
import tempfile
import time
from pathlib import Path

import _timing  # noqa: F401  (sets HF_HUB_OFFLINE)
import numpy as np
import torch
from PIL import Image
from transformers import TrainerCallback

from cdtm_hf.evaluation.reporting import format_number, markdown_table
from cdtm_hf.data.transforms import attach_transforms
from cdtm_hf.run import load_data
from cdtm_hf.training.model_builder import build_model
from cdtm_hf.training.run_arguments import DataArguments, ModelArguments
from cdtm_hf.core.image_processing_cdtm import CDTMImageProcessor
from cdtm_hf.training.arguments import CDTMTrainingArguments
from cdtm_hf.training.trainer import CDTMTrainer


class EpochTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.times.append(now - self._start)
        self._start = now


def write_images(root: Path, n: int):
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("validation", 8), ("test", 8)):
        for c in range(2):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count // 2):
                Image.fromarray((rng.random((460, 700, 3)) * 255).astype("uint8")).save(folder / f"{i}.png")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="vitb16.laion2b")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "data", args.images)
        ds, names, label_col = load_data(DataArguments(data_dir=str(root / "data")))
        results, losses, sizes = {}, {}, {}
        for cache, dtype in ((True, "float16"), (True, "float32"), (False, "float16")):
            torch.manual_seed(0)
            model = build_model(ModelArguments(backbone=args.backbone, backbone_pretrained=False), names)
            data = attach_transforms(ds, CDTMImageProcessor.from_model_config(model.config), label_col, augment=False)
            targs = CDTMTrainingArguments(
                output_dir=str(root / f"out{cache}{dtype}"), finetune_mode="lp", num_train_epochs=args.epochs,
                feature_cache_dtype=dtype, logging_steps=1,
                per_device_train_batch_size=16, eval_strategy="no", save_strategy="no", load_best_model_at_end=False,
                report_to="none", use_cpu=True, disable_tqdm=True, feature_cache=cache, warmup_epochs=0,
            )
            timer = EpochTimer()
            trainer = CDTMTrainer(model=model, args=targs, train_dataset=data["train"], callbacks=[timer])
            timer._start = time.perf_counter()
            trainer.train()
            key = (cache, dtype) if cache else (False, None)
            results[key] = timer.times
            losses[key] = np.array([e["loss"] for e in trainer.state.log_history if "loss" in e])
            sizes[key] = sum(f.stat().st_size for f in (root / f"out{cache}{dtype}" / "feature_cache").glob("*.npy"))
    half, full, off = (True, "float16"), (True, "float32"), (False, None)
    results[True], results[False] = results[half], results[off]
    first, later = results[True][0], min(results[True][1:])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.backbone}, {args.images} images")
    print(markdown_table(["run", "epoch 1 (s)", "later epoch (s)"], [
        ["cache on (float16)", format_number(first), format_number(later)],
        ["cache off", format_number(results[False][0]), format_number(min(results[False][1:]))],
    ]))
    print(f"ratio later-with-cache / first epoch: {later / first:.3f} (target <= 0.05)")
    print(f"speed-up of a later frozen epoch from the cache: {min(results[False][1:]) / later:.1f}x")
    print(f"cache on disk: float16 {sizes[half] / 2**20:.1f} MiB, float32 {sizes[full] / 2**20:.1f} MiB; "
          f"largest stage-1 loss difference float16 vs float32: {np.abs(losses[half] - losses[full]).max():.2e} "
          "(target <= 1e-3)")


if __name__ == "__main__":
    main()
