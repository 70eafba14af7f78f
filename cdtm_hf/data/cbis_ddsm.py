"""CBIS-DDSM (mammography, benign vs malignant) builder.

The case-description CSVs drive everything::

    mass_case_description_{train,test}_set.csv, calc_case_description_{train,test}_set.csv
    columns used: patient_id, pathology, image file path / cropped image file path

Image paths in the CSVs (``Mass-Training_P_00001_LEFT_CC/<study uid>/<series uid>/000000.dcm``) are resolved, in
this order (the layout found is logged and recorded in the manifest):

1. relative to ``data_dir`` (also ``data_dir/CBIS-DDSM``), as given or with the suffix swapped to
   ``.png``/``.jpg``/``.jpeg`` -- the older UID-named TCIA tree or a same-path PNG/JPEG conversion;
2. the TCIA download of the NBIA Data Retriever::

       <data_dir>/[manifest-<n>/]metadata.csv              columns include Series UID, File Location
       <data_dir>/[manifest-<n>/]CBIS-DDSM/<case>/<date>-DDSM-<n>/<n>.000000-<series description>-<n>/1-1.dcm

   the series UID (third CSV path component) is looked up in ``metadata.csv``;
3. the Kaggle JPEG release ("CBIS-DDSM: Breast Cancer Image Dataset")::

       <data_dir>/csv/<the four CSVs> + csv/dicom_info.csv
       <data_dir>/jpeg/<series uid>/1-<n>.jpg

   ``dicom_info.csv`` maps the series uid and ``SeriesDescription`` to ``image_path``; rows with an empty
   description fall back to the images of ``jpeg/<series uid>/``.

A crop and its ROI mask often share a series folder: they are told apart by the DICOM ``SeriesDescription`` (or the
``dicom_info.csv`` row), else by the pixel statistics (a mask is binary), never by file name. ``.dcm`` files need the
optional ``pydicom`` package. A CSV row whose image cannot be found raises, or with ``skip_corrupt=True`` is
skipped and named in the log and in the manifest (``skipped``).

Labels: ``MALIGNANT`` -> malignant; ``BENIGN`` and ``BENIGN_WITHOUT_CALLBACK`` (benign findings not recalled for
follow-up) -> benign.  Groups: ``patient_id``.  The official split is given by the ``*_train_set`` / ``*_test_set``
CSVs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
import datasets

from ._cbis_series import (
    dicom_info_index,
    folder_images,
    nbia_series_index,
    pick_series_image,
    strip_first,
)
from .dicom import require_pydicom
from .files import IMAGE_EXTENSIONS, ImageRecord, clean_rel, find_dir, posix_relpath, read_csv
from .builder import MedicalImageBuilder, MedicalImageConfig

logger = logging.getLogger(__name__)

__all__ = ["CBISDDSM", "CBISDDSMConfig", "CBIS_DDSM_CLASSES"]

CBIS_DDSM_CLASSES = ["benign", "malignant"]
PATHOLOGY_TO_LABEL = {"BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0, "MALIGNANT": 1}
IMAGE_COLUMNS = {"full": "image file path", "cropped": "cropped image file path"}
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
    MODALITY = "mammography crops"
    TAGS = ("mammography", "radiology")
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
    def _resolve(self, root: Path, entry: str) -> tuple[Path | None, str]:
        """The image of one CSV path: ``(path, method)``, or ``(None, reason)``."""
        rel = clean_rel(entry)
        if not rel or rel == "nan":
            return None, "empty path in the CSV"
        for base in (root, root / "CBIS-DDSM"):
            p = base / rel
            for cand in (p, *(p.with_suffix(ext) for ext in IMAGE_EXTENSIONS)):  # a converted copy beside the .dcm path
                if cand.is_file():
                    return cand, "csv path"
        parts = rel.split("/")
        if len(parts) < 3:
            return None, "no file at the CSV path and no series UID in it (expected <case>/<study>/<series>/<file>)"
        uid = parts[2]
        wanted = self.config.image_type
        if uid in self._nbia:
            folder = self._nbia[uid]
            path, how = pick_series_image([(p, "") for p in folder_images(folder)], wanted)
            return path, (f"metadata.csv, {how}" if path is not None else how)
        entries = self._dicom_info.get(uid, [])
        candidates: list[tuple[Path, str]] = []
        for desc, image_path in entries:
            for cand in (root / strip_first(image_path), root / image_path):
                if cand.is_file():
                    candidates.append((cand, desc))
                    break
        listed = {c for c, _ in candidates}
        candidates += [(p, "") for p in folder_images(root / "jpeg" / uid) if p not in listed]
        if not candidates:
            where = "metadata.csv, dicom_info.csv or jpeg/<series uid>/" if not entries else "jpeg/<series uid>/"
            return None, f"series {uid} not found in {where}"
        path, how = pick_series_image(candidates, wanted)
        return path, (f"jpeg/<series uid>, {how}" if path is not None else how)

    def _locate(self, root: Path) -> tuple[Path, Path]:
        """(folder of the CSVs, root the image paths are relative to); reads metadata.csv / dicom_info.csv."""
        abns = ABNORMALITIES[self.config.abnormality]
        needed = [csv_name(a, s) for a in abns for s in ("train", "test")]
        csv_dir = find_dir(root, lambda d: all((d / n).is_file() for n in needed), max_depth=3)
        if csv_dir is None:
            raise self._layout_error(f"CSV files {needed} not found under {root}")
        if csv_dir != root and (csv_dir.parent / "jpeg").is_dir():
            root = csv_dir.parent  # <root>/csv + <root>/jpeg
        self._nbia, meta = nbia_series_index(root)
        self._dicom_info = dicom_info_index(csv_dir)
        if self._nbia:
            self._set_layout(f"TCIA NBIA Data Retriever download ({posix_relpath(meta, root)} maps series UIDs)")
        elif self._dicom_info or (root / "jpeg").is_dir():
            self._set_layout("Kaggle JPEG release (csv/ + jpeg/<series uid>/ + csv/dicom_info.csv)")
        else:
            self._set_layout("CSV paths relative to data_dir (UID-named TCIA tree or same-path PNG/JPEG)")
        return csv_dir, root

    def _scan(self, dl_manager) -> list[ImageRecord]:
        csv_dir, root = self._locate(self._data_root(dl_manager))
        column = IMAGE_COLUMNS[self.config.image_type]
        by_path: dict[str, ImageRecord] = {}
        unresolved: list[dict] = []
        methods: dict[str, int] = {}
        for abn in ABNORMALITIES[self.config.abnormality]:
            for split in ("train", "test"):
                csv_path = csv_dir / csv_name(abn, split)
                df = read_csv(csv_path, ["patient_id", "pathology", column])
                for pid, pathology, entry in zip(df["patient_id"], df["pathology"], df[column]):
                    key = str(pathology).strip().upper()
                    if key not in PATHOLOGY_TO_LABEL:
                        raise self._layout_error(
                            f"{csv_path}: unknown pathology {pathology!r} (expected {sorted(PATHOLOGY_TO_LABEL)})"
                        )
                    path, how = self._resolve(root, str(entry))
                    if path is None:
                        unresolved.append({"path": f"{csv_path.name}: {str(entry).strip()}", "reason": how})
                        continue
                    methods[how] = methods.get(how, 0) + 1
                    self._add(by_path, root, path, abn, split, str(pid).strip(), key)
        self.scan_notes["resolved_by"] = methods
        if unresolved:
            if not self.config.skip_corrupt:
                listing = "; ".join(f"{u['path']} ({u['reason']})" for u in unresolved[:5])
                raise self._layout_error(
                    f"{len(unresolved)} image path(s) from the CSVs could not be found (layout found: "
                    f"{self.layout_found}), e.g. {listing}; pass skip_corrupt=True to skip those rows (each is then "
                    "named in the log and the manifest)"
                )
            for u in unresolved:
                self._skip(u["path"], u["reason"])
            self.scan_notes["unresolved_csv_paths"] = [u["path"] for u in unresolved]
        if any(r.path.lower().endswith(".dcm") for r in by_path.values()):
            require_pydicom()  # clear error if DICOM files are used without pydicom
        return list(by_path.values())

    @staticmethod
    def _add(by_path: dict, root: Path, path: Path, abn: str, split: str, pid: str, pathology: str) -> None:
        """Add one CSV row; a second finding on the same image ("full" images) is malignant if any is."""
        rel = posix_relpath(path, root)
        rec = by_path.get(rel)
        if rec is None:
            by_path[rel] = ImageRecord(
                path=str(path),
                relpath=rel,
                label=PATHOLOGY_TO_LABEL[pathology],
                group=pid,
                official_split=split,
                extra={"abnormality_type": abn, "pathology": pathology},
            )
            return
        rec.label = max(rec.label, PATHOLOGY_TO_LABEL[pathology])
        if split == "test":
            rec.official_split = "test"
        for k, v in (("abnormality_type", abn), ("pathology", pathology)):
            rec.extra[k] = "|".join(sorted(set(rec.extra[k].split("|")) | {v}))
