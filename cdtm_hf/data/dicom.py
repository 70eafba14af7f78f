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


#: what `dicom_pixels` applied, in the words the manifest records (`dicom_luts`)
MODALITY_LUTS = ("modality_lut", "rescale", "none")
VOI_LUTS = ("voi_lut", "window", "none")


def _lut_kinds(ds) -> tuple[str, str]:
    """(modality step, VOI step) a DICOM dataset asks for (header only; see `MODALITY_LUTS`, `VOI_LUTS`)."""
    if ds.get("ModalityLUTSequence"):
        modality = "modality_lut"
    elif "RescaleSlope" in ds or "RescaleIntercept" in ds:
        modality = "rescale"
    else:
        modality = "none"
    if ds.get("VOILUTSequence"):
        voi = "voi_lut"
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        voi = "window"
    else:
        voi = "none"
    return modality, voi


def dicom_pixels(ds) -> tuple[np.ndarray, dict[str, str]]:
    """Display intensities of a DICOM dataset in [0, 1], and which LUTs made them.

    The stored values go through pydicom's modality LUT (`pydicom.pixels.apply_modality_lut`: the Modality LUT
    Sequence, or Rescale Slope / Intercept), then, when the file has one, its VOI LUT or window
    (`pydicom.pixels.apply_voi_lut`, the first view; the VOI LUT Sequence is preferred), whose output range
    (the window's or the LUT's, as the standard defines it) is mapped onto [0, 1]. Without a VOI LUT or window the
    modality values are scaled by the image's own range. ``MONOCHROME1`` images are inverted (dark = high).

    Args:
        ds (`pydicom.Dataset`): a read DICOM file with pixel data.

    Returns:
        `tuple[np.ndarray, dict]`: float64 pixels in [0, 1], and ``{"modality_lut": one of MODALITY_LUTS,
        "voi_lut": one of VOI_LUTS}``.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    modality, voi = _lut_kinds(ds)
    arr = apply_modality_lut(ds.pixel_array, ds)
    if voi == "none":
        arr = np.asarray(arr, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
    else:
        arr = np.asarray(apply_voi_lut(arr, ds, index=0, prefer_lut=True), dtype=np.float64)
        if voi == "voi_lut":
            lo, hi = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
        else:  # the window's output range: what the values far below and far above the window map to
            ends = np.asarray(apply_voi_lut(np.array([-1e30, 1e30]), ds, index=0, prefer_lut=True), np.float64)
            lo, hi = float(ends.min()), float(ends.max())
    arr = np.clip((arr - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(arr)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = 1.0 - arr
    return arr, {"modality_lut": modality, "voi_lut": voi}


def dicom_to_image(path: str):
    """A DICOM file as a 16-bit grayscale `PIL.Image` of its display intensities (`dicom_pixels`; needs pydicom).

    The 16-bit image keeps the dynamic range; training and ``pipeline()`` turn it into 8-bit RGB with
    ``cdtm_hf.core.image_processing_cdtm.to_rgb_image``. `cdtm-predict` classifies it as it is.
    """
    from PIL import Image

    arr, _ = dicom_pixels(require_pydicom().dcmread(path))
    return Image.fromarray((arr * 65535).round().astype(np.uint16))


def dicom_to_png_bytes(path: str) -> bytes:
    """`dicom_to_image` as lossless 16-bit PNG bytes: what the builders store for a ``.dcm`` file."""
    buf = io.BytesIO()
    dicom_to_image(path).save(buf, format="PNG")
    return buf.getvalue()


def dicom_lut_counts(paths) -> dict[str, dict[str, int]]:
    """How many of the ``.dcm`` files among `paths` go through each modality and VOI step (headers only), e.g.
    ``{"modality_lut": {"rescale": 10}, "voi_lut": {"window": 7, "none": 3}}``; ``{}`` when there is none.
    A builder records it in the split manifest as ``dicom_luts``."""
    counts: dict[str, dict[str, int]] = {}
    dcm = [str(p) for p in paths if str(p).lower().endswith(".dcm")]
    if not dcm:
        return counts
    pydicom = require_pydicom()
    for path in dcm:
        kinds = _lut_kinds(pydicom.dcmread(path, stop_before_pixels=True))
        for key, kind in zip(("modality_lut", "voi_lut"), kinds):
            counts.setdefault(key, {}).setdefault(kind, 0)
            counts[key][kind] += 1
    return counts


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
