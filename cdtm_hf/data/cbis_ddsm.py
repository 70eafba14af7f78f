"""CBIS-DDSM (mammography, benign vs malignant) builder.

The case-description CSVs drive everything::

    mass_case_description_{train,test}_set.csv, calc_case_description_{train,test}_set.csv
    columns used: patient_id, pathology, image file path / cropped image file path

Image paths in the CSVs (``Mass-Training_P_00001_LEFT_CC/<study uid>/<series uid>/000000.dcm``)
are resolved, in this order:

1. relative to ``data_dir`` (also ``data_dir/CBIS-DDSM``), as given or with the suffix
   swapped to ``.png``/``.jpg``/``.jpeg`` -- i.e. the TCIA DICOM tree or a same-path PNG/JPEG
   conversion; ``.dcm`` files need the optional ``pydicom`` package;
2. the widely used JPEG conversion (Kaggle "CBIS-DDSM: Breast Cancer Image Dataset")::

       <data_dir>/csv/<the four CSVs> + csv/dicom_info.csv
       <data_dir>/jpeg/<series uid>/1-<n>.jpg

   ``dicom_info.csv`` maps the series uid (third path component) and
   ``SeriesDescription`` ("full mammogram images" / "cropped images") to ``image_path``
   (``CBIS-DDSM/jpeg/<series uid>/1-<n>.jpg``, resolved relative to ``data_dir``); without
   it a ``jpeg/<series uid>/`` folder holding exactly one image is used.

Labels: ``MALIGNANT`` -> malignant; ``BENIGN`` and ``BENIGN_WITHOUT_CALLBACK`` (benign
findings not recalled for follow-up) -> benign.  Groups: ``patient_id``.  The official
split is given by the ``*_train_set`` / ``*_test_set`` CSVs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import datasets

from ._common import (
    IMAGE_EXTENSIONS,
    ImageRecord,
    MedicalImageBuilder,
    MedicalImageConfig,
    require_pydicom,
    find_dir,
    posix_relpath,
    read_csv,
)

logger = logging.getLogger(__name__)

__all__ = ["CBISDDSM", "CBISDDSMConfig", "CBIS_DDSM_CLASSES"]

CBIS_DDSM_CLASSES = ["benign", "malignant"]
PATHOLOGY_TO_LABEL = {"BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0, "MALIGNANT": 1}
IMAGE_COLUMNS = {"full": "image file path", "cropped": "cropped image file path"}
SERIES_DESCRIPTIONS = {"full": "full mammogram images", "cropped": "cropped images"}
ABNORMALITIES = {"both": ("mass", "calc"), "mass": ("mass",), "calc": ("calc",)}


def csv_name(abnormality: str, split: str) -> str:
    return f"{abnormality}_case_description_{split}_set.csv"


@dataclass
class CBISDDSMConfig(MedicalImageConfig):
    """CBIS-DDSM options.

    Attributes:
        image_type: ``"cropped"`` (one ROI crop per abnormality) or ``"full"`` (whole
            mammograms; an image with several abnormalities appears once and is
            malignant if any of them is).
        abnormality: ``"both"``, ``"mass"`` or ``"calc"``.
    """

    image_type: str = "cropped"
    abnormality: str = "both"


class CBISDDSM(MedicalImageBuilder):
    """CBIS-DDSM builder; configs ``cropped`` (default) and ``full``."""

    BUILDER_CONFIG_CLASS = CBISDDSMConfig
    BUILDER_CONFIGS = [
        CBISDDSMConfig(name="cropped", image_type="cropped", description="ROI crops of masses and calcifications."),
        CBISDDSMConfig(name="full", image_type="full", description="Full mammograms (malignant if any finding is)."),
    ]
    DEFAULT_CONFIG_NAME = "cropped"

    DISPLAY_NAME = "CBIS-DDSM"
    DESCRIPTION = "CBIS-DDSM: curated DDSM mammography, masses and calcifications, benign vs malignant."
    HOMEPAGE = "https://www.cancerimagingarchive.net/collection/cbis-ddsm/"
    CITATION = (
        "@article{lee2017cbisddsm, title={A curated mammography data set for use in computer-aided detection and "
        "diagnosis research}, author={Lee, Rebecca Sawyer and Gimenez, Francisco and Hoogi, Assaf and Miyake, "
        "Kanae Kawai and Gorovoy, Mia and Rubin, Daniel L.}, journal={Scientific Data}, volume={4}, year={2017}}"
    )
    LICENSE = "CC BY 3.0"
    SOURCE_HELP = (
        "Download CBIS-DDSM from TCIA (https://www.cancerimagingarchive.net/collection/cbis-ddsm/, DICOM + the four "
        "case-description CSVs; .dcm needs `pip install pydicom`) or the JPEG conversion from Kaggle "
        "('awsaf49/cbis-ddsm-breast-cancer-image-dataset': csv/ + jpeg/) and pass its folder as data_dir."
    )
    EXPECTED_LAYOUT = (
        "<data_dir>/[csv/]{mass,calc}_case_description_{train,test}_set.csv with images either at the CSV paths "
        "relative to data_dir (.dcm/.png/.jpg) or in the JPEG layout <data_dir>/jpeg/<series uid>/*.jpg "
        "(+ csv/dicom_info.csv)"
    )
    HAS_OFFICIAL_SPLIT = True

    def _validate_config(self) -> None:
        super()._validate_config()
        if self.config.image_type not in IMAGE_COLUMNS:
            raise ValueError(f"image_type must be one of {sorted(IMAGE_COLUMNS)}, got {self.config.image_type!r}")
        if self.config.abnormality not in ABNORMALITIES:
            raise ValueError(f"abnormality must be one of {sorted(ABNORMALITIES)}, got {self.config.abnormality!r}")

    def _class_names(self) -> list[str]:
        return CBIS_DDSM_CLASSES

    def _extra_features(self) -> dict:
        return {"abnormality_type": datasets.Value("string"), "pathology": datasets.Value("string")}

    # ----- path resolution
    def _series_index(self, csv_dir: Path) -> dict[str, list[tuple[str, str]]]:
        """series uid -> [(SeriesDescription, image_path)] from dicom_info.csv (if present)."""
        info = csv_dir / "dicom_info.csv"
        if not info.is_file():
            return {}
        df = read_csv(info, ["image_path", "SeriesInstanceUID", "SeriesDescription"])
        index: dict[str, list[tuple[str, str]]] = {}
        for uid, desc, path in zip(df["SeriesInstanceUID"], df["SeriesDescription"], df["image_path"]):
            index.setdefault(str(uid).strip(), []).append((str(desc).strip().lower(), str(path).strip()))
        return index

    def _resolve(self, root: Path, entry: str, series: dict) -> Optional[Path]:
        rel = entry.strip().replace("\\", "/").strip("/")
        if not rel:
            return None
        for base in (root, root / "CBIS-DDSM"):
            p = base / rel
            for cand in (p, *(p.with_suffix(ext) for ext in (".png", ".jpg", ".jpeg"))):
                if cand.is_file():
                    return cand
        parts = rel.split("/")
        if len(parts) < 2:
            return None
        uid = parts[-2]
        wanted = SERIES_DESCRIPTIONS[self.config.image_type]
        if series:
            for desc, image_path in series.get(uid, []):
                if desc == wanted:
                    image_path = image_path.replace("\\", "/")
                    stripped = image_path.split("/", 1)[1] if image_path.startswith("CBIS-DDSM/") else image_path
                    for cand in (root / stripped, root / image_path):
                        if cand.is_file():
                            return cand
            return None
        folder = root / "jpeg" / uid
        if folder.is_dir():
            images = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
            if len(images) == 1:
                return images[0]
        return None

    def _scan(self, dl_manager) -> list[ImageRecord]:
        root = self._data_root(dl_manager)
        abns = ABNORMALITIES[self.config.abnormality]
        needed = [csv_name(a, s) for a in abns for s in ("train", "test")]
        csv_dir = find_dir(root, lambda d: all((d / n).is_file() for n in needed), max_depth=2)
        if csv_dir is None:
            raise self._layout_error(f"CSV files {needed} not found under {root}")
        if csv_dir != root and (csv_dir.parent / "jpeg").is_dir():
            root = csv_dir.parent  # <root>/csv + <root>/jpeg
        series = self._series_index(csv_dir)
        column = IMAGE_COLUMNS[self.config.image_type]
        by_path: dict[str, ImageRecord] = {}
        unresolved: list[str] = []
        for abn in abns:
            for split in ("train", "test"):
                csv_path = csv_dir / csv_name(abn, split)
                df = read_csv(csv_path, ["patient_id", "pathology", column])
                for pid, pathology, entry in zip(df["patient_id"], df["pathology"], df[column]):
                    key = str(pathology).strip().upper()
                    if key not in PATHOLOGY_TO_LABEL:
                        raise self._layout_error(
                            f"{csv_path}: unknown pathology {pathology!r} (expected {sorted(PATHOLOGY_TO_LABEL)})"
                        )
                    path = self._resolve(root, str(entry), series)
                    if path is None:
                        unresolved.append(f"{csv_path.name}: {str(entry).strip()}")
                        continue
                    rel = posix_relpath(path, root)
                    rec = by_path.get(rel)
                    if rec is None:
                        by_path[rel] = ImageRecord(
                            path=str(path),
                            relpath=rel,
                            label=PATHOLOGY_TO_LABEL[key],
                            group=str(pid).strip(),
                            official_split=split,
                            extra={"abnormality_type": abn, "pathology": key},
                        )
                    else:  # same image, several findings ("full" images): malignant if any is
                        rec.label = max(rec.label, PATHOLOGY_TO_LABEL[key])
                        if split == "test":
                            rec.official_split = "test"
                        for k, v in (("abnormality_type", abn), ("pathology", key)):
                            vals = set(rec.extra[k].split("|")) | {v}
                            rec.extra[k] = "|".join(sorted(vals))
        if unresolved:
            if not self.config.skip_corrupt:
                raise self._layout_error(
                    f"{len(unresolved)} image path(s) from the CSVs could not be found, e.g. {unresolved[:3]}"
                )
            logger.warning("Skipping %d CBIS-DDSM CSV entries whose image is missing, e.g. %s", len(unresolved), unresolved[:3])
            self.scan_notes["unresolved_csv_paths"] = unresolved
        if any(r.path.lower().endswith(".dcm") for r in by_path.values()):
            require_pydicom()  # clear error if DICOM files are used without pydicom
        return list(by_path.values())
