"""Files on disk: the one list of image extensions, [`ImageRecord`], path, archive and CSV helpers.

Shared by the medical builders (`builder.py`) and the imagefolder loader.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetLayoutError, MissingColumnError

#: THE list of image file extensions of cdtm_hf (lower case; matched case-insensitively): the still-image formats
#: PIL decodes without extra plugins (a GIF is read as its first frame)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".jpe", ".jfif", ".dib",
                    ".ppm", ".pgm", ".pbm", ".pnm", ".tga")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tar.xz")


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


def unaccepted_files(folder: str | Path) -> list[Path]:
    """The files under `folder` (recursive, sorted) that a loader skips for their extension (hidden files aside)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        found += [Path(dirpath) / n for n in sorted(filenames) if not n.startswith(".") and not is_image_file(n)]
    return found


def extension_counts(paths: Iterable[Path]) -> str:
    """'3 .heic, 1 .txt': the extensions of `paths`, most common first ('no extension' for none)."""
    counts: dict[str, int] = {}
    for p in paths:
        ext = p.suffix.lower() or "no extension"
        counts[ext] = counts.get(ext, 0) + 1
    return ", ".join(f"{n} {ext}" for ext, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


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


def seeded_rng(seed: int, salt: str) -> np.random.Generator:
    """A generator derived from ``seed`` and a string (independent streams per purpose)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *(ord(ch) for ch in salt)])


def extract_archive(archive: str | Path, cache_root: str | Path, expected_size: int | None = None) -> Path:
    """Extract `archive` under `cache_root` atomically and return the folder; a complete earlier extraction is reused.

    The archive is extracted into a temporary folder beside the target and moved into place only when every member
    was read, so an interrupted or failed extraction never leaves a partial folder that a later run would read.
    Tar members go through `tarfile`'s `"data"` filter (no absolute paths, no links out of the folder).

    Raises:
        `IncompleteArchiveError`: the archive is cut short or damaged; the message names it, its size (and the
            `expected_size` when known) and says to download it again.
    """
    import hashlib
    import shutil
    import tarfile
    import tempfile
    import zipfile

    from .errors import IncompleteArchiveError

    archive = Path(archive).resolve()
    stat = archive.stat()
    key = hashlib.sha256(f"{archive}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = Path(cache_root) / "cdtm_extracted" / f"{archive.name}-{key}"
    if target.is_dir():
        return target
    if expected_size is not None and stat.st_size != expected_size:
        raise IncompleteArchiveError(
            f"archive {archive} is incomplete: {stat.st_size} bytes, expected {expected_size}; download it again"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{archive.name}-", suffix=".partial", dir=target.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise zipfile.BadZipFile(f"member {bad} fails its CRC check")
                zf.extractall(partial)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(partial, filter="data")
    except (EOFError, OSError, tarfile.TarError, zipfile.BadZipFile, ValueError) as err:
        shutil.rmtree(partial, ignore_errors=True)
        size = f"{stat.st_size} bytes" + (f", expected {expected_size}" if expected_size else "")
        raise IncompleteArchiveError(
            f"archive {archive} is incomplete or damaged ({size}; {type(err).__name__}: {err}); download it again"
        ) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        os.replace(partial, target)
    except OSError:  # another process finished the same extraction first
        shutil.rmtree(partial, ignore_errors=True)
    return target
