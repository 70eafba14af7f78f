"""The base class of the medical image builders.

Every dataset builder subclasses [`MedicalImageBuilder`] and only implements

* ``_class_names()``   -- the label names of the active config,
* ``_scan(dl_manager)`` -- locate the data and return a list of [`ImageRecord`] (rows it cannot use go to
  ``self._skip(path, reason)``; the layout it found to ``self.layout_found``),
* optionally ``_extra_features()`` and ``_postprocess(records)``.

The base class does the rest: ``data_dir`` / archive resolution (archives are extracted into the ``datasets``
cache, never in place), image verification (a file-exists check always, a decode unless ``verify_images="none"``;
opt-in skipping of bad files, each named in the log and in the manifest), the split (``paper`` / ``patient`` /
``official``), the ``split_manifest.json`` and example generation with lazily decoded ``datasets.Image`` features.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from .dicom import dicom_lut_counts, dicom_to_png_bytes
from .errors import DataDirRequiredError, DatasetLayoutError
from .files import ARCHIVE_SUFFIXES, ImageRecord, extract_archive, is_archive
from .manifest import MANIFEST_FILENAME, make_manifest, write_manifest
from .verify import VERIFY_MODES, verify_records
from .splits import (
    SPLIT_NAMES,
    SPLIT_STRATEGIES,
    assignment_from_indices,
    normalize_ratios,
    patient_grouped_split,
    stratified_split,
)

logger = logging.getLogger(__name__)

__all__ = ["MedicalImageBuilder", "MedicalImageConfig"]


@dataclass
class MedicalImageConfig(datasets.BuilderConfig):
    """Options shared by all medical image builders.

    Attributes:
        split_strategy: ``"patient"`` (grouped, recommended), ``"paper"`` (random
            stratified, as in the paper) or ``"official"`` (CheXpert, CBIS-DDSM).
        seed: split seed (also used by seeded subsampling, e.g. HCRF balancing).
        ratios: ``(train, validation, test)`` proportions; ``None`` = the builder default.
        skip_corrupt: skip missing or undecodable images and CSV rows whose image cannot be found (each
            named in the log and listed under ``skipped`` in the manifest) instead of raising.
        verify_images: ``"fast"`` (default), ``"full"`` (decode everything) or ``"none"`` (no decode; the
            file-exists check is always done).
        embed_images: store image bytes in the Arrow files instead of file paths
            (self-contained cache, larger; ``.dcm`` files are always embedded as PNG).
        num_workers: threads used to verify images (default ``min(8, cpu_count)``).
    """

    # 1.2.0: the manifest records the grouping of the split ("random" for the paper's) and has_patient_ids
    # 1.3.0: .dcm pixels through pydicom's modality and VOI LUTs (the manifest's dicom_luts) instead of min-max
    version: datasets.Version | str | None = datasets.Version("1.3.0")
    split_strategy: str = "patient"
    seed: int = 42
    ratios: Sequence[float] | None = None
    skip_corrupt: bool = False
    verify_images: str = "fast"
    embed_images: bool = False
    num_workers: int | None = None


class MedicalImageBuilder(datasets.GeneratorBasedBuilder):
    """Base class: see the module docstring.  Subclasses set the class attributes below."""

    BUILDER_CONFIG_CLASS = MedicalImageConfig
    VERSION = datasets.Version("1.2.0")

    #: short name used in the manifest and in messages.
    DISPLAY_NAME = "dataset"
    DESCRIPTION = ""
    HOMEPAGE = ""
    CITATION = ""
    LICENSE = ""
    #: what one input image is, for model cards ("H&E histopathology tiles").
    MODALITY = ""
    #: modality tags for the model card metadata.
    TAGS: tuple[str, ...] = ()
    #: where to get the data; shown when ``data_dir`` is missing or unusable.
    SOURCE_HELP = ""
    #: the expected on-disk layout; shown in [`DatasetLayoutError`] messages.
    EXPECTED_LAYOUT = ""
    #: public source URLs (``None`` = no public URL, ``data_dir`` required); builders that
    #: have them download them in ``_scan`` (via ``self._download``) when ``data_dir`` is None.
    DOWNLOAD_URLS: dict[str, str] | None = None
    DEFAULT_RATIOS: tuple[float, float, float] = (3, 1, 1)
    HAS_OFFICIAL_SPLIT = False
    #: False when the source has no patient ids (groups are then single images).
    HAS_PATIENT_IDS = True
    MULTI_LABEL = False

    def __init__(self, *args, data_dir: str | os.PathLike | None = None, **kwargs):
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

    def _skip(self, path: str, reason: str) -> None:
        """Record an image or CSV row that ``_scan`` could not use (named in the log and in the manifest)."""
        logger.warning("%s: skipping %s: %s", self.DISPLAY_NAME, path, reason)
        self.scan_skipped.append({"path": path, "reason": reason})

    def _set_layout(self, layout: str) -> None:
        """Record (and log) which of the accepted layouts ``_scan`` found."""
        self.layout_found = layout
        logger.info("%s: found layout %s", self.DISPLAY_NAME, layout)

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

    def _extract(self, dl_manager: datasets.DownloadManager, archive: str | Path) -> Path:
        logger.info("Extracting %s into the datasets cache", archive)
        # issue 17: extracted into a temporary folder and moved into place only when complete; a cut archive is named
        cache = getattr(dl_manager, "download_config", None)
        root = Path(getattr(cache, "cache_dir", None) or datasets.config.DOWNLOADED_DATASETS_PATH)
        return extract_archive(archive, root, getattr(self, "ARCHIVE_SIZES", {}).get(Path(archive).name))

    def _dir_or_archive(self, dl_manager, parent: Path, name: str) -> Path | None:
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
        self.scan_skipped: list[dict] = []
        self.layout_found: str | None = None
        records = self._scan(dl_manager)
        if not records:
            skipped = f" ({len(self.scan_skipped)} skipped, e.g. {self.scan_skipped[:3]})" if self.scan_skipped else ""
            raise self._layout_error(f"no images found{skipped}")
        dupes = [p for p, c in Counter(r.relpath for r in records).items() if c > 1]
        if dupes:
            raise self._layout_error(f"{len(dupes)} image(s) listed more than once, e.g. {dupes[:3]}")
        records.sort(key=lambda r: r.relpath)
        records, bad = verify_records(
            records, cfg.verify_images, cfg.skip_corrupt, cfg.num_workers, layout=self.layout_found
        )
        records, post_notes = self._postprocess(records)
        notes = {**self.scan_notes, **post_notes}
        dicom_luts = dicom_lut_counts(r.path for r in records)  # issue 18: the LUTs the .dcm decode applies
        if dicom_luts:
            notes["dicom_luts"] = dicom_luts
        if not records:
            raise self._layout_error("no usable images left after verification/filtering")
        assignment = self._assign_splits(records)
        self._write_manifest(records, assignment, self.scan_skipped + bad, notes)
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
    def _grouping(self, records: list[ImageRecord]) -> str:
        """What the split kept together: ``"random"`` for the paper's split, else ``"patient"`` when every group is
        a real patient (or lesion) id, else ``"image"``."""
        if self.config.split_strategy == "paper":
            return "random"
        return "patient" if self._real_patient_ids(records) else "image"

    def _real_patient_ids(self, records: list[ImageRecord]) -> bool:
        return self._has_patient_ids() and all(r.has_patient_id for r in records)

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
        manifest = make_manifest(
            dataset=self.DISPLAY_NAME, split_strategy=cfg.split_strategy, grouping=self._grouping(records),
            seed=cfg.seed, class_names=names, label_column=self.label_column, multi_label=self.MULTI_LABEL,
            num_images=totals, counts=counts, skipped=skipped, has_patient_ids=self._real_patient_ids(records),
            files=dict(zip((r.relpath for r in records), assignment)),
            builder=self.name, config=cfg.name, config_id=self.config_id, version=str(cfg.version),
            ratios=list(self.ratios), data_dir=cfg.data_dir, datasets_version=datasets.__version__,
            num_groups={s: len(split_groups[s]) for s in SPLIT_NAMES},
            # > 0 means leakage: with "paper" the same patient is in several splits
            groups_in_several_splits=sum(
                1 for g in set().union(*split_groups.values()) if sum(g in split_groups[s] for s in SPLIT_NAMES) > 1
            ),
            images_without_patient_id=sum(1 for r in records if not (r.has_patient_id and self._has_patient_ids())),
            layout=self.layout_found, notes=notes,
        )
        write_manifest(manifest, self._output_dir)
        logger.info(
            "%s/%s split (%s, seed %s): %s", self.DISPLAY_NAME, cfg.name, cfg.split_strategy, cfg.seed, totals
        )
