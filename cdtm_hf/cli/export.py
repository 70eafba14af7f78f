"""`cdtm-export`: a saved CDTM classifier as ONNX (`cdtm_hf.evaluation.export`), optionally verified against torch.

    cdtm-export <checkpoint_dir> <out.onnx> [--verify] [--opset 18] [--static-batch]
"""

from __future__ import annotations

import argparse

from .boundary import command_line, one_line_errors

__all__ = ["main"]


@command_line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdtm-export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint_dir", help="a directory written by save_pretrained")
    parser.add_argument("output", help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18, the dynamo exporter's own)")
    parser.add_argument("--static-batch", action="store_true", help="fix the batch axis at 1")
    parser.add_argument("--verify", action="store_true",
                        help="compare onnxruntime and torch logits on random images (batch 1 and 3)")
    parser.add_argument("--atol", type=float, default=1e-4, help="tolerance of --verify (default 1e-4)")
    one_line_errors(parser)
    args = parser.parse_args(argv)
    import torch

    from ..core.modeling_cdtm import CDTMForImageClassification
    from ..evaluation.export import export_onnx, verify_onnx
    from ..hub.checkpoint import check_model_source

    check_model_source(args.checkpoint_dir)
    model = CDTMForImageClassification.from_pretrained(args.checkpoint_dir).eval()
    path = export_onnx(model, args.output, opset=args.opset, dynamic_batch=not args.static_batch)
    print(f"wrote {path}")
    if args.verify:
        size = model.config.image_size
        generator = torch.Generator().manual_seed(0)
        for batch in (1,) if args.static_batch else (1, 3):
            pixel_values = torch.randn(batch, 3, size, size, generator=generator)
            try:
                diff = verify_onnx(model, path, pixel_values, atol=args.atol)
            except AssertionError as err:
                raise SystemExit(f"verify failed: {err}") from None
            print(f"verified batch {batch}: max |onnx - torch| = {diff:.3g} <= {args.atol:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
