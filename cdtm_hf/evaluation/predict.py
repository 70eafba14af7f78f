"""Classify images with a saved or Hub CDTM model and write one CSV row per image (the library of `cdtm-predict`).

    cdtm-predict out/vitb-sft slides/ extra.png --output predictions.csv
    cdtm-predict user/cdtm-vitb16-breakhis @list.txt --output predictions.csv

An input is an image file, a folder (searched recursively for images), or `@file.txt` with one path per line.
DICOM files (`.dcm`, needs pydicom) are decoded as training decodes them: pydicom's modality and VOI LUTs, then the
16-bit gray image the builders store (`cdtm_hf.data.dicom.dicom_to_image`), then the model's preprocessing.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from ..data import IMAGE_EXTENSIONS
from ..data.dicom import dicom_to_image, require_pydicom
from ..core.image_processing_cdtm import CDTMImageProcessor, to_rgb_image
from ..core.modeling_cdtm import CDTMForImageClassification
from ..logging import progress_bar

logger = logging.getLogger(__name__)

#: what a folder is searched for: the image formats training reads, and DICOM
PREDICT_EXTENSIONS = (*IMAGE_EXTENSIONS, ".dcm")

__all__ = ["PREDICT_EXTENSIONS", "collect_images", "load_for_inference", "predict_images", "write_predictions_csv"]


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """The image files named by `inputs`, in order: files as given, folders searched recursively (sorted), and
    `@list.txt` files read one path a line (blank lines and `#` comments skipped).

    Args:
        inputs (`Iterable[str | Path]`): files, folders or `@` lists.

    Raises a `FileNotFoundError` naming an input that does not exist, a `ValueError` when nothing is an image, and a
    `MissingDependencyError` when there are `.dcm` files but pydicom is not installed (before any model is loaded).
    """
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        if text.startswith("@"):
            listed = Path(text[1:])
            lines = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines()]
            found += collect_images([line for line in lines if line and not line.startswith("#")])
            continue
        path = Path(text)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PREDICT_EXTENSIONS)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{text!r} is neither an image file, a folder nor an @list file")
    if not found:
        looked_for = ", ".join(PREDICT_EXTENSIONS)
        raise ValueError(f"no images found in {', '.join(map(str, inputs))} (looked for {looked_for})")
    if any(p.suffix.lower() == ".dcm" for p in found):
        require_pydicom()
    return found


def load_for_inference(
    model_name_or_path: str, device: str | torch.device | None = None
) -> tuple[CDTMForImageClassification, CDTMImageProcessor]:
    """The model (eval mode, on `device`, default CUDA when available) and its saved preprocessing.

    Args:
        model_name_or_path (`str`): a folder written by `run_finetuning` / `save_pretrained`, or a Hub model id.
        device (`str` or `torch.device`, *optional*): where the model runs.
    """
    model = CDTMForImageClassification.from_pretrained(model_name_or_path)
    try:
        processor = CDTMImageProcessor.from_pretrained(model_name_or_path)
    except OSError:  # a checkpoint saved without its preprocessor: the backbone's own data config
        processor = CDTMImageProcessor.from_model_config(model.config)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.to(device).eval(), processor


def _decode(path: Path, transform) -> tuple[torch.Tensor | None, str | None]:
    try:
        opened = dicom_to_image(str(path)) if path.suffix.lower() == ".dcm" else PIL.Image.open(path)
        with opened as image:
            return transform(to_rgb_image(image)), None
    except Exception as error:  # noqa: BLE001 - any unreadable file becomes a named row, not a crash
        return None, f"{type(error).__name__}: {error}"


class _ImageFiles(torch.utils.data.Dataset):
    """The image files, decoded and preprocessed in the DataLoader's workers; an unreadable one yields its error."""

    def __init__(self, images: Sequence[Path], transform):
        self.images, self.transform = list(images), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        return (i, *_decode(self.images[i], self.transform))


def _collate(items: list[tuple[int, torch.Tensor | None, str | None]]):
    ok = [tensor for _, tensor, error in items if error is None]
    return [i for i, _, _ in items], (torch.stack(ok) if ok else None), [error for _, _, error in items]


def predict_images(
    model: CDTMForImageClassification,
    processor: CDTMImageProcessor,
    images: Sequence[Path],
    batch_size: int = 16,
    threshold: float = 0.5,
    num_workers: int = 0,
) -> list[dict[str, Any]]:
    """One dict per image: `path`, `label`, `score`, the probability of every class and `error`.

    Single-label models give softmax probabilities and the top class; multi-label models give sigmoid
    probabilities and every class at or above `threshold` (joined by `;`). An image that cannot be decoded gets
    an empty label and its error, and the others are still classified. The images are decoded and preprocessed by a
    `torch.utils.data.DataLoader` with `num_workers` worker processes while the model runs, under a progress bar
    (`cdtm_hf.logging.progress_bar`).

    Args:
        model (`CDTMForImageClassification`): in eval mode (see `load_for_inference`).
        processor (`CDTMImageProcessor`): the model's preprocessing.
        images (`Sequence[Path]`): image files.
        batch_size (`int`): images a forward pass.
        threshold (`float`): multi-label decision threshold.
        num_workers (`int`): DataLoader worker processes that decode the images (0: in this process).
    """
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    multi_label = model.config.problem_type == "multi_label_classification"
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(
        _ImageFiles(images, processor.val_transforms), batch_size=batch_size, shuffle=False, collate_fn=_collate,
        num_workers=num_workers, pin_memory=device.type == "cuda",
    )
    rows: list[dict[str, Any]] = []
    with progress_bar(total=len(images), desc="Classifying images", unit="img") as bar:
        for indices, pixel_values, errors in loader:
            probs = iter(())
            if pixel_values is not None:
                with torch.no_grad():
                    logits = model(pixel_values=pixel_values.to(device, non_blocking=True)).logits.float()
                    logits = logits / float(getattr(model.config, "calibration_temperature", None) or 1.0)  # issue 19
                probs = iter((logits.sigmoid() if multi_label else logits.softmax(-1)).cpu().numpy())
            for i, error in zip(indices, errors):
                path = images[i]
                row: dict[str, Any] = {"path": str(path), "label": "", "score": "", "error": error or ""}
                if error is None:
                    p = next(probs)
                    chosen = [k for k in range(len(names)) if p[k] >= threshold] if multi_label else [int(np.argmax(p))]
                    row.update(label=";".join(names[k] for k in chosen), score=float(p[chosen].max()) if chosen else "")
                    row.update({f"prob_{name}": float(value) for name, value in zip(names, p)})
                else:
                    logger.warning("Could not classify %s: %s", path, error)
                rows.append(row)
            bar.update(len(indices))
    return rows


def write_predictions_csv(rows: Sequence[dict[str, Any]], path: str | Path, names: Sequence[str]) -> Path:
    """Write `rows` (from `predict_images`) as CSV: path, label, score, prob_<class>..., error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["path", "label", "score", *(f"prob_{name}" for name in names), "error"]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path
