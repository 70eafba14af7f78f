"""Images per second of `cdtm-predict` against `pipeline()` on the same folder, and against the forward pass alone.

    python benchmarks/predict.py [--backbone test_vit] [--images 96] [--batch_size 16] [--num_workers 4]

One process, one folder of BreakHis-sized PNGs (700x460) written here, one saved model, interleaved repeats
(medians). Measured:

* `cdtm-predict` (`predict_images`: a DataLoader decoding in `--num_workers` processes), and with 0 workers (the
  one-thread decode of cdtm_hf <= 0.3.0's loop);
* `pipeline("image-classification", pipeline_class=CDTMImageClassificationPipeline)` on the list of paths with the
  same `batch_size` and `num_workers`;
* the forward pass alone on already-decoded batches: the limit neither can pass.

Prints the images/s of each and the ratios (cdtm-predict / pipeline, cdtm-predict / forward, workers / no workers).
"""

import argparse
import os
import tempfile
from pathlib import Path

import _timing
import numpy as np
import torch
from PIL import Image

from cdtm_hf import CDTMConfig, CDTMForImageClassification
from cdtm_hf.core.image_processing_cdtm import CDTMImageProcessor
from cdtm_hf.evaluation.predict import collect_images, load_for_inference, predict_images
from cdtm_hf.evaluation.reporting import markdown_table
from cdtm_hf.logging import progress_bars


def write_folder(root: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("benign" if i % 2 else "malignant")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((460, 700, 3)) * 255).astype("uint8")).save(folder / f"{i}.png")
    return collect_images([root])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="test_vit", help="a timm model name (built without pretrained weights)")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    from transformers import pipeline

    from cdtm_hf.hub.pipeline import CDTMImageClassificationPipeline

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = write_folder(tmp / "images", args.images)
        config = CDTMConfig(backbone=args.backbone, backbone_library="timm", image_size=args.image_size,
                            num_centers=16, num_labels=2, id2label={0: "benign", 1: "malignant"},
                            label2id={"benign": 0, "malignant": 1})
        CDTMForImageClassification(config).save_pretrained(tmp / "model")
        CDTMImageProcessor.from_model_config(config).save_pretrained(tmp / "model")
        model, processor = load_for_inference(str(tmp / "model"), args.device)
        device = next(model.parameters()).device
        classify = pipeline("image-classification", model=model, image_processor=processor,
                            pipeline_class=CDTMImageClassificationPipeline, device=device)
        paths = [str(p) for p in images]
        decoded = [processor.val_transforms(Image.open(p).convert("RGB")) for p in paths]
        batches = [torch.stack(decoded[i : i + args.batch_size]) for i in range(0, len(paths), args.batch_size)]

        def forward():
            with torch.no_grad():
                for batch in batches:
                    model(pixel_values=batch.to(device)).logits.cpu()

        runs = {
            f"cdtm-predict ({args.num_workers} workers)": lambda: predict_images(
                model, processor, images, args.batch_size, num_workers=args.num_workers),
            "cdtm-predict (0 workers)": lambda: predict_images(model, processor, images, args.batch_size,
                                                               num_workers=0),
            f"pipeline() ({args.num_workers} workers)": lambda: classify(paths, batch_size=args.batch_size,
                                                                         num_workers=args.num_workers),
            "forward pass alone": forward,
        }
        with progress_bars(False):
            seconds = _timing.interleaved_medians(runs, repeats=args.repeats)
    rate = {name: args.images / s for name, s in seconds.items()}
    names = list(runs)
    print(f"{args.images} PNGs of 700x460, {args.backbone} at {args.image_size}px, batch {args.batch_size}, "
          f"{device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs; median of {args.repeats}")
    print(markdown_table(["run", "images/s", "s"], [[n, f"{rate[n]:.1f}", f"{seconds[n]:.2f}"] for n in names]))
    predict, predict0, pipe, fwd = (rate[n] for n in names)
    print(f"cdtm-predict / pipeline(): {predict / pipe:.2f}")
    print(f"cdtm-predict / forward pass alone (the limit): {predict / fwd:.2f}")
    print(f"cdtm-predict, {args.num_workers} workers / 0 workers: {predict / predict0:.2f}")


if __name__ == "__main__":
    main()
