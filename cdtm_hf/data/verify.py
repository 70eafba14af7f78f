"""Image verification: every file checked up front (threaded), each bad file named, before anything trains."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..logging import progress_bar
from .dicom import require_pydicom
from .errors import CorruptImageError, MissingDependencyError
from .files import ImageRecord
from .manifest import MANIFEST_FILENAME

logger = logging.getLogger(__name__)

VERIFY_MODES = ("fast", "full", "none")
#: how many bad files an error message lists in full (all of them are always in the log / manifest)
MAX_LISTED = 100


MISSING = "missing"


def verify_image(path: str | Path, mode: str = "fast") -> str | None:
    """Return ``None`` if the image file exists and decodes, else a short description of what is wrong.

    The file-exists check is always done (it costs nothing next to training). ``fast``: PNG ->
    ``PIL.Image.verify()`` (walks every chunk and checks its CRC, so truncation and bit rot are caught); JPEG ->
    decode at 1/8 scale (``draft``), which still reads the whole entropy-coded stream; other formats (TIFF, 16-bit,
    float) -> full decode. ``full``: full decode of every image, then the shared decode to 8-bit RGB
    (``cdtm_hf.core.image_processing_cdtm.to_rgb_image``) that training uses. ``none``: the existence check only.
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
    from ..core.image_processing_cdtm import to_rgb_image

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
    bar = progress_bar(total=len(paths), desc=f"Verifying images ({mode})", unit="img")  # cdtm_hf.logging's switch
    with bar:
        if workers > 1 and len(paths) > 64:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                errors = [bar.update() or e for e in pool.map(lambda p: verify_image(p, mode), paths)]
        else:
            errors = [bar.update() or verify_image(p, mode) for p in paths]
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
