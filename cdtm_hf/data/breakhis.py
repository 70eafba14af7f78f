"""BreakHis (Breast Cancer Histopathological Image Classification) builder.

Source: ``BreaKHis_v1.tar.gz`` (public), 7,909 PNG images of 82 patients at four
magnifications.  Layout inside the archive::

    BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/<type>/
        SOB_<B|M>_<TYPE>_<patient>/<40X|100X|200X|400X>/SOB_<B|M>_<TYPE>-<year>-<patient>-<mag>-<seq>.png

Tumour type, magnification and patient id (``<year>-<patient>``, e.g. ``14-10926``) are
parsed from the file name.  ``data_dir`` may be the ``.tar.gz`` (extracted into the
cache), the extracted ``BreaKHis_v1`` folder, any folder above or below it down to
``.../breast``; with ``data_dir=None`` the archive is downloaded from the public URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import datasets

from .files import ImageRecord, child_dirs_ci, find_dir, iter_files
from .builder import MedicalImageBuilder, MedicalImageConfig

__all__ = ["BreakHis", "BreakHisConfig", "BREAKHIS_TUMOR_TYPES", "BREAKHIS_URL"]

BREAKHIS_URL = "http://www.inf.ufpr.br/vri/databases/BreaKHis_v1.tar.gz"

#: file-name code -> (benign/malignant, long name used as folder name and class name)
BREAKHIS_TUMOR_TYPES: dict[str, tuple[str, str]] = {
    "A": ("benign", "adenosis"),
    "F": ("benign", "fibroadenoma"),
    "PT": ("benign", "phyllodes_tumor"),
    "TA": ("benign", "tubular_adenoma"),
    "DC": ("malignant", "ductal_carcinoma"),
    "LC": ("malignant", "lobular_carcinoma"),
    "MC": ("malignant", "mucinous_carcinoma"),
    "PC": ("malignant", "papillary_carcinoma"),
}
MAGNIFICATIONS = (40, 100, 200, 400)
LABEL_SETS: dict[str, list[str]] = {
    "malignant": [BREAKHIS_TUMOR_TYPES[c][1] for c in ("DC", "LC", "MC", "PC")],
    "binary": ["benign", "malignant"],
    "subtype8": [v[1] for v in BREAKHIS_TUMOR_TYPES.values()],
}

FILE_RE = re.compile(
    r"^SOB_(?P<bm>[BM])_(?P<type>[A-Z]+)-(?P<patient>[^-]+-[^-]+)-(?P<mag>\d+)-(?P<seq>\d+)"
    r"\.(?:png|jpe?g|tiff?|bmp|webp)$",
    re.IGNORECASE,
)
LAYOUT = (
    "BreaKHis_v1/histology_slides/breast/{benign,malignant}/SOB/<type>/SOB_<B|M>_<TYPE>_<patient>/"
    "<40X|100X|200X|400X>/SOB_<B|M>_<TYPE>-<year>-<patient>-<mag>-<seq>.png "
    "(e.g. malignant/SOB/ductal_carcinoma/SOB_M_DC_14-10926/200X/SOB_M_DC-14-10926-200-001.png)"
)


@dataclass
class BreakHisConfig(MedicalImageConfig):
    """BreakHis options.

    Attributes:
        label_set: ``"malignant"`` (DC/LC/MC/PC, the paper's task), ``"binary"``
            (benign/malignant) or ``"subtype8"`` (all eight tumour types).
        magnification: 40, 100, 200 or 400 (``"200X"`` is accepted too), or
            ``"all"``/``None`` for every magnification.
    """

    label_set: str = "malignant"
    magnification: int | str | None = 200


def _parse_magnification(value) -> int | None:
    if value is None or (isinstance(value, str) and value.lower() == "all"):
        return None
    try:
        mag = int(str(value).upper().rstrip("X"))
    except ValueError:
        mag = -1
    if mag not in MAGNIFICATIONS:
        raise ValueError(f"magnification must be one of {MAGNIFICATIONS} or 'all', got {value!r}")
    return mag


class BreakHis(MedicalImageBuilder):
    """BreakHis builder; configs ``malignant_200x`` (default), ``binary``, ``subtype8``,
    ``all_magnifications`` (the four malignant types at every magnification)."""

    BUILDER_CONFIG_CLASS = BreakHisConfig
    BUILDER_CONFIGS = [
        BreakHisConfig(
            name="malignant_200x",
            label_set="malignant",
            magnification=200,
            description="Four malignant types (DC/LC/MC/PC) at 200X: 896/163/196/135 images (the paper's task).",
        ),
        BreakHisConfig(
            name="binary",
            label_set="binary",
            magnification="all",
            description="Benign vs malignant, all magnifications (pass magnification=40/100/200/400 to restrict).",
        ),
        BreakHisConfig(
            name="subtype8",
            label_set="subtype8",
            magnification="all",
            description="Eight tumour types, all magnifications (pass magnification=... to restrict).",
        ),
        BreakHisConfig(
            name="all_magnifications",
            label_set="malignant",
            magnification="all",
            description="Four malignant types (DC/LC/MC/PC) at all four magnifications.",
        ),
    ]
    DEFAULT_CONFIG_NAME = "malignant_200x"

    DISPLAY_NAME = "BreakHis"
    DESCRIPTION = "BreakHis: 7,909 breast tumour histopathology images (82 patients, 40X-400X)."
    MODALITY = "BreakHis-like H&E histopathology images"
    TAGS = ("histopathology",)
    HOMEPAGE = "https://web.inf.ufpr.br/vri/databases/breast-cancer-histopathological-database-breakhis/"
    CITATION = (
        "@article{spanhol2016breakhis, title={A Dataset for Breast Cancer Histopathological Image Classification},"
        " author={Spanhol, Fabio A. and Oliveira, Luiz S. and Petitjean, Caroline and Heutte, Laurent},"
        " journal={IEEE Transactions on Biomedical Engineering}, volume={63}, number={7}, pages={1455--1462},"
        " year={2016}}"
    )
    SOURCE_HELP = (
        f"Get BreaKHis_v1.tar.gz from {BREAKHIS_URL} (see the VRI/UFPR BreakHis page) and pass the .tar.gz "
        "or the extracted folder as data_dir."
    )
    EXPECTED_LAYOUT = LAYOUT
    DOWNLOAD_URLS = {"archive": BREAKHIS_URL}
    DEFAULT_RATIOS = (3, 1, 1)

    def _validate_config(self) -> None:
        super()._validate_config()
        if self.config.label_set not in LABEL_SETS:
            raise ValueError(f"label_set must be one of {sorted(LABEL_SETS)}, got {self.config.label_set!r}")
        _parse_magnification(self.config.magnification)

    def _class_names(self) -> list[str]:
        return LABEL_SETS[self.config.label_set]

    def _extra_features(self) -> dict:
        return {"tumor_type": datasets.Value("string"), "magnification": datasets.Value("int32")}

    @staticmethod
    def _is_breast_dir(d: Path) -> bool:
        children = child_dirs_ci(d)
        return any(k in children and (children[k] / "SOB").is_dir() for k in ("benign", "malignant"))

    def _scan(self, dl_manager) -> list[ImageRecord]:
        if self.config.data_dir is None:
            root = Path(self._download(dl_manager, BREAKHIS_URL))
        else:
            root = self._data_root(dl_manager)
        breast = find_dir(root, self._is_breast_dir, max_depth=4)
        if breast is None:
            raise self._layout_error(f"no '<benign|malignant>/SOB/...' folders found under {root}")

        self._set_layout(f"{LAYOUT.split(' (e.g.')[0]} (found at {breast})")
        label_set = self.config.label_set
        names = self._class_names()
        wanted_mag = _parse_magnification(self.config.magnification)
        records = []
        for path in iter_files(breast):
            rel = path.relative_to(breast)
            parts = rel.parts
            m = FILE_RE.match(path.name)
            if len(parts) != 6 or parts[1].upper() != "SOB" or m is None:
                raise self._layout_error(f"unexpected file {rel.as_posix()!r} (under {breast})")
            code, mag, patient = m["type"].upper(), int(m["mag"]), m["patient"]
            if code not in BREAKHIS_TUMOR_TYPES:
                raise self._layout_error(
                    f"unknown tumour type code {code!r} in {rel.as_posix()!r}; known: {sorted(BREAKHIS_TUMOR_TYPES)}"
                )
            kind, long_name = BREAKHIS_TUMOR_TYPES[code]
            if (
                parts[0].lower() != kind
                or m["bm"].upper() != kind[0].upper()
                or parts[4].upper() != f"{mag}X"
                or mag not in MAGNIFICATIONS
            ):
                raise self._layout_error(
                    f"file {rel.as_posix()!r} is in the wrong folder (type {code} is {kind}, magnification {mag}X)"
                )
            if wanted_mag is not None and mag != wanted_mag:
                continue
            if label_set == "malignant":
                if kind != "malignant":
                    continue
                label = names.index(long_name)
            elif label_set == "binary":
                label = names.index(kind)
            else:
                label = names.index(long_name)
            records.append(
                ImageRecord(
                    path=str(path),
                    relpath=rel.as_posix(),
                    label=label,
                    group=patient,
                    extra={"tumor_type": code, "magnification": mag},
                )
            )
        return records
