"""ISIC 2019 (dermoscopy, 8 training classes) builder.

Layout (the files of the public ISIC 2019 training set)::

    <data_dir>/ISIC_2019_Training_GroundTruth.csv     image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (one-hot)
    <data_dir>/ISIC_2019_Training_Metadata.csv        optional: image,...,lesion_id,...
    <data_dir>/ISIC_2019_Training_Input/<image>.jpg   (or ISIC_2019_Training_Input.zip, extracted into the cache)

With ``data_dir=None`` the three files are downloaded from the ISIC archive S3 bucket.
``UNK`` has no training images; rows labelled UNK are dropped (counted in the manifest).
The metadata's ``lesion_id`` is the group id of the ``patient`` split (ISIC 2019 has no
patient ids; images of one lesion are near-duplicates, so they must not be split).
Images without a lesion id are their own group (counted in the manifest's ``images_without_patient_id``; its
``grouping`` is then ``"image"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .files import ImageRecord, find_file, posix_relpath, read_csv
from .builder import MedicalImageBuilder, MedicalImageConfig

__all__ = ["ISIC2019", "ISIC2019Config", "ISIC2019_URLS", "ISIC2019_CLASSES"]

_S3 = "https://isic-challenge-data.s3.amazonaws.com/2019"
ISIC2019_URLS = {
    "images": f"{_S3}/ISIC_2019_Training_Input.zip",
    "labels": f"{_S3}/ISIC_2019_Training_GroundTruth.csv",
    "metadata": f"{_S3}/ISIC_2019_Training_Metadata.csv",
}
#: class names = ground-truth CSV columns (MEL melanoma, NV melanocytic nevus, BCC basal cell
#: carcinoma, AK actinic keratosis, BKL benign keratosis, DF dermatofibroma, VASC vascular
#: lesion, SCC squamous cell carcinoma)
ISIC2019_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
GT_NAME = "ISIC_2019_Training_GroundTruth.csv"
META_NAME = "ISIC_2019_Training_Metadata.csv"
IMAGES_NAME = "ISIC_2019_Training_Input"


@dataclass
class ISIC2019Config(MedicalImageConfig):
    """ISIC 2019 options.

    Attributes:
        use_metadata: group by the metadata's ``lesion_id`` when the metadata CSV exists.
    """

    use_metadata: bool = True


class ISIC2019(MedicalImageBuilder):
    """ISIC 2019 training set (25,331 dermoscopic images, 8 classes)."""

    BUILDER_CONFIG_CLASS = ISIC2019Config
    BUILDER_CONFIGS = [ISIC2019Config(name="default", description="8-class single-label ISIC 2019 training set.")]
    DEFAULT_CONFIG_NAME = "default"

    DISPLAY_NAME = "ISIC2019"
    DESCRIPTION = "ISIC 2019 challenge training set: dermoscopic images, 8 diagnostic classes."
    MODALITY = "dermoscopic skin-lesion images"
    TAGS = ("dermatology", "dermoscopy")
    HOMEPAGE = "https://challenge.isic-archive.com/data/#2019"
    CITATION = (
        "@article{tschandl2018ham10000, title={The HAM10000 dataset}, author={Tschandl, P. and Rosendahl, C. and "
        "Kittler, H.}, journal={Scientific Data}, volume={5}, year={2018}}; Codella et al. 2017 (arXiv:1710.05006); "
        "Combalia et al. 2019 (arXiv:1908.02288)"
    )
    LICENSE = "CC-BY-NC 4.0"
    SOURCE_HELP = (
        f"Get {IMAGES_NAME}.zip, {GT_NAME} and (optionally) {META_NAME} from {_S3}/ "
        "(https://challenge.isic-archive.com/data/#2019) and pass their folder as data_dir."
    )
    EXPECTED_LAYOUT = (
        f"<data_dir>/{GT_NAME}, <data_dir>/{IMAGES_NAME}/<image>.jpg (or {IMAGES_NAME}.zip), "
        f"optional <data_dir>/{META_NAME}"
    )
    DOWNLOAD_URLS = ISIC2019_URLS

    def _class_names(self) -> list[str]:
        return ISIC2019_CLASSES

    def _has_patient_ids(self) -> bool:
        return getattr(self, "_lesion_groups", False)

    def _locate(self, dl_manager) -> tuple[Path, Path, Path | None, Path]:
        """(ground-truth CSV, images folder, metadata CSV or None, root for relative paths)."""
        if self.config.data_dir is None:
            paths = self._download(dl_manager, ISIC2019_URLS)
            extracted = Path(paths["images"])
            images = extracted / IMAGES_NAME if (extracted / IMAGES_NAME).is_dir() else extracted
            return Path(paths["labels"]), images, Path(paths["metadata"]), images.parent
        root = self._data_root(dl_manager)
        gt = find_file(root, GT_NAME, max_depth=2)
        if gt is None:
            raise self._layout_error(f"{GT_NAME} not found under {root}")
        images = self._dir_or_archive(dl_manager, gt.parent, IMAGES_NAME)
        if images is None:
            raise self._layout_error(f"no {IMAGES_NAME}/ folder or {IMAGES_NAME}.zip next to {gt}")
        # the official zip contains ISIC_2019_Training_Input/ISIC_2019_Training_Input/...
        if (images / IMAGES_NAME).is_dir():
            images = images / IMAGES_NAME
        meta = gt.parent / META_NAME
        return gt, images, (meta if meta.is_file() else None), images.parent

    def _scan(self, dl_manager) -> list[ImageRecord]:
        gt_path, images, meta_path, rel_root = self._locate(dl_manager)
        self._set_layout(
            f"{gt_path.name} + {posix_relpath(images, rel_root)}/<image>.jpg"
            + (f" + {meta_path.name} (lesion_id groups)" if meta_path is not None else " (no metadata: image groups)")
        )
        gt = read_csv(gt_path, ["image", *ISIC2019_CLASSES])
        lesion_of: dict[str, str] = {}
        self._lesion_groups = False
        if meta_path is not None and self.config.use_metadata:
            meta = read_csv(meta_path, ["image", "lesion_id"])
            lesion_of = {str(i): str(l) for i, l in zip(meta["image"], meta["lesion_id"]) if pd.notna(l) and str(l)}
            self._lesion_groups = True
        onehot = gt[ISIC2019_CLASSES].fillna(0).to_numpy(dtype=float)
        unk = gt["UNK"].fillna(0).to_numpy(dtype=float) if "UNK" in gt.columns else onehot[:, 0] * 0
        records, dropped_unk = [], 0
        for image, row, u in zip(gt["image"].astype(str), onehot, unk):
            if u > 0 and row.sum() == 0:
                dropped_unk += 1
                continue
            if row.sum() != 1 or set(row.tolist()) - {0.0, 1.0}:
                raise self._layout_error(f"{gt_path}: labels of image {image!r} are not one-hot ({row.tolist()})")
            path = images / f"{image}.jpg"
            records.append(
                ImageRecord(
                    path=str(path),
                    relpath=posix_relpath(path, rel_root),
                    label=int(row.argmax()),
                    group=lesion_of.get(image, image),
                    has_patient_id=image in lesion_of,
                )
            )
        self.scan_notes.update(group_id="lesion_id" if self._lesion_groups else "image", dropped_unk_rows=dropped_unk)
        return records
