"""DICOM and mask pixels: decoding `.dcm` files (needs pydicom) and telling binary ROI masks from images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .errors import MissingDependencyError


def require_pydicom():
    try:
        import pydicom  # type: ignore
    except ImportError as err:
        raise MissingDependencyError(
            "reading .dcm (DICOM) images needs the optional dependency pydicom (`pip install pydicom`); "
            "alternatively use the JPEG/PNG conversion of the dataset"
        ) from err
    return pydicom


def dicom_to_png_bytes(path: str) -> bytes:
    """Decode a DICOM file to 16-bit grayscale PNG bytes scaled by the image's own range (needs pydicom).

    ``MONOCHROME1`` images are inverted. The 16-bit PNG keeps the dynamic range; training and ``pipeline()`` turn it
    into 8-bit RGB with ``cdtm_hf.core.image_processing_cdtm.to_rgb_image``.
    """
    from PIL import Image

    ds = require_pydicom().dcmread(path)
    arr = ds.pixel_array.astype(np.float64)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = arr.max() - arr
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    img = Image.fromarray((arr * 65535).round().astype(np.uint16))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def read_pixels(path: str | Path) -> np.ndarray:
    """The pixel array of an image or DICOM file (gray: 2-D; colour: averaged to 2-D)."""
    if str(path).lower().endswith(".dcm"):
        array = np.asarray(require_pydicom().dcmread(str(path)).pixel_array)
    else:
        from PIL import Image

        with Image.open(path) as im:
            array = np.asarray(im)
    array = array.astype(np.float64)
    return array.mean(axis=-1) if array.ndim == 3 else array


def mask_score(path: str | Path) -> float:
    """Fraction of pixels at the extremes of the image's own range (within 10 %): about 1 for a binary ROI mask
    (also after JPEG compression), lower for a grayscale image. Unreadable files score ``nan``."""
    try:
        a = read_pixels(path)
    except MissingDependencyError:
        raise
    except Exception:  # an unreadable candidate is handled by the verification that follows
        return float("nan")
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return 1.0
    span = 0.1 * (hi - lo)
    return float(((a <= lo + span) | (a >= hi - span)).mean())
