"""APTOS 2019 Blindness Detection (diabetic retinopathy grade 0-4) builder.

Kaggle-only data (``data_dir`` is required)::

    <data_dir>/train.csv                    id_code,diagnosis (0..4)
    <data_dir>/train_images/<id_code>.png   (or train_images.zip)

``data_dir`` may also be the competition zip (``aptos2019-blindness-detection.zip``),
which is extracted into the cache.  The public test set has no labels, so all three
splits are carved from ``train.csv``.  APTOS publishes no patient ids (both eyes of a
patient may be present), so the ``patient`` split is image-level; a warning says so.
"""

from __future__ import annotations

from .files import ImageRecord, find_file, posix_relpath, read_csv
from .builder import MedicalImageBuilder, MedicalImageConfig

__all__ = ["APTOS2019", "APTOS2019_CLASSES"]

#: diagnosis 0..4
APTOS2019_CLASSES = ["no_dr", "mild", "moderate", "severe", "proliferative_dr"]


class APTOS2019(MedicalImageBuilder):
    """APTOS 2019 training set (3,662 fundus photographs, 5 DR grades)."""

    BUILDER_CONFIGS = [MedicalImageConfig(name="default", description="5-grade diabetic retinopathy (0-4).")]
    DEFAULT_CONFIG_NAME = "default"

    DISPLAY_NAME = "APTOS2019"
    DESCRIPTION = "APTOS 2019 Blindness Detection: retinal fundus photographs graded 0 (no DR) to 4 (proliferative DR)."
    MODALITY = "retinal fundus photographs"
    TAGS = ("ophthalmology", "retinal-fundus")
    HOMEPAGE = "https://www.kaggle.com/competitions/aptos2019-blindness-detection"
    SOURCE_HELP = (
        "APTOS 2019 is only distributed through Kaggle: accept the rules of the competition "
        "'aptos2019-blindness-detection' (https://www.kaggle.com/competitions/aptos2019-blindness-detection/data), "
        "run `kaggle competitions download -c aptos2019-blindness-detection` and pass the zip or the unzipped "
        "folder (with train.csv and train_images/) as data_dir."
    )
    EXPECTED_LAYOUT = "<data_dir>/train.csv (id_code,diagnosis) and <data_dir>/train_images/<id_code>.png"
    HAS_PATIENT_IDS = False

    def _class_names(self) -> list[str]:
        return APTOS2019_CLASSES

    def _scan(self, dl_manager) -> list[ImageRecord]:
        root = self._data_root(dl_manager)
        csv_path = find_file(root, "train.csv", max_depth=2)
        if csv_path is None:
            raise self._layout_error(f"train.csv not found under {root}")
        images = self._dir_or_archive(dl_manager, csv_path.parent, "train_images")
        if images is None:
            raise self._layout_error(f"no train_images/ folder next to {csv_path}")
        self._set_layout(f"{csv_path.name} + {images.name}/<id_code>.png")
        df = read_csv(csv_path, ["id_code", "diagnosis"])
        records = []
        for id_code, grade in zip(df["id_code"].astype(str), df["diagnosis"]):
            try:
                label = int(grade)
            except (TypeError, ValueError):
                label = -1
            if not 0 <= label < len(APTOS2019_CLASSES) or label != grade:
                raise self._layout_error(f"{csv_path}: diagnosis of {id_code!r} must be an integer 0..4, got {grade!r}")
            path = images / f"{id_code}.png"
            if not path.exists():
                for ext in (".jpg", ".jpeg", ".PNG"):
                    if (images / f"{id_code}{ext}").exists():
                        path = images / f"{id_code}{ext}"
                        break
            records.append(
                ImageRecord(
                    path=str(path), relpath=posix_relpath(path, images.parent), label=label, group=id_code,
                    has_patient_id=False,
                )
            )
        return records
