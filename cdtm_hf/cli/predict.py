"""`cdtm-predict`: classify images with a saved or Hub CDTM model and write one CSV row per image.

    cdtm-predict out/vitb-sft slides/ extra.png --output predictions.csv
    cdtm-predict user/cdtm-vitb16-breakhis @list.txt --output predictions.csv

An input is an image file, a folder (searched recursively for images), or `@file.txt` with one path per line.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ..logging import command_line_logging
from .boundary import command_line, one_line_errors

__all__ = ["main"]


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    """`cdtm-predict MODEL INPUT... --output predictions.csv`; returns 1 when some image could not be read."""
    parser = argparse.ArgumentParser(
        prog="cdtm-predict", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="a saved CDTM model folder or a Hub model id")
    parser.add_argument("inputs", nargs="+", help="image files (DICOM .dcm too), folders (recursive) or @list.txt files")
    parser.add_argument("--output", default="predictions.csv", help="the CSV to write")
    parser.add_argument("--batch_size", type=int, default=16, help="images a forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--threshold", type=float, default=0.5, help="decision threshold of multi-label models")
    parser.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader processes that decode the images while the model runs (0: this process)")
    parser.add_argument("--disable_tqdm", action="store_true", help="no progress bar")
    one_line_errors(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.num_workers < 0:
        parser.error(f"--num_workers must be >= 0, got {args.num_workers}")
    _check_output(args.output)
    command_line_logging(format="%(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    from ..evaluation.predict import collect_images, load_for_inference, predict_images, write_predictions_csv
    from ..hub.checkpoint import check_model_source

    check_model_source(args.model)
    images = collect_images(args.inputs)
    model, processor = load_for_inference(args.model, args.device)
    from ..logging import progress_bars

    with progress_bars(not args.disable_tqdm):
        rows = predict_images(model, processor, images, args.batch_size, args.threshold, args.num_workers)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    path = write_predictions_csv(rows, args.output, names)
    failed = sum(1 for row in rows if row["error"])
    print(f"{len(rows) - failed} images classified, {failed} unreadable: {path}")
    return 1 if failed else 0


def _check_output(output: str) -> None:
    """Refuse an --output that names a folder, or lies in a folder that cannot be created or written, up front."""
    path = Path(output)
    if path.is_dir() or output.endswith(("/", "\\")):
        raise IsADirectoryError(
            f"--output {output} is a folder; name the CSV file to write, e.g. {path / 'predictions.csv'}"
        )
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise PermissionError(f"--output {output} cannot be written: {parent} is not a writable folder")


if __name__ == "__main__":
    raise SystemExit(main())
