"""HCRF gastric histopathology builder (normal vs abnormal).

The paper uses 140 normal + 140 (of 560) abnormal images, split 1:1:2
(35/35/70 per class).  Layout::

    <data_dir>/<Normal>/*.{png,jpg,jpeg,tif,tiff,bmp}
    <data_dir>/<Abnormal>/*.{png,jpg,jpeg,tif,tiff,bmp}

Class folder names are matched case-insensitively (``normal``/``NORMAL``...), and the
pair may sit up to three folders below ``data_dir`` (e.g. an extracted archive's top
folder); ``data_dir`` may also be a ``.zip``/``.tar.gz``.  Files in sub-folders of a class
folder are included, and the first sub-folder name is used as the group (patient) id;
files directly in the class folder are their own group (HCRF publishes no patient ids,
so the ``patient`` split is then image-level and a warning says so).  Segmentation
masks are skipped (paths containing ``mask``/``ground truth``/``_gt``, see
``exclude_patterns``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ._common import ImageRecord, MedicalImageBuilder, MedicalImageConfig, child_dirs_ci, find_dir, iter_files, seeded_rng

__all__ = ["HCRF", "HCRFConfig"]

CLASS_NAMES = ["normal", "abnormal"]


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
    HOMEPAGE = "https://data.mendeley.com/ (search 'HCRF gastric histopathology')"
    CITATION = (
        "@article{sun2020hcrf, title={Gastric histopathology image segmentation using a hierarchical conditional "
        "random field}, author={Sun, Changhao and Li, Chen and others}, journal={Biocybernetics and Biomedical "
        "Engineering}, volume={40}, number={4}, pages={1535--1555}, year={2020}}"
    )
    SOURCE_HELP = (
        "Download the HCRF gastric histopathology data set (Mendeley Data, 'HCRF'; Sun et al. 2020) and pass the "
        "folder (or archive) that contains the Normal/ and Abnormal/ image folders as data_dir."
    )
    EXPECTED_LAYOUT = "<data_dir>/{Normal,Abnormal}/*.{png,jpg,jpeg,tif,tiff,bmp} (class folder names case-insensitive)"
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
        patterns = [p.lower() for p in self.config.exclude_patterns]
        records = []
        self._subfolder_groups = False
        for label, name in enumerate(CLASS_NAMES):
            class_dir = dirs[name]
            for path in iter_files(class_dir):
                rel = path.relative_to(base).as_posix()
                if any(p in rel.lower() for p in patterns):
                    continue
                inner = path.relative_to(class_dir).parts
                if len(inner) > 1:
                    group = inner[0]
                    self._subfolder_groups = True
                else:
                    group = rel
                records.append(ImageRecord(path=str(path), relpath=rel, label=label, group=group))
        return records

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
