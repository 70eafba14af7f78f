"""Inference latency of a CDTM model relative to the bare backbone (+ linear head), batch 8, CPU, one run.

    python benchmarks/overhead.py [--repeats 5] [--batch 8]

Prints the ratio CDTM-model / backbone for ViT-B/16 and ConvNeXt-B at 224 px. Target: <= 1.08x (the FLOPs
predict about 1.06x). Random weights: latency does not depend on the values.
"""

import argparse

import _timing  # noqa: F401  (sets HF_HUB_OFFLINE)
import torch

from cdtm_hf import CDTMConfig, CDTMForImageClassification
from cdtm_hf.evaluation.efficiency import count_flops
from cdtm_hf.evaluation.reporting import markdown_table


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--backbones", nargs="+", default=["vitb16.laion2b", "convnextb.laion2b"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, 224 px")
    rows = []
    x = torch.randn(args.batch, 3, 224, 224)
    for name in args.backbones:
        cdtm = CDTMForImageClassification(CDTMConfig(backbone=name, num_labels=4)).eval()
        bare = CDTMForImageClassification(CDTMConfig(backbone=name, num_labels=4, use_cdtm=False)).eval()
        with torch.inference_mode():
            medians = _timing.interleaved_medians(
                {"bare": lambda: bare(pixel_values=x), "cdtm": lambda: cdtm(pixel_values=x)}, args.repeats
            )
        flops = count_flops(cdtm, 224) / count_flops(bare, 224)
        rows.append([name, f"{medians['bare']:.3f}", f"{medians['cdtm']:.3f}",
                     f"{medians['cdtm'] / medians['bare']:.3f}x", f"{flops:.3f}x"])
    print(markdown_table(["Backbone", "backbone (s)", "CDTM model (s)", "latency ratio", "FLOP ratio"], rows))


if __name__ == "__main__":
    main()
