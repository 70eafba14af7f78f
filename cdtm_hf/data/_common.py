"""Shared machinery of the medical image builders.

Every dataset builder subclasses :class:`MedicalImageBuilder` and only implements

* ``_class_names()``   -- the label names of the active config,
* ``_scan(dl_manager)`` -- locate the data and return a list of :class:`ImageRecord`,
* optionally ``_extra_features()`` and ``_postprocess(records)``.

This module does the rest: ``data_dir`` / archive resolution (archives are extracted
into the ``datasets`` cache, never in place), image verification (with opt-in
skipping of corrupt files), the split (``paper`` / ``patient`` / ``official``), the
``split_manifest.json`` and example generation with lazily decoded ``datasets.Image``
features.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import datasets
import numpy as np

from .splits import (
    SPLIT_NAMES,
    SPLIT_STRATEGIES,
    assignment_from_indices,
    normalize_ratios,
    patient_grouped_split,
    stratified_split,
)

logger = logging.getLogger(__name__)

MANIFEST_FILENAME = "split_manifest.json"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tar.xz")
VERIFY_MODES = ("fast", "full", "none")

__all__ = [
    "CorruptImageError",
    "DataDirRequiredError",
    "DatasetLayoutError",
    "ImageRecord",
    "MANIFEST_FILENAME",
    "MedicalDatasetError",
    "MedicalImageBuilder",
    "MedicalImageConfig",
    "MissingColumnError",
    "MissingDependencyError",
    "read_manifest",
    "verify_image",
]


# --------------------------------------------------------------------------- errors
class MedicalDatasetError(Exception):
    """Base class of the errors raised by the medical dataset builders."""


class DatasetLayoutError(MedicalDatasetError, ValueError):
    """The files on disk do not follow the expected layout (the message shows it)."""


class MissingColumnError(DatasetLayoutError):
    """A CSV lacks a required column (the message names the column and the CSV)."""


class CorruptImageError(MedicalDatasetError, ValueError):
    """One or more image files cannot be decoded (the message names them)."""


class DataDirRequiredError(MedicalDatasetError, FileNotFoundError):
    """No usable ``data_dir``; the message says where to get the archive."""


class MissingDependencyError(MedicalDatasetError, ImportError):
    """An optional dependency (e.g. pydicom for ``.dcm`` files) is not installed."""


# --------------------------------------------------------------------------- records
@dataclass
class ImageRecord:
    """One image found by a builder's ``_scan``.

    Attributes:
        path: absolute path of the image file.
        relpath: POSIX path relative to the dataset root (manifest key, ``file`` column).
        label: class index (single-label) or multi-hot float list (multi-label).
        group: group id used by the ``patient`` strategy (patient / lesion id).
        official_split: ``"train"`` / ``"test"`` for sets with an official split.
        extra: values of the builder's extra feature columns.
    """

    path: str
    relpath: str
    label: Union[int, list]
    group: str
    official_split: Optional[str] = None
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers
def posix_relpath(path: Union[str, Path], root: Union[str, Path]) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def is_archive(path: Union[str, Path]) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def iter_files(root: Union[str, Path], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> Iterator[Path]:
    """Sorted recursive listing of files with one of ``extensions`` (case-insensitive)."""
    exts = tuple(e.lower() for e in extensions)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(exts) and not name.startswith("._"):
                yield Path(dirpath) / name


def find_dir(root: Union[str, Path], predicate: Callable[[Path], bool], max_depth: int = 4) -> Optional[Path]:
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


def find_file(root: Union[str, Path], name: str, max_depth: int = 3) -> Optional[Path]:
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


def read_csv(path: Union[str, Path], required: Iterable[str], **kwargs):
    """Read a CSV with pandas and check its columns (raises :class:`MissingColumnError`)."""
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


def read_manifest(path: Union[str, Path]) -> dict:
    """Load a ``split_manifest.json`` written by a builder."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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


def verify_image(path: Union[str, Path], mode: str = "fast") -> Optional[str]:
    """Return ``None`` if the image decodes, else a short error description.

    ``fast``: PNG -> ``PIL.Image.verify()`` (walks every chunk and checks its CRC, so
    truncation and bit rot are caught); JPEG -> decode at 1/8 scale (``draft``), which
    still reads the whole entropy-coded stream; other formats -> full decode.
    ``full``: full decode of every image.  ``none``: no check.
    """
    if mode == "none":
        return None
    path = str(path)
    try:
        if path.lower().endswith(".dcm"):
            require_pydicom().dcmread(path).pixel_array  # noqa: B018 - decoding is the check
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
        return None
    except MissingDependencyError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ...
        return f"{type(err).__name__}: {err}"


def verify_records(
    records: list[ImageRecord],
    mode: str,
    skip_corrupt: bool,
    num_workers: Optional[int] = None,
) -> tuple[list[ImageRecord], list[dict]]:
    """Check every image; raise :class:`CorruptImageError` or drop the bad ones."""
    if mode not in VERIFY_MODES:
        raise ValueError(f"verify_images must be one of {VERIFY_MODES}, got {mode!r}")
    if mode == "none" or not records:
        return records, []
    workers = num_workers or min(8, os.cpu_count() or 1)
    paths = [r.path for r in records]
    if workers > 1 and len(paths) > 64:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            errors = list(pool.map(lambda p: verify_image(p, mode), paths))
    else:
        errors = [verify_image(p, mode) for p in paths]
    bad = [{"file": r.relpath, "path": r.path, "error": e} for r, e in zip(records, errors) if e is not None]
    if not bad:
        return records, []
    listing = "; ".join(f"{b['path']} ({b['error']})" for b in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    if not skip_corrupt:
        raise CorruptImageError(
            f"{len(bad)} unreadable (missing, corrupt or truncated) image file(s): {listing}{more}. "
            "Re-download them, or pass skip_corrupt=True to skip unreadable images "
            f"(they are then listed in {MANIFEST_FILENAME})."
        )
    logger.warning("Skipping %d unreadable image file(s): %s%s", len(bad), listing, more)
    keep = [r for r, e in zip(records, errors) if e is None]
    return keep, [{"file": b["file"], "error": b["error"]} for b in bad]


def dicom_to_png_bytes(path: str) -> bytes:
    """Decode a DICOM file to (8 or 16 bit) grayscale PNG bytes (needs pydicom)."""
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


# --------------------------------------------------------------------------- config / builder
@dataclass
class MedicalImageConfig(datasets.BuilderConfig):
    """Options shared by all medical image builders.

    Attributes:
        split_strategy: ``"patient"`` (grouped, recommended), ``"paper"`` (random
            stratified, as in the paper) or ``"official"`` (CheXpert, CBIS-DDSM).
        seed: split seed (also used by seeded subsampling, e.g. HCRF balancing).
        ratios: ``(train, validation, test)`` proportions; ``None`` = the builder default.
        skip_corrupt: skip undecodable images (listed in the manifest) instead of raising.
        verify_images: ``"fast"`` (default), ``"full"`` (decode everything) or ``"none"``.
        embed_images: store image bytes in the Arrow files instead of file paths
            (self-contained cache, larger; ``.dcm`` files are always embedded as PNG).
        num_workers: threads used to verify images (default ``min(8, cpu_count)``).
    """

    version: Optional[Union[datasets.Version, str]] = datasets.Version("1.0.0")
    split_strategy: str = "patient"
    seed: int = 42
    ratios: Optional[Sequence[float]] = None
    skip_corrupt: bool = False
    verify_images: str = "fast"
    embed_images: bool = False
    num_workers: Optional[int] = None


class MedicalImageBuilder(datasets.GeneratorBasedBuilder):
    """Base class: see the module docstring.  Subclasses set the class attributes below."""

    BUILDER_CONFIG_CLASS = MedicalImageConfig
    VERSION = datasets.Version("1.0.0")

    #: short name used in the manifest and in messages.
    DISPLAY_NAME = "dataset"
    DESCRIPTION = ""
    HOMEPAGE = ""
    CITATION = ""
    LICENSE = ""
    #: where to get the data; shown when ``data_dir`` is missing or unusable.
    SOURCE_HELP = ""
    #: the expected on-disk layout; shown in :class:`DatasetLayoutError` messages.
    EXPECTED_LAYOUT = ""
    #: public source URLs (``None`` = no public URL, ``data_dir`` required); builders that
    #: have them download them in ``_scan`` (via ``self._download``) when ``data_dir`` is None.
    DOWNLOAD_URLS: Optional[dict[str, str]] = None
    DEFAULT_RATIOS: tuple[float, float, float] = (3, 1, 1)
    HAS_OFFICIAL_SPLIT = False
    #: False when the source has no patient ids (groups are then single images).
    HAS_PATIENT_IDS = True
    MULTI_LABEL = False

    def __init__(self, *args, data_dir: Optional[Union[str, os.PathLike]] = None, **kwargs):
        if data_dir is not None:
            data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
        super().__init__(*args, data_dir=data_dir, **kwargs)
        self._validate_config()

    # ----- subclass hooks
    def _class_names(self) -> list[str]:
        raise NotImplementedError

    def _extra_features(self) -> dict[str, Any]:
        return {}

    def _scan(self, dl_manager: datasets.DownloadManager) -> list[ImageRecord]:
        raise NotImplementedError

    def _postprocess(self, records: list[ImageRecord]) -> tuple[list[ImageRecord], dict]:
        """Filter/subsample after verification; returns (records, manifest notes).

        ``_scan`` may also record manifest notes in ``self.scan_notes``."""
        return records, {}

    def _has_patient_ids(self) -> bool:
        """Whether ``ImageRecord.group`` holds real patient (or lesion) ids."""
        return self.HAS_PATIENT_IDS

    # ----- public helpers
    @property
    def class_names(self) -> list[str]:
        return list(self._class_names())

    @property
    def ratios(self) -> tuple[float, float, float]:
        return normalize_ratios(self.config.ratios if self.config.ratios is not None else self.DEFAULT_RATIOS)

    @property
    def label_column(self) -> str:
        return "labels" if self.MULTI_LABEL else "label"

    @property
    def manifest_path(self) -> str:
        """Path of ``split_manifest.json`` in the prepared dataset directory."""
        return os.path.join(self._output_dir, MANIFEST_FILENAME)

    @property
    def supported_strategies(self) -> tuple[str, ...]:
        return SPLIT_STRATEGIES if self.HAS_OFFICIAL_SPLIT else tuple(s for s in SPLIT_STRATEGIES if s != "official")

    def _validate_config(self) -> None:
        cfg = self.config
        if cfg.split_strategy not in SPLIT_STRATEGIES:
            raise ValueError(f"split_strategy must be one of {SPLIT_STRATEGIES}, got {cfg.split_strategy!r}")
        if cfg.split_strategy not in self.supported_strategies:
            raise ValueError(
                f"split_strategy {cfg.split_strategy!r} is not available for {self.DISPLAY_NAME} "
                f"(it has no official split); choose from {self.supported_strategies}"
            )
        if cfg.verify_images not in VERIFY_MODES:
            raise ValueError(f"verify_images must be one of {VERIFY_MODES}, got {cfg.verify_images!r}")
        ratios = self.ratios
        if any(r <= 0 for r in ratios):
            raise ValueError(f"all three ratios must be positive for a builder, got {cfg.ratios!r}")

    # ----- data location
    def _data_root(self, dl_manager: datasets.DownloadManager) -> Path:
        """``data_dir`` as a directory; archives are extracted into the cache."""
        data_dir = self.config.data_dir
        if data_dir is None:
            raise DataDirRequiredError(
                f"{self.DISPLAY_NAME} needs data_dir=... (no public download URL). {self.SOURCE_HELP}"
            )
        path = Path(data_dir)
        if not path.exists():
            raise DataDirRequiredError(f"data_dir {str(path)!r} does not exist. {self.SOURCE_HELP}")
        if path.is_file():
            if not is_archive(path):
                raise DatasetLayoutError(
                    f"data_dir {str(path)!r} is a file but not an archive ({', '.join(ARCHIVE_SUFFIXES)}). "
                    f"Expected layout: {self.EXPECTED_LAYOUT}"
                )
            return self._extract(dl_manager, path)
        return path

    def _download(self, dl_manager: datasets.DownloadManager, urls: Any) -> Any:
        """``dl_manager.download_and_extract`` with an error that says what to do instead."""
        try:
            return dl_manager.download_and_extract(urls)
        except Exception as err:
            raise DataDirRequiredError(
                f"could not download {self.DISPLAY_NAME} from {urls} ({type(err).__name__}: {err}). "
                f"Download it manually and pass data_dir=... {self.SOURCE_HELP}"
            ) from err

    def _extract(self, dl_manager: datasets.DownloadManager, archive: Union[str, Path]) -> Path:
        logger.info("Extracting %s into the datasets cache", archive)
        return Path(dl_manager.extract(str(archive)))

    def _dir_or_archive(self, dl_manager, parent: Path, name: str) -> Optional[Path]:
        """``parent/name`` as a directory, extracting ``parent/name.<archive>`` if needed."""
        d = parent / name
        if d.is_dir():
            return d
        for suffix in ARCHIVE_SUFFIXES:
            archive = parent / f"{name}{suffix}"
            if archive.is_file():
                extracted = self._extract(dl_manager, archive)
                return extracted / name if (extracted / name).is_dir() else extracted
        return None

    def _layout_error(self, problem: str) -> DatasetLayoutError:
        return DatasetLayoutError(f"{self.DISPLAY_NAME}: {problem}. Expected layout: {self.EXPECTED_LAYOUT}")

    # ----- datasets API
    def _info(self) -> datasets.DatasetInfo:
        names = self._class_names()
        if self.MULTI_LABEL:
            label = datasets.List(datasets.Value("float32"), length=len(names))
        else:
            label = datasets.ClassLabel(names=list(names))
        features = datasets.Features(
            {
                "image": datasets.Image(),
                self.label_column: label,
                "patient_id": datasets.Value("string"),
                "file": datasets.Value("string"),
                **self._extra_features(),
            }
        )
        description = self.DESCRIPTION
        if self.MULTI_LABEL:
            description += f"\n`labels` is a multi-hot float32 vector over: {', '.join(names)}."
        return datasets.DatasetInfo(
            description=description,
            features=features,
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            license=self.LICENSE,
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        cfg = self.config
        self.scan_notes: dict[str, Any] = {}
        records = self._scan(dl_manager)
        if not records:
            raise self._layout_error("no images found")
        dupes = [p for p, c in Counter(r.relpath for r in records).items() if c > 1]
        if dupes:
            raise self._layout_error(f"{len(dupes)} image(s) listed more than once, e.g. {dupes[:3]}")
        records.sort(key=lambda r: r.relpath)
        records, skipped = verify_records(records, cfg.verify_images, cfg.skip_corrupt, cfg.num_workers)
        records, post_notes = self._postprocess(records)
        notes = {**self.scan_notes, **post_notes}
        if not records:
            raise self._layout_error("no usable images left after verification/filtering")
        assignment = self._assign_splits(records)
        self._write_manifest(records, assignment, skipped, notes)
        by_split: dict[str, list[ImageRecord]] = {s: [] for s in SPLIT_NAMES}
        for rec, split in zip(records, assignment):
            by_split[split].append(rec)
        return [datasets.SplitGenerator(name=s, gen_kwargs={"records": by_split[s]}) for s in SPLIT_NAMES]

    def _generate_examples(self, records: list[ImageRecord]):
        embed = self.config.embed_images
        label_col = self.label_column
        for idx, rec in enumerate(records):
            if rec.path.lower().endswith(".dcm"):
                image: Any = {"path": Path(rec.relpath).with_suffix(".png").name, "bytes": dicom_to_png_bytes(rec.path)}
            elif embed:
                with open(rec.path, "rb") as f:
                    image = {"path": Path(rec.path).name, "bytes": f.read()}
            else:
                image = rec.path
            yield idx, {"image": image, label_col: rec.label, "patient_id": rec.group, "file": rec.relpath, **rec.extra}

    # ----- splitting
    def _assign_splits(self, records: list[ImageRecord]) -> list[str]:
        cfg = self.config
        ratios = self.ratios
        names = self._class_names()
        labels = [r.label for r in records]
        groups = [r.group for r in records]
        n = len(records)
        strategy = cfg.split_strategy
        if strategy == "patient" and not self._has_patient_ids():
            logger.warning(
                "%s provides no patient ids: the 'patient' split falls back to one group per image "
                "(an image-level stratified split)",
                self.DISPLAY_NAME,
            )
        if strategy == "paper":
            if self.MULTI_LABEL:  # random split, multi-label stratified by the greedy splitter
                idx = patient_grouped_split(labels, [str(i) for i in range(n)], ratios, cfg.seed, names)
            else:
                idx = stratified_split(labels, ratios, cfg.seed, names)
            return assignment_from_indices(n, idx)
        if strategy == "patient":
            return assignment_from_indices(n, patient_grouped_split(labels, groups, ratios, cfg.seed, names))
        # official: keep the official test split, carve validation out of train by patient
        bad = sorted({str(r.official_split) for r in records} - {"train", "test"})
        if bad:  # pragma: no cover - builder bug
            raise RuntimeError(f"unexpected official split names {bad}")
        train_pos = [i for i, r in enumerate(records) if r.official_split == "train"]
        out = ["test"] * n
        if not train_pos:
            raise self._layout_error("the official train split is empty")
        sub = patient_grouped_split(
            [labels[i] for i in train_pos], [groups[i] for i in train_pos], (ratios[0], ratios[1], 0), cfg.seed, names
        )
        for split, idx in zip(SPLIT_NAMES, sub):
            for j in idx:
                out[train_pos[int(j)]] = split
        if "test" not in {r.official_split for r in records}:
            raise self._layout_error("the official test split is empty")
        return out

    # ----- manifest
    def _write_manifest(self, records, assignment, skipped, notes) -> None:
        names = self._class_names()
        counts: dict[str, dict[str, int]] = {s: {c: 0 for c in names} for s in SPLIT_NAMES}
        totals: dict[str, int] = {s: 0 for s in SPLIT_NAMES}
        split_groups: dict[str, set] = {s: set() for s in SPLIT_NAMES}
        for rec, split in zip(records, assignment):
            totals[split] += 1
            split_groups[split].add(rec.group)
            if self.MULTI_LABEL:
                for c, v in zip(names, rec.label):
                    counts[split][c] += int(v > 0)
            else:
                counts[split][names[rec.label]] += 1
        cfg = self.config
        manifest = {
            "dataset": self.DISPLAY_NAME,
            "builder": self.name,
            "config": cfg.name,
            "config_id": self.config_id,
            "version": str(cfg.version),
            "split_strategy": cfg.split_strategy,
            "seed": cfg.seed,
            "ratios": list(self.ratios),
            "class_names": list(names),
            "label_column": self.label_column,
            "multi_label": self.MULTI_LABEL,
            "data_dir": cfg.data_dir,
            "datasets_version": datasets.__version__,
            "num_images": {s: totals[s] for s in SPLIT_NAMES},
            "num_groups": {s: len(split_groups[s]) for s in SPLIT_NAMES},
            # > 0 means leakage: with "paper" the same patient is in several splits
            "groups_in_several_splits": sum(
                1 for g in set().union(*split_groups.values()) if sum(g in split_groups[s] for s in SPLIT_NAMES) > 1
            ),
            "class_counts": counts,
            "skipped_corrupt": skipped,
            "notes": notes,
            "files": dict(sorted(zip((r.relpath for r in records), assignment))),
        }
        os.makedirs(self._output_dir, exist_ok=True)
        path = os.path.join(self._output_dir, MANIFEST_FILENAME)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        logger.info(
            "%s/%s split (%s, seed %s): %s", self.DISPLAY_NAME, cfg.name, cfg.split_strategy, cfg.seed, totals
        )


def seeded_rng(seed: int, salt: str) -> np.random.Generator:
    """A generator derived from ``seed`` and a string (independent streams per purpose)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *(ord(ch) for ch in salt)])
