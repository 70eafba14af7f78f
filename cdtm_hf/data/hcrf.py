"""HCRF gastric histopathology builder (normal vs abnormal).

The paper uses 140 normal + 140 (of 560) abnormal images, split 1:1:2 (35/35/70 per class).  Accepted layouts::

    <data_dir>/<Normal>/*.{png,jpg,jpeg,tif,tiff,bmp,webp}
    <data_dir>/<Abnormal>/*.{png,jpg,jpeg,tif,tiff,bmp,webp}

    <data_dir>/<Abnormal>/image/*.png + <data_dir>/<Abnormal>/label/*.png     (the lab's releases with masks;
        also images/, img/, original/ beside label(s)/, mask(s)/, gt/, ground truth/, annotation(s)/)

Class folder names are matched case-insensitively (``normal``/``NORMAL``...), and the pair may sit up to three
folders below ``data_dir`` (e.g. an extracted archive's top folder); ``data_dir`` may also be a ``.zip``/``.tar.gz``.
Files in a mask folder (:data:`MASK_DIR_NAMES`) or whose path matches ``exclude_patterns`` (``*_mask.*``,
``*_gt.*``) are segmentation masks: never counted as images (their number is in the manifest notes).  Other
sub-folders of a class folder are taken as patient ids, except the image-folder names of :data:`IMAGE_DIR_NAMES`;
files outside such a sub-folder are their own group (HCRF publishes no patient ids, so the ``patient`` split is
then image-level, a warning says so and the manifest records ``grouping: "image"``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

from .files import ImageRecord, child_dirs_ci, find_dir, iter_files, posix_relpath, seeded_rng
from .builder import MedicalImageBuilder, MedicalImageConfig

__all__ = ["HCRF", "HCRFConfig", "IMAGE_DIR_NAMES", "MASK_DIR_NAMES"]

logger = logging.getLogger(__name__)

CLASS_NAMES = ["normal", "abnormal"]
#: sub-folders holding segmentation masks (lower case): their files are never images
MASK_DIR_NAMES = frozenset(
    {"label", "labels", "mask", "masks", "gt", "groundtruth", "ground truth", "ground_truth", "annotation",
     "annotations", "segmentation", "segmentations"}
)  # fmt: skip
#: sub-folders holding the images beside a mask folder (lower case): not patient ids
IMAGE_DIR_NAMES = frozenset({"image", "images", "img", "imgs", "original", "originals", "raw"})


@dataclass
class HCRFConfig(MedicalImageConfig):
    """HCRF options.

    Attributes:
        balance: subsample every class (seeded by ``seed``) down to the smallest class
            size, as the paper did (140 normal + 140 abnormal).
        exclude_patterns: case-insensitive substrings; files whose relative path contains
            one of them (e.g. segmentation masks) are ignored.
    """

    balance: bool = True
    exclude_patterns: Sequence[str] = ("mask", "ground truth", "groundtruth", "ground_truth", "_gt.", "_gt_")


class HCRF(MedicalImageBuilder):
    """HCRF builder; configs ``balanced`` (default, the paper's 140/140) and ``full``."""

    BUILDER_CONFIG_CLASS = HCRFConfig
    BUILDER_CONFIGS = [
        HCRFConfig(name="balanced", balance=True, description="Classes subsampled to equal size (paper: 140/140)."),
        HCRFConfig(name="full", balance=False, description="All normal and abnormal images."),
    ]
    DEFAULT_CONFIG_NAME = "balanced"

    DISPLAY_NAME = "HCRF"
    DESCRIPTION = "HCRF gastric histopathology images (H&E), normal vs abnormal (140 normal, 560 abnormal)."
    MODALITY = "HCRF-like H&E gastric histopathology images"
    TAGS = ("histopathology",)
    HOMEPAGE = "https://doi.org/10.1016/j.bbe.2020.09.008"
    CITATION = (
        "@article{sun2020hcrf, title={Gastric histopathology image segmentation using a hierarchical conditional "
        "random field}, author={Sun, Changhao and Li, Chen and others}, journal={Biocybernetics and Biomedical "
        "Engineering}, volume={40}, number={4}, pages={1535--1555}, year={2020}}"
    )
    SOURCE_HELP = (
        "Download the HCRF gastric histopathology data set (Mendeley Data, 'HCRF'; Sun et al. 2020) and pass the "
        "folder (or archive) that contains the Normal/ and Abnormal/ image folders as data_dir."
    )
    EXPECTED_LAYOUT = (
        "<data_dir>/{Normal,Abnormal}/*.{png,jpg,jpeg,tif,tiff,bmp,webp} or <data_dir>/{Normal,Abnormal}/image/* "
        "beside .../label/* or .../mask/* (class folder names case-insensitive)"
    )
    DEFAULT_RATIOS = (1, 1, 2)
    HAS_PATIENT_IDS = False

    def _class_names(self) -> list[str]:
        return CLASS_NAMES

    def _scan(self, dl_manager) -> list[ImageRecord]:
        root = self._data_root(dl_manager)

        def has_class_dirs(d: Path) -> bool:
            return set(CLASS_NAMES) <= set(child_dirs_ci(d))

        base = find_dir(root, has_class_dirs, max_depth=3)
        if base is None:
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise self._layout_error(f"no Normal/ and Abnormal/ folders found under {root} (found folders {found})")
        dirs = child_dirs_ci(base)
        self._set_layout(f"{posix_relpath(base, root) if base != root else '.'}/"
                         f"{{{dirs['normal'].name},{dirs['abnormal'].name}}}/")
        records, masks = [], []
        for label, name in enumerate(CLASS_NAMES):
            for path in iter_files(dirs[name]):
                record = self._record(base, dirs[name], path, label)
                if record is None:
                    masks.append(path.relative_to(base).as_posix())
                else:
                    records.append(record)
        if masks:
            logger.info("HCRF: ignoring %d segmentation mask file(s), e.g. %s", len(masks), masks[:3])
        self.scan_notes["excluded_masks"] = len(masks)
        self._subfolder_groups = any(r.has_patient_id for r in records)
        return records

    def _record(self, base: Path, class_dir: Path, path: Path, label: int) -> ImageRecord | None:
        """The record of one file, or ``None`` for a segmentation mask."""
        rel = path.relative_to(base).as_posix()
        folders = path.relative_to(class_dir).parts[:-1]
        is_mask = any(f.lower() in MASK_DIR_NAMES for f in folders)
        if is_mask or any(p.lower() in rel.lower() for p in self.config.exclude_patterns):
            return None
        patient = next((f for f in folders if f.lower() not in IMAGE_DIR_NAMES), None)
        if patient is None:  # no patient folder: the image is its own group
            return ImageRecord(path=str(path), relpath=rel, label=label, group=rel, has_patient_id=False)
        return ImageRecord(path=str(path), relpath=rel, label=label, group=patient)

    def _has_patient_ids(self) -> bool:
        return getattr(self, "_subfolder_groups", False)

    def _postprocess(self, records: list[ImageRecord]) -> tuple[list[ImageRecord], dict]:
        counts = {name: sum(r.label == i for r in records) for i, name in enumerate(CLASS_NAMES)}
        if not self.config.balance:
            return records, {"balanced": False}
        target = min(counts.values())
        rng = seeded_rng(self.config.seed, "hcrf-balance")
        keep: list[ImageRecord] = []
        for i in range(len(CLASS_NAMES)):
            cls = [r for r in records if r.label == i]
            if len(cls) > target:
                chosen = sorted(rng.choice(len(cls), size=target, replace=False).tolist())
                cls = [cls[j] for j in chosen]
            keep.extend(cls)
        keep.sort(key=lambda r: r.relpath)
        return keep, {
            "balanced": True,
            "counts_before_balancing": counts,
            "dropped_by_balancing": len(records) - len(keep),
        }
