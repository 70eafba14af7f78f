"""Shared low-level machinery of the medical image builders and the imagefolder loader.

The one list of image extensions (:data:`IMAGE_EXTENSIONS`), the errors, [`ImageRecord`], path and CSV
helpers, image verification (every file checked up front, threaded, each bad file named) and the split manifest
writer. The builder base class lives in ``builder.py``.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MANIFEST_FILENAME = "split_manifest.json"
#: THE list of image file extensions of cdtm_hf (lower case; matched case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tar.xz")
VERIFY_MODES = ("fast", "full", "none")
#: how many bad files an error message lists in full (all of them are always in the log / manifest)
MAX_LISTED = 100

__all__ = [
    "CorruptImageError",
    "DataDirRequiredError",
    "DatasetLayoutError",
    "IMAGE_EXTENSIONS",
    "ImageRecord",
    "MANIFEST_FILENAME",
    "MedicalDatasetError",
    "MissingColumnError",
    "MissingDependencyError",
    "VERIFY_MODES",
    "read_manifest",
    "verify_image",
    "verify_records",
    "write_manifest",
]


# --------------------------------------------------------------------------- errors
class MedicalDatasetError(Exception):
    """Base class of the errors raised by the medical dataset builders."""


class DatasetLayoutError(MedicalDatasetError, ValueError):
    """The files on disk do not follow the expected layout (the message shows it)."""


class MissingColumnError(DatasetLayoutError):
    """A CSV lacks a required column (the message names the column and the CSV)."""


class CorruptImageError(MedicalDatasetError, ValueError):
    """One or more image files are missing or cannot be decoded (the message names them)."""


class DataDirRequiredError(MedicalDatasetError, FileNotFoundError):
    """No usable ``data_dir``; the message says where to get the archive."""


class MissingDependencyError(MedicalDatasetError, ImportError):
    """An optional dependency (e.g. pydicom for ``.dcm`` files) is not installed."""


# --------------------------------------------------------------------------- records
@dataclass
class ImageRecord:
    """One image found by a builder's ``_scan``.

    Attributes:
        path (`str`): absolute path of the image file.
        relpath (`str`): POSIX path relative to the dataset root (manifest key, ``file`` column).
        label (`int` or `list`): class index (single-label) or multi-hot float list (multi-label).
        group (`str`): group id used by the ``patient`` strategy (patient / lesion id, or the image itself).
        official_split (`str`, *optional*): ``"train"`` / ``"test"`` for sets with an official split.
        extra (`dict`): values of the builder's extra feature columns.
        has_patient_id (`bool`): False when ``group`` is a per-image fallback, not a real patient/lesion id.
    """

    path: str
    relpath: str
    label: int | list
    group: str
    official_split: str | None = None
    extra: dict = field(default_factory=dict)
    has_patient_id: bool = True


# --------------------------------------------------------------------------- helpers
def posix_relpath(path: str | Path, root: str | Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def clean_rel(value: object) -> str:
    """A path from a CSV as a clean relative POSIX path (backslashes, leading ``./`` and outer slashes removed)."""
    rel = str(value).strip().replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel.strip("/")


def is_archive(path: str | Path) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def is_image_file(name: str | Path) -> bool:
    """Whether a file name has one of :data:`IMAGE_EXTENSIONS` (and is no macOS ``._`` resource fork)."""
    name = Path(name).name
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("._")


def iter_files(root: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> Iterator[Path]:
    """Sorted recursive listing of files with one of ``extensions`` (case-insensitive)."""
    exts = tuple(e.lower() for e in extensions)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(exts) and not name.startswith("._"):
                yield Path(dirpath) / name


def find_dir(root: str | Path, predicate: Callable[[Path], bool], max_depth: int = 4) -> Path | None:
    """Breadth-first search (sorted, deterministic) for a directory satisfying ``predicate``."""
    level = [Path(root)]
    for _ in range(max_depth + 1):
        nxt: list[Path] = []
        for d in level:
            if predicate(d):
                return d
            try:
                nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(("__MACOSX", "."))))
            except OSError:
                continue
        level = nxt
    return None


def child_dirs_ci(directory: Path) -> dict[str, Path]:
    """Sub-directories keyed by lower-cased name."""
    try:
        return {p.name.lower(): p for p in directory.iterdir() if p.is_dir()}
    except OSError:
        return {}


def find_file(root: str | Path, name: str, max_depth: int = 3) -> Path | None:
    """First ``name`` (case-insensitive) found breadth-first under ``root``."""

    def match(p: Path) -> bool:
        return p.name.lower() == name.lower() and p.is_file()

    hit = find_dir(root, lambda d: any(match(p) for p in _safe_iterdir(d)), max_depth)
    if hit is None:
        return None
    return next(p for p in sorted(_safe_iterdir(hit)) if match(p))


def _safe_iterdir(d: Path) -> list[Path]:
    try:
        return list(d.iterdir())
    except OSError:
        return []


def read_csv(path: str | Path, required: Iterable[str], **kwargs):
    """Read a CSV with pandas and check its columns (raises [`MissingColumnError`])."""
    import pandas as pd

    try:
        df = pd.read_csv(path, **kwargs)
    except Exception as err:  # pandas raises several types for unreadable files
        raise DatasetLayoutError(f"cannot read CSV {path}: {err}") from err
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise MissingColumnError(
            f"CSV {path} is missing required column(s) {missing}; found columns {list(df.columns)}"
        )
    return df


def read_manifest(path: str | Path) -> dict:
    """Load a ``split_manifest.json`` written by a builder or by ``load_imagefolder``."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_manifest(manifest: dict, output_dir: str | Path) -> Path:
    """Write a split manifest as ``<output_dir>/split_manifest.json`` and return its path.

    Args:
        manifest (`dict`): the manifest (e.g. the second value returned by ``load_imagefolder``).
        output_dir (`str` or `os.PathLike`): the folder to write into (created if needed).
    """
    os.makedirs(output_dir, exist_ok=True)
    path = Path(output_dir) / MANIFEST_FILENAME
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return path


def seeded_rng(seed: int, salt: str) -> np.random.Generator:
    """A generator derived from ``seed`` and a string (independent streams per purpose)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *(ord(ch) for ch in salt)])


# --------------------------------------------------------------------------- verification
def require_pydicom():
    try:
        import pydicom  # type: ignore
    except ImportError as err:
        raise MissingDependencyError(
            "reading .dcm (DICOM) images needs the optional dependency pydicom (`pip install pydicom`); "
            "alternatively use the JPEG/PNG conversion of the dataset"
        ) from err
    return pydicom


MISSING = "missing"


def verify_image(path: str | Path, mode: str = "fast") -> str | None:
    """Return ``None`` if the image file exists and decodes, else a short description of what is wrong.

    The file-exists check is always done (it costs nothing next to training). ``fast``: PNG ->
    ``PIL.Image.verify()`` (walks every chunk and checks its CRC, so truncation and bit rot are caught); JPEG ->
    decode at 1/8 scale (``draft``), which still reads the whole entropy-coded stream; other formats (TIFF, 16-bit,
    float) -> full decode. ``full``: full decode of every image, then the shared decode to 8-bit RGB
    (``cdtm_hf.image_processing_cdtm.to_rgb_image``) that training uses. ``none``: the existence check only.
    16-bit and float images (PIL modes ``I;16``, ``I``, ``F``) are valid.

    Args:
        path (`str` or `os.PathLike`): the image file (``.dcm`` needs pydicom).
        mode (`str`): ``"fast"``, ``"full"`` or ``"none"``.
    """
    path = str(path)
    if not os.path.isfile(path):
        return f"{MISSING}: no such file"
    if mode == "none":
        return None
    try:
        if path.lower().endswith(".dcm"):
            array = require_pydicom().dcmread(path).pixel_array
            if mode == "full":
                _to_rgb(array)
            return None
        from PIL import Image

        with Image.open(path) as im:
            fmt = im.format
            if mode == "fast" and fmt == "PNG":
                im.verify()
            else:
                if mode == "fast" and fmt == "JPEG":
                    im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
                if mode == "full":
                    _to_rgb(im)
        return None
    except MissingDependencyError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ...
        return f"{type(err).__name__}: {err}"


def _to_rgb(image: Any):
    from ..image_processing_cdtm import to_rgb_image

    return to_rgb_image(image)


def _bad_files_message(bad: list[dict], what: str) -> str:
    listing = "; ".join(f"{b['abspath']} ({b['reason']})" for b in bad[:MAX_LISTED])
    more = f" and {len(bad) - MAX_LISTED} more (all listed in the log)" if len(bad) > MAX_LISTED else ""
    return f"{len(bad)} {what}: {listing}{more}"


def verify_records(
    records: list[ImageRecord],
    mode: str,
    skip_corrupt: bool,
    num_workers: int | None = None,
    layout: str | None = None,
) -> tuple[list[ImageRecord], list[dict]]:
    """Check that every image exists and (unless ``mode="none"``) decodes; raise, or drop and list the bad ones.

    Args:
        records (`list[ImageRecord]`): the images to check.
        mode (`str`): one of :data:`VERIFY_MODES`; ``"none"`` skips the decode, never the file-exists check.
        skip_corrupt (`bool`): drop bad files (each named by ``logger.warning``) instead of raising.
        num_workers (`int`, *optional*): verification threads (default ``min(8, cpu_count)``).
        layout (`str`, *optional*): the layout that was found, quoted when files are missing.

    Returns:
        `tuple`: the good records, and one ``{"path": relpath, "reason": ...}`` per dropped file.

    Raises:
        CorruptImageError: some files are missing or unreadable and ``skip_corrupt`` is False; the message names
            every bad file (up to :data:`MAX_LISTED`) and the remedy.
    """
    if mode not in VERIFY_MODES:
        raise ValueError(f"verify_images must be one of {VERIFY_MODES}, got {mode!r}")
    if not records:
        return records, []
    workers = num_workers or min(8, os.cpu_count() or 1)
    paths = [r.path for r in records]
    if workers > 1 and len(paths) > 64:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            errors = list(pool.map(lambda p: verify_image(p, mode), paths))
    else:
        errors = [verify_image(p, mode) for p in paths]
    bad = [{"path": r.relpath, "abspath": r.path, "reason": e} for r, e in zip(records, errors) if e is not None]
    if not bad:
        return records, []
    missing = [b for b in bad if b["reason"].startswith(MISSING)]
    corrupt = [b for b in bad if not b["reason"].startswith(MISSING)]
    if not skip_corrupt:
        parts = []
        if missing:
            found = f" (layout found: {layout})" if layout else ""
            parts.append(
                _bad_files_message(missing, "image file(s) listed by the dataset do not exist")
                + f". Check that data_dir points at the complete, unrenamed download{found}"
            )
        if corrupt:
            parts.append(
                _bad_files_message(corrupt, "unreadable (corrupt or truncated) image file(s)") + ". Re-download them"
            )
        raise CorruptImageError(
            ". ".join(parts) + f"; or pass skip_corrupt=True (--skip_corrupt) to drop them (each is then listed in "
            f"{MANIFEST_FILENAME})."
        )
    for b in bad:
        logger.warning("Skipping image %s: %s", b["abspath"], b["reason"])
    logger.warning("Skipped %d missing or unreadable image file(s) of %d", len(bad), len(records))
    keep = [r for r, e in zip(records, errors) if e is None]
    return keep, [{"path": b["path"], "reason": b["reason"]} for b in bad]


# --------------------------------------------------------------------------- DICOM and masks
def dicom_to_png_bytes(path: str) -> bytes:
    """Decode a DICOM file to 16-bit grayscale PNG bytes scaled by the image's own range (needs pydicom).

    ``MONOCHROME1`` images are inverted. The 16-bit PNG keeps the dynamic range; training and ``pipeline()`` turn it
    into 8-bit RGB with ``cdtm_hf.image_processing_cdtm.to_rgb_image``.
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
