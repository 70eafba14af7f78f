"""CheXpert (chest X-ray, multi-label) builder.

Accepted layouts (the "small" or full-resolution release, after registration; the one found is logged and recorded
in the manifest as ``layout``)::

    <data_dir>/CheXpert-v1.0-small/train.csv, valid.csv          the official zip, extracted (or the .zip itself)
    <data_dir>/CheXpert-v1.0-small/{train,valid}/patientXXXXX/studyN/viewM_<frontal|lateral>.jpg

    <data_dir>/train.csv, valid.csv, train/, valid/               the common mirror, or a renamed release folder
        (``Path`` values still begin with ``CheXpert-v1.0-small/``)

CSV columns: Path, Sex, Age, Frontal/Lateral, AP/PA, <14 observations>.  ``Path`` is resolved against the parent
of the CSV folder, the CSV folder itself, and the CSV folder without the first component of ``Path``.  The
``file`` column keeps the CSV's ``Path``.  Labels are the five competition observations as a multi-hot ``float32``
vector in the ``labels`` column (order: Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion).
Uncertain labels (-1) follow ``uncertainty_policy``: ``"ones"`` (U-Ones, -1 -> 1), ``"zeros"`` (U-Zeros, -1 -> 0)
or ``"ignore"`` (drop rows with any -1 among the five).  Blank/NaN -> 0.  The patient id (``patientXXXXX``) is
parsed from ``Path``.  Official split: train.csv -> train/validation (carved by patient), valid.csv -> test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from .files import ImageRecord, clean_rel, find_dir, read_csv
from .builder import MedicalImageBuilder, MedicalImageConfig

__all__ = ["CheXpert", "CheXpertConfig", "CHEXPERT_LABELS", "UNCERTAINTY_POLICIES"]

#: the five CheXpert competition observations, in label-vector order
CHEXPERT_LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
UNCERTAINTY_POLICIES = ("ones", "zeros", "ignore")
PATIENT_RE = re.compile(r"(patient\d+)")
#: how a CSV ``Path`` is resolved against the folder holding train.csv: name -> (description, resolver)
PATH_LAYOUTS = {
    "official": "CheXpert-v1.0-small/{train,valid}.csv, Path relative to the folder above the CSVs",
    "mirror": "{train,valid}.csv with train/ and valid/ beside them, Path's first component "
    "(CheXpert-v1.0-small/) dropped",
    "csv_folder": "Path relative to the folder of the CSVs",
}


def _candidate(base: Path, rel: str, layout: str) -> Path:
    if layout == "official":
        return base.parent / rel
    if layout == "mirror":
        parts = rel.split("/", 1)
        return base / (parts[1] if len(parts) == 2 else rel)
    return base / rel


def resolve_layout(base: Path, paths: list[str]) -> str:
    """The layout under which the CSV ``Path`` values exist (the first that resolves the first existing row)."""
    for rel in paths[:50]:
        for layout in PATH_LAYOUTS:
            if _candidate(base, rel, layout).is_file():
                return layout
    # nothing resolves: keep the layout the folder name suggests (the verification then names the missing files)
    return "official" if paths and paths[0].split("/", 1)[0] == base.name else "mirror"


@dataclass
class CheXpertConfig(MedicalImageConfig):
    """CheXpert options.

    Attributes:
        uncertainty_policy: ``"ones"`` (U-Ones), ``"zeros"`` (U-Zeros) or ``"ignore"``.
        frontal_only: keep only frontal views (``Frontal/Lateral == "Frontal"``).
    """

    uncertainty_policy: str = "ones"
    frontal_only: bool = False


def map_uncertain(values: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Apply an uncertainty policy to raw CheXpert values (1, 0, -1, NaN).

    Returns ``(labels, keep)``: float32 0/1 labels and a boolean row mask (``False`` for
    rows dropped by the ``"ignore"`` policy).
    """
    if policy not in UNCERTAINTY_POLICIES:
        raise ValueError(f"uncertainty_policy must be one of {UNCERTAINTY_POLICIES}, got {policy!r}")
    v = np.nan_to_num(np.asarray(values, dtype=float), nan=0.0)
    uncertain = v == -1
    keep = ~uncertain.any(axis=1) if policy == "ignore" else np.ones(len(v), dtype=bool)
    out = np.where(uncertain, 1.0 if policy == "ones" else 0.0, v)
    return out.astype(np.float32), keep


class CheXpert(MedicalImageBuilder):
    """CheXpert builder (multi-label over the 5 competition observations)."""

    BUILDER_CONFIG_CLASS = CheXpertConfig
    BUILDER_CONFIGS = [CheXpertConfig(name="default", description="5 competition observations, multi-hot.")]
    DEFAULT_CONFIG_NAME = "default"

    DISPLAY_NAME = "CheXpert"
    DESCRIPTION = "CheXpert chest radiographs (Stanford), multi-label over the 5 competition observations."
    MODALITY = "chest radiographs"
    TAGS = ("radiology", "chest-x-ray")
    HOMEPAGE = "https://stanfordmlgroup.github.io/competitions/chexpert/"
    CITATION = (
        "@inproceedings{irvin2019chexpert, title={CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels "
        "and Expert Comparison}, author={Irvin, Jeremy and others}, booktitle={AAAI}, year={2019}}"
    )
    LICENSE = "Stanford University School of Medicine CheXpert Dataset Research Use Agreement"
    SOURCE_HELP = (
        "CheXpert requires registration: request it at https://stanfordmlgroup.github.io/competitions/chexpert/ "
        "(Stanford AIMI), download CheXpert-v1.0-small.zip and pass the zip or the folder containing "
        "CheXpert-v1.0-small/ as data_dir."
    )
    EXPECTED_LAYOUT = (
        "<data_dir>/CheXpert-v1.0-small/{train,valid}.csv (Path,Sex,Age,Frontal/Lateral,AP/PA,<observations>) "
        "with Path = CheXpert-v1.0-small/{train,valid}/patientXXXXX/studyN/viewM_frontal.jpg, or the mirror "
        "<data_dir>/{train.csv,valid.csv,train/,valid/}"
    )
    HAS_OFFICIAL_SPLIT = True
    MULTI_LABEL = True
    #: names of the multi-hot ``labels`` entries (also via ``cdtm_hf.data.label_names(ds)``)
    LABEL_NAMES = CHEXPERT_LABELS

    def _validate_config(self) -> None:
        super()._validate_config()
        if self.config.uncertainty_policy not in UNCERTAINTY_POLICIES:
            raise ValueError(
                f"uncertainty_policy must be one of {UNCERTAINTY_POLICIES}, got {self.config.uncertainty_policy!r}"
            )

    def _class_names(self) -> list[str]:
        return self.LABEL_NAMES

    def _extra_features(self) -> dict:
        return {
            "sex": datasets.Value("string"),
            "age": datasets.Value("int32"),
            "view": datasets.Value("string"),
            "ap_pa": datasets.Value("string"),
        }

    def _scan(self, dl_manager) -> list[ImageRecord]:
        root = self._data_root(dl_manager)
        base = find_dir(root, lambda d: (d / "train.csv").is_file() and (d / "valid.csv").is_file(), max_depth=2)
        if base is None:
            raise self._layout_error(f"train.csv and valid.csv not found under {root}")
        cfg = self.config
        required = ["Path", *CHEXPERT_LABELS] + (["Frontal/Lateral"] if cfg.frontal_only else [])
        records: list[ImageRecord] = []
        dropped_uncertain, dropped_lateral = 0, 0
        frames = {name: read_csv(base / name, required) for name in ("train.csv", "valid.csv")}
        paths = [clean_rel(p) for df in frames.values() for p in df["Path"]]
        layout = resolve_layout(base, paths)
        self._set_layout(f"{PATH_LAYOUTS[layout]} (CSVs in {base})")
        for csv_file, official in (("train.csv", "train"), ("valid.csv", "test")):
            csv_path = base / csv_file
            df = frames[csv_file]
            raw = df[CHEXPERT_LABELS].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
            bad = ~np.isnan(raw) & ~np.isin(raw, (-1.0, 0.0, 1.0))
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise self._layout_error(f"{csv_path}: row {row} has label values outside {{1, 0, -1, blank}}")
            labels, keep = map_uncertain(raw, cfg.uncertainty_policy)
            dropped_uncertain += int((~keep).sum())
            if cfg.frontal_only:
                frontal = df["Frontal/Lateral"].astype(str).str.strip().str.lower().eq("frontal").to_numpy()
                dropped_lateral += int((keep & ~frontal).sum())
                keep &= frontal
            empty = pd.Series([None] * len(df))
            cols = {c: df[c] if c in df.columns else empty for c in ("Sex", "Age", "Frontal/Lateral", "AP/PA")}
            for i in np.flatnonzero(keep):
                rel = clean_rel(df["Path"].iat[i])
                m = PATIENT_RE.search(rel)
                if m is None:
                    raise self._layout_error(f"{csv_path}: cannot parse a patient id (patientXXXXX) from Path {rel!r}")
                path = _candidate(base, rel, layout)
                if not path.is_file():  # a row that only resolves another way (then the verification names it)
                    path = next((c for c in (_candidate(base, rel, k) for k in PATH_LAYOUTS) if c.is_file()), path)
                age = pd.to_numeric(cols["Age"].iat[i], errors="coerce")
                records.append(
                    ImageRecord(
                        path=str(path),
                        relpath=rel,
                        label=labels[i].tolist(),
                        group=m.group(1),
                        official_split=official,
                        extra={
                            "sex": _text(cols["Sex"].iat[i]),
                            "age": int(age) if pd.notna(age) else -1,
                            "view": _text(cols["Frontal/Lateral"].iat[i]),
                            "ap_pa": _text(cols["AP/PA"].iat[i]),
                        },
                    )
                )
        self.scan_notes.update(
            uncertainty_policy=cfg.uncertainty_policy,
            frontal_only=cfg.frontal_only,
            dropped_uncertain_rows=dropped_uncertain,
            dropped_lateral_rows=dropped_lateral,
        )
        return records


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
