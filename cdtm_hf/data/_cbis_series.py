"""Finding a CBIS-DDSM case-CSV row's image in the three distributions of the data set.

The case-description CSVs give paths built from UIDs (``<case>/<study uid>/<series uid>/000000.dcm``); the series
UID is their third component. The distributions store the series under other names:

* TCIA, NBIA Data Retriever: ``<case>/<date>-DDSM-<n>/<n>.000000-<series description>-<n>/1-1.dcm`` and a
  ``metadata.csv`` whose ``Series UID`` and ``File Location`` columns map a UID to its folder;
* Kaggle JPEG release: ``jpeg/<series uid>/1-<n>.jpg`` and ``csv/dicom_info.csv`` (``SeriesInstanceUID``,
  ``SeriesDescription``, ``image_path``), where some ``SeriesDescription`` values are empty.

A crop and its ROI mask often share one series folder, with file names that do not say which is which. They are
told apart by the description (the DICOM ``SeriesDescription`` of each file, or the ``dicom_info.csv`` row), and
where that is missing by the pixel statistics (a mask is binary: [`cdtm_hf.data.dicom.mask_score`]).
"""

from __future__ import annotations

from pathlib import Path

from .dicom import mask_score, require_pydicom
from .files import IMAGE_EXTENSIONS, clean_rel, find_file, read_csv

__all__ = ["describe_kind", "nbia_series_index", "pick_series_image", "dicom_info_index", "strip_first"]

#: a binary ROI mask has (almost) every pixel at the extremes of its range, also after JPEG compression
MASK_SCORE_THRESHOLD = 0.95
NBIA_COLUMNS = ("Series UID", "File Location")


def strip_first(rel: str) -> str:
    """``a/b/c`` -> ``b/c`` (``""`` for a single component)."""
    parts = rel.split("/", 1)
    return parts[1] if len(parts) == 2 else ""


def describe_kind(description: str) -> str | None:
    """``"mask"``, ``"cropped"`` or ``"full"`` from a series description; ``None`` when empty or unknown."""
    d = description.strip().lower()
    if not d or d == "nan":
        return None
    if "mask" in d:
        return "mask"
    if "crop" in d:
        return "cropped"
    if "full" in d:
        return "full"
    return None


def nbia_series_index(root: Path) -> tuple[dict[str, Path], Path | None]:
    """series UID -> series folder from the NBIA Data Retriever's ``metadata.csv`` (``{}`` when there is none)."""
    meta = find_file(root, "metadata.csv", max_depth=3)
    if meta is None:
        return {}, None
    import pandas as pd

    header = pd.read_csv(meta, nrows=0).columns.str.strip()
    if not all(c in header for c in NBIA_COLUMNS):
        return {}, None
    df = read_csv(meta, NBIA_COLUMNS)
    index: dict[str, Path] = {}
    for uid, location in zip(df["Series UID"], df["File Location"]):
        rel = clean_rel(location)
        for base in (meta.parent, root):
            for cand in (rel, strip_first(rel)):
                if cand and (base / cand).is_dir():
                    index.setdefault(str(uid).strip(), base / cand)
                    break
            if str(uid).strip() in index:
                break
    return index, meta


def dicom_info_index(csv_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """series UID -> [(SeriesDescription, image_path)] from the Kaggle ``dicom_info.csv`` (``{}`` when absent)."""
    info = csv_dir / "dicom_info.csv"
    if not info.is_file():
        return {}
    df = read_csv(info, ["image_path", "SeriesInstanceUID", "SeriesDescription"])
    index: dict[str, list[tuple[str, str]]] = {}
    for uid, desc, path in zip(df["SeriesInstanceUID"], df["SeriesDescription"], df["image_path"]):
        desc = "" if not isinstance(desc, str) else desc.strip()
        index.setdefault(str(uid).strip(), []).append((desc, clean_rel(path)))
    return index


def folder_images(folder: Path) -> list[Path]:
    """The images (``.dcm`` included) directly in a series folder, sorted."""
    if not folder.is_dir():
        return []
    exts = (*IMAGE_EXTENSIONS, ".dcm")
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith(exts)]


def dicom_description(path: Path) -> str:
    """The ``SeriesDescription`` of one DICOM file (header only)."""
    ds = require_pydicom().dcmread(str(path), stop_before_pixels=True)
    return str(ds.get("SeriesDescription", "") or "")


def _kind_of(path: Path, description: str, need_stats: bool) -> str | None:
    """The kind of one candidate: from its description, else (when ``need_stats``) from its pixels."""
    if not description and path.suffix.lower() == ".dcm":
        description = dicom_description(path)
    kind = describe_kind(description)
    if kind is None and need_stats:
        score = mask_score(path)
        kind = "mask" if score >= MASK_SCORE_THRESHOLD else "image"
    return kind


def pick_series_image(candidates: list[tuple[Path, str]], wanted: str) -> tuple[Path | None, str]:
    """Choose the ``wanted`` (``"full"``/``"cropped"``) image among a series' candidates ``(path, description)``.

    Returns ``(path, how)`` where ``how`` says what decided, or ``(None, reason)``.
    """
    if not candidates:
        return None, "no image in the series folder"
    need_stats = wanted == "cropped" or len(candidates) > 1
    kinds = [(p, _kind_of(p, d, need_stats)) for p, d in candidates]
    exact = [p for p, k in kinds if k == wanted]
    if len(exact) == 1:
        return exact[0], "description"
    unknown = [p for p, k in kinds if k in (None, "image")]
    if not exact and len(unknown) == 1:
        return unknown[0], "pixel statistics" if need_stats else "only image"
    found = ", ".join(f"{p.name}={k or 'unknown'}" for p, k in kinds)
    if len(exact) > 1 or len(unknown) > 1:
        return None, f"cannot tell which image is the {wanted} one in {candidates[0][0].parent} ({found})"
    return None, f"no {wanted} image in {candidates[0][0].parent} ({found})"
