"""Synthetic fixture trees that mirror the real layouts of the medical datasets.

No real data is used: every image is a tiny generated PNG/JPEG.  The generators are
used by ``tests/test_data_*.py`` and by ``benchmarks/prepare_breakhis.py`` (which builds
a BreakHis-size tree of 7,909 images with the real class/patient/magnification
proportions).  Each ``make_*`` function returns a dict describing what it wrote, so
tests can compare builder output with ground truth.
"""

from __future__ import annotations

import csv
import io
import os
import tarfile
import zipfile
from functools import lru_cache
from pathlib import Path
from collections.abc import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402

PathLike = str | os.PathLike

__all__ = [
    "BREAKHIS_REAL_COUNTS",
    "BREAKHIS_REAL_PATIENTS",
    "CHEXPERT_OBSERVATIONS",
    "corrupt_file",
    "image_bytes",
    "make_aptos2019_tree",
    "make_breakhis_tree",
    "make_cbis_ddsm_tree",
    "make_chexpert_tree",
    "make_cbis_ddsm_nbia_tree",
    "make_hcrf_tree",
    "make_imagefolder_tree",
    "make_isic2019_tree",
    "make_tar_gz",
    "make_zip",
    "manifest",
    "prepare",
    "write_dicom",
    "write_image",
    "write_mask_image",
]


# --------------------------------------------------------------------------- images
@lru_cache(maxsize=256)
def image_bytes(fmt: str = "PNG", size: int = 8, seed: int = 0, mode: str = "RGB") -> bytes:
    """Encoded bytes of a tiny random image (cached: writing many files stays cheap)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    arr = (rng.random((size, size, channels)) * 255).astype("uint8")
    img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode=None)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _fmt_for(path: Path) -> str:
    ext = path.suffix.lower()
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
    return {**formats, ".webp": "WEBP"}[ext]


def mask_array(size: int = 32, seed: int = 0) -> np.ndarray:
    """A binary ROI mask (0 / 255): one block aligned to the 8x8 JPEG grid, so JPEG keeps it (almost) binary."""
    arr = np.zeros((size, size), dtype=np.uint8)
    o = 8 * (seed % 2)
    arr[o : o + size // 2, 8 : 8 + size // 2] = 255
    return arr


def gray_array(size: int = 32, seed: int = 0) -> np.ndarray:
    """A grayscale 'tissue' image: values spread over the middle of the range (never binary-looking)."""
    rng = np.random.default_rng(seed)
    return (60 + rng.random((size, size)) * 140).astype(np.uint8)


def write_mask_image(path: PathLike, size: int = 32, seed: int = 0) -> Path:
    """Write a binary ROI mask image (format from the extension)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask_array(size, seed)).save(path, format=_fmt_for(path))
    return path


def write_gray_image(path: PathLike, size: int = 32, seed: int = 0) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gray_array(size, seed)).save(path, format=_fmt_for(path))
    return path


def write_16bit_image(path: PathLike, size: int = 16, high: int = 40000) -> Path:
    """A 16-bit grayscale gradient (PIL mode I;16) from 1000 to ``high``: turns all white under convert("RGB")."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.linspace(1000, high, size * size).reshape(size, size).astype(np.uint16)
    Image.fromarray(arr).save(path, format=_fmt_for(path))
    return path


def write_dicom(
    path: PathLike,
    pixels: np.ndarray,
    series_description: str = "",
    series_uid: str = "1.2.3",
    patient_id: str = "P_00001",
) -> Path:
    """Write a minimal monochrome DICOM file with pydicom (no network; the test skips without pydicom)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.ascontiguousarray(pixels.astype(np.uint16))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.SeriesInstanceUID, ds.Modality = patient_id, series_uid, "MG"
    if series_description:
        ds.SeriesDescription = series_description
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_image(path: PathLike, size: int = 8, seed: int = 0, mode: str = "RGB") -> Path:
    """Write a tiny image whose format follows the file extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(_fmt_for(path), size, seed % 16, mode))
    return path


def corrupt_file(path: PathLike, keep: float = 0.5) -> Path:
    """Truncate an image file (a realistic 'interrupted download' corruption)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def make_tar_gz(src: PathLike, out: PathLike, arcname: str | None = None) -> Path:
    """``tar czf out -C dirname(src) basename(src)``."""
    src, out = Path(src), Path(out)
    with tarfile.open(out, "w:gz", compresslevel=1) as tar:
        tar.add(src, arcname=arcname or src.name)
    return out


def make_zip(src: PathLike, out: PathLike) -> Path:
    """Zip a directory so that the archive contains ``<basename(src)>/...``."""
    src, out = Path(src), Path(out)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src.parent).as_posix())
    return out


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# --------------------------------------------------------------------------- BreakHis
BREAKHIS_TYPES = {
    "A": ("benign", "adenosis"),
    "F": ("benign", "fibroadenoma"),
    "PT": ("benign", "phyllodes_tumor"),
    "TA": ("benign", "tubular_adenoma"),
    "DC": ("malignant", "ductal_carcinoma"),
    "LC": ("malignant", "lobular_carcinoma"),
    "MC": ("malignant", "mucinous_carcinoma"),
    "PC": ("malignant", "papillary_carcinoma"),
}
#: images per (tumour type, magnification) in the real BreaKHis_v1 archive (7,909 in total)
BREAKHIS_REAL_COUNTS: dict[str, dict[int, int]] = {
    "A": {40: 114, 100: 113, 200: 111, 400: 106},
    "F": {40: 253, 100: 260, 200: 264, 400: 237},
    "PT": {40: 109, 100: 121, 200: 108, 400: 115},
    "TA": {40: 149, 100: 150, 200: 140, 400: 130},
    "DC": {40: 864, 100: 903, 200: 896, 400: 788},
    "LC": {40: 156, 100: 170, 200: 163, 400: 137},
    "MC": {40: 205, 100: 222, 200: 196, 400: 169},
    "PC": {40: 145, 100: 142, 200: 135, 400: 138},
}
#: patients per tumour type in the real archive (82 in total)
BREAKHIS_REAL_PATIENTS: dict[str, int] = {"A": 4, "F": 10, "PT": 3, "TA": 7, "DC": 38, "LC": 5, "MC": 9, "PC": 6}


def make_breakhis_tree(
    root: PathLike,
    scale: str = "small",
    patients: dict[str, int] | None = None,
    images_per_patient: int = 2,
    magnifications: Sequence[int] = (40, 100, 200, 400),
    seed: int = 0,
) -> dict:
    """Write ``<root>/BreaKHis_v1/histology_slides/breast/...`` with real naming.

    ``scale="small"``: ``patients[type]`` patients (default 3, DC 4) with
    ``images_per_patient`` images per magnification.  ``scale="full"``: the real
    7,909-image / 82-patient proportions (:data:`BREAKHIS_REAL_COUNTS`), images spread
    unevenly over patients.

    Returns ``{"root", "breast", "files", "counts": {(code, mag): n}, "patients": {code: [ids]},
    "patient_of": {relpath: pid}}`` (relpaths relative to ``breast``).
    """
    root = Path(root)
    breast = root / "BreaKHis_v1" / "histology_slides" / "breast"
    rng = np.random.default_rng(seed)
    if patients is None:
        patients = BREAKHIS_REAL_PATIENTS if scale == "full" else {c: (4 if c == "DC" else 3) for c in BREAKHIS_TYPES}
    counts: dict[tuple[str, int], int] = {}
    pids: dict[str, list[str]] = {}
    patient_of: dict[str, str] = {}
    files: list[Path] = []
    next_id = 10000
    for code, (kind, long_name) in BREAKHIS_TYPES.items():
        n_pat = patients.get(code, 0)
        if n_pat == 0:
            continue
        ids = []
        for k in range(n_pat):
            # the real archive has suffixed ids such as 14-22549AB for some benign patients
            ids.append(f"14-{next_id}" + ("AB" if code == "A" and k == 0 else ""))
            next_id += 1 + int(rng.integers(0, 50))
        pids[code] = ids
        for mag in magnifications:
            if scale == "full":
                total = BREAKHIS_REAL_COUNTS[code][mag]
                weights = rng.dirichlet(np.full(n_pat, 2.0))
                per = rng.multinomial(total - n_pat, weights) + 1
            else:
                per = np.full(n_pat, images_per_patient)
            counts[(code, mag)] = int(per.sum())
            for pid, n_img in zip(ids, per):
                folder = breast / kind / "SOB" / long_name / f"SOB_{kind[0].upper()}_{code}_{pid}" / f"{mag}X"
                folder.mkdir(parents=True, exist_ok=True)
                for seq in range(1, int(n_img) + 1):
                    p = folder / f"SOB_{kind[0].upper()}_{code}-{pid}-{mag}-{seq:03d}.png"
                    p.write_bytes(image_bytes("PNG", 8, (seq + mag) % 16))
                    files.append(p)
                    patient_of[p.relative_to(breast).as_posix()] = pid
    return {"root": root, "breast": breast, "files": files, "counts": counts, "patients": pids, "patient_of": patient_of}


# --------------------------------------------------------------------------- HCRF
def make_hcrf_tree(
    root: PathLike,
    n_normal: int = 12,
    n_abnormal: int = 30,
    class_dirs: tuple[str, str] = ("Normal", "Abnormal"),
    ext: str = ".png",
    image_subdir: str | None = None,
    mask_subdir: str | None = None,
) -> dict:
    """Write ``<root>/<Normal>/*.png`` and ``<root>/<Abnormal>/*.png``.

    With ``image_subdir``/``mask_subdir`` (the lab's releases with masks): ``<class>/<image_subdir>/<name>`` and,
    for the abnormal class, a binary mask of the same name in ``<Abnormal>/<mask_subdir>/``.
    """
    root = Path(root)
    files: dict[str, list] = {"normal": [], "abnormal": []}
    masks = []
    for key, dname, n in (("normal", class_dirs[0], n_normal), ("abnormal", class_dirs[1], n_abnormal)):
        folder = root / dname / image_subdir if image_subdir else root / dname
        for i in range(n):
            files[key].append(write_image(folder / f"{key}_{i:04d}{ext}", seed=i))
            if mask_subdir and key == "abnormal":
                masks.append(write_mask_image(root / dname / mask_subdir / f"{key}_{i:04d}{ext}", seed=i))
    return {"root": root, "files": files, "masks": masks}


# --------------------------------------------------------------------------- ISIC 2019
ISIC_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]


def make_isic2019_tree(
    root: PathLike,
    per_class: dict[str, int] | None = None,
    with_metadata: bool = True,
    images_per_lesion: int = 2,
    seed: int = 0,
) -> dict:
    """Write the ISIC 2019 training CSVs and ``ISIC_2019_Training_Input/<image>.jpg``.

    Images of one lesion share a ``lesion_id`` (every ``images_per_lesion`` images of a
    class); the last image of every class has no lesion id (as in the BCN subset).
    """
    root = Path(root)
    per_class = per_class or {c: 6 for c in ISIC_CLASSES}
    rows, meta, lesion_of = [], [], {}
    k = 0
    for c in ISIC_CLASSES:
        n = per_class.get(c, 0)
        for i in range(n):
            image = f"ISIC_{k:07d}"
            k += 1
            write_image(root / "ISIC_2019_Training_Input" / f"{image}.jpg", seed=k)
            rows.append([image] + [1.0 if c == cc else 0.0 for cc in ISIC_CLASSES] + [0.0])
            lesion = "" if i == n - 1 else f"IL_{c}_{i // images_per_lesion:04d}"
            lesion_of[image] = lesion or image
            meta.append([image, 40 + i % 30, "anterior torso", lesion, "male" if i % 2 else "female"])
    _write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ["image"] + ISIC_CLASSES + ["UNK"], rows)
    if with_metadata:
        _write_csv(
            root / "ISIC_2019_Training_Metadata.csv",
            ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"],
            meta,
        )
    return {"root": root, "labels": {r[0]: ISIC_CLASSES[r[1:9].index(1.0)] for r in rows}, "lesion_of": lesion_of}


# --------------------------------------------------------------------------- APTOS 2019
def make_aptos2019_tree(root: PathLike, per_grade: Sequence[int] = (8, 5, 6, 4, 5)) -> dict:
    """Write ``train.csv`` (id_code, diagnosis) and ``train_images/<id_code>.png``."""
    root = Path(root)
    rows = []
    k = 0
    for grade, n in enumerate(per_grade):
        for _ in range(n):
            id_code = f"{k * 7919 % 0xFFFFFFFFFFFF:012x}"
            k += 1
            write_image(root / "train_images" / f"{id_code}.png", seed=k)
            rows.append([id_code, grade])
    _write_csv(root / "train.csv", ["id_code", "diagnosis"], rows)
    return {"root": root, "labels": dict((r[0], r[1]) for r in rows)}


# --------------------------------------------------------------------------- CBIS-DDSM
CBIS_COLUMNS = [
    "patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
    "image file path", "cropped image file path", "ROI mask file path",
]  # fmt: skip


def make_cbis_ddsm_tree(
    root: PathLike,
    n_patients: int = 16,
    test_fraction: float = 0.25,
    seed: int = 0,
    shared_roi_series: bool = False,
    blank_descriptions: int = 0,
) -> dict:
    """Write the Kaggle JPEG layout: ``csv/*.csv`` (+ ``dicom_info.csv``) and ``jpeg/<uid>/*.jpg``.

    Every patient has one mass case (every second patient also a calcification case,
    every fourth patient two masses on the same mammogram); pathologies cycle through
    MALIGNANT / BENIGN / BENIGN_WITHOUT_CALLBACK.  The last ``test_fraction`` of
    patients go to the official ``*_test_set.csv`` files.

    ``shared_roi_series=True`` mirrors the real release: a crop and its binary ROI mask share one
    ``jpeg/<series uid>/`` folder (``1-1.jpg``/``1-2.jpg``, the crop first or second), and the CSV's cropped and
    ROI paths carry the same series uid.  ``blank_descriptions=n`` empties ``SeriesDescription`` in
    ``dicom_info.csv`` for the rows of the first ``n`` such series (and of the first ``n`` full mammograms).
    Returns ``"crop_files"``: the relative paths of the true crops.
    """
    root = Path(root)
    pathologies = ["MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK", "MALIGNANT"]
    n_test = max(2, int(round(n_patients * test_fraction)))
    tables: dict[str, list] = {f"{a}_case_description_{s}_set.csv": [] for a in ("mass", "calc") for s in ("train", "test")}
    dicom_rows = []
    uid = 0
    crops: dict[str, str] = {}
    crop_files: set[str] = set()
    blanks = {"shared": 0, "full": 0}

    def uids():
        nonlocal uid
        uid += 1
        return f"1.3.6.1.4.1.9590.100.1.2.{uid}1", f"1.3.6.1.4.1.9590.100.1.2.{uid}2"

    def desc_for(desc: str, kind: str) -> str:
        return "" if blanks[kind] <= blank_descriptions and blank_descriptions else desc

    def new_series(desc: str, file_name: str, pid_tag: str):
        study, series = uids()
        jpeg_rel = f"jpeg/{series}/{file_name}"
        if desc == "full mammogram images":
            blanks["full"] += 1
            write_gray_image(root / jpeg_rel, seed=uid)
            desc = desc_for(desc, "full")
        else:
            write_image(root / jpeg_rel, seed=uid, mode="L")
            if desc == "cropped images":
                crop_files.add(jpeg_rel)
        dicom_rows.append([f"CBIS-DDSM/{jpeg_rel}", f"CBIS-DDSM/{jpeg_rel}", pid_tag, desc, series, study])
        return study, series

    def shared_series(pid_tag: str):
        study, series = uids()
        blanks["shared"] += 1
        crop_name, mask_name = ("1-1.jpg", "1-2.jpg") if uid % 2 else ("1-2.jpg", "1-1.jpg")
        write_gray_image(root / "jpeg" / series / crop_name, seed=uid)
        write_mask_image(root / "jpeg" / series / mask_name, seed=uid)
        crop_files.add(f"jpeg/{series}/{crop_name}")
        for name, desc in ((crop_name, "cropped images"), (mask_name, "ROI mask images")):
            rel = f"CBIS-DDSM/jpeg/{series}/{name}"
            dicom_rows.append([rel, rel, pid_tag, desc_for(desc, "shared"), series, study])
        return study, series

    full_labels: dict[str, int] = {}
    for p in range(n_patients):
        pid = f"P_{p * 3 + 1:05d}"
        split = "test" if p >= n_patients - n_test else "train"
        side, view = ("LEFT", "CC") if p % 2 == 0 else ("RIGHT", "MLO")
        abn_types = ["mass"] + (["calc"] if p % 2 == 0 else [])
        for a in abn_types:
            prefix = ("Mass" if a == "mass" else "Calc") + ("-Training" if split == "train" else "-Test")
            tag = f"{prefix}_{pid}_{side}_{view}"
            study, series = new_series("full mammogram images", "1-1.jpg", tag)
            full_path = f"{tag}/{study}/{series}/000000.dcm"
            # every 4th patient has two masses on the same mammogram (as in the real CSVs)
            n_findings = 2 if (a == "mass" and p % 4 == 1) else 1
            for f in range(n_findings):
                if shared_roi_series:
                    cstudy, cseries = shared_series(f"{tag}_{f + 1}")
                    mstudy, mseries = cstudy, cseries
                else:
                    cstudy, cseries = new_series("cropped images", "1-2.jpg", f"{tag}_{f + 1}")
                    # the ROI mask lives in its own series in this variant
                    mstudy, mseries = new_series("ROI mask images", "1-1.jpg", f"{tag}_{f + 1}")
                pathology = pathologies[(p + (a == "calc") + f) % len(pathologies)]
                crop_path = f"{tag}_{f + 1}/{cstudy}/{cseries}/000001.dcm"
                crops[crop_path] = pathology
                full_labels[full_path] = max(full_labels.get(full_path, 0), int(pathology == "MALIGNANT"))
                row = [pid, 2, side, view, f + 1, a, "OVAL", "CIRCUMSCRIBED", 3, pathology, 4,
                       full_path + "\n", crop_path + "\n", f"{tag}_{f + 1}/{mstudy}/{mseries}/000000.dcm\n"]  # fmt: skip
                tables[f"{a}_case_description_{split}_set.csv"].append(row)
    for name, rows in tables.items():
        header = list(CBIS_COLUMNS)
        if name.startswith("calc"):
            header[1], header[6], header[7] = "breast density", "calc type", "calc distribution"
        _write_csv(root / "csv" / name, header, rows)
    _write_csv(
        root / "csv" / "dicom_info.csv",
        ["file_path", "image_path", "PatientID", "SeriesDescription", "SeriesInstanceUID", "StudyInstanceUID"],
        dicom_rows,
    )
    n_test_rows = sum(len(v) for k, v in tables.items() if "_test_" in k)
    n_rows = sum(len(v) for v in tables.values())
    test_pids = {r[0] for k, v in tables.items() if "_test_" in k for r in v}
    return {
        "root": root,
        "n_rows": n_rows,
        "n_test_rows": n_test_rows,
        "test_patients": test_pids,
        "crops": crops,
        "crop_files": crop_files,
        "full_labels": full_labels,
    }


def make_cbis_ddsm_nbia_tree(root: PathLike, n_patients: int = 8, no_description: int = 1) -> dict:
    """Write CBIS-DDSM as TCIA's NBIA Data Retriever saves it, with the four case CSVs beside it.

    ``<root>/manifest-1600000000000/metadata.csv`` (``Series UID``, ..., ``File Location``, NBIA's columns) and
    ``<root>/manifest-1600000000000/CBIS-DDSM/<case>/<date>-DDSM-NA-<n>/1.000000-<series description>-<n>/1-<k>.dcm``.
    Each ROI series holds the crop and its binary mask as ``1-1.dcm``/``1-2.dcm`` in alternating order; their DICOM
    ``SeriesDescription`` tells them apart, except in the first ``no_description`` series (pixel statistics then).
    The CSV paths are TCIA's UID paths (``<case>/<study uid>/<series uid>/00000<k>.dcm``), which do not exist on disk.
    Returns ``crop_files``/``full_files`` (relative to ``root``) and the row counts.
    """
    root = Path(root)
    top = root / "manifest-1600000000000"
    header = ["Series UID", "Collection", "3rd Party Analysis", "Data Description URI", "Subject ID", "Study UID",
              "Study Description", "Study Date", "Series Description", "Manufacturer", "Modality", "SOP Class Name",
              "SOP Class UID", "Number of Images", "File Size", "File Location", "Download Timestamp"]  # fmt: skip
    meta_rows, tables = [], {f"{a}_case_description_{s}_set.csv": [] for a in ("mass", "calc") for s in ("train", "test")}
    crop_files, full_files, n = set(), set(), 0

    def series(case: str, desc: str, images: list[tuple[np.ndarray, str]]) -> tuple[str, str, list[str]]:
        nonlocal n
        n += 1
        study, uid = f"1.3.6.1.4.1.9590.100.1.2.{n}1", f"1.3.6.1.4.1.9590.100.1.2.{n}2"
        location = f"CBIS-DDSM/{case}/07-20-2016-DDSM-NA-{74990 + n}/1.000000-{desc}-{24510 + n}"
        files = []
        for k, (pixels, file_desc) in enumerate(images, start=1):
            rel = f"{top.name}/{location}/1-{k}.dcm"
            write_dicom(root / rel, pixels, file_desc, uid, case.split("_")[1] + "_" + case.split("_")[2])
            files.append(rel)
        meta_rows.append([uid, "CBIS-DDSM", "NO", "", case, study, "", "07-20-2016", desc, "", "MG", "", "",
                          len(images), "1 MB", ".\\" + location.replace("/", "\\"), ""])  # fmt: skip
        return study, uid, files

    for p in range(n_patients):
        pid = f"P_{p * 3 + 1:05d}"
        split = "test" if p >= n_patients - 2 else "train"
        a = "mass" if p % 2 == 0 else "calc"
        case = f"{'Mass' if a == 'mass' else 'Calc'}-{'Training' if split == 'train' else 'Test'}_{pid}_LEFT_CC"
        full = gray_array(64, p).astype(np.uint16) * 200  # 16-bit range (12000-40000)
        fstudy, fuid, ffiles = series(case, "full mammogram images", [(full, "full mammogram images")])
        full_files.update(ffiles)
        crop, mask = (gray_array(24, p + 100), "cropped images"), (mask_array(32, p), "ROI mask images")
        if p < no_description:  # no SeriesDescription in the files of the first series: pixel statistics
            crop, mask = (crop[0], ""), (mask[0], "")
        images = [crop, mask] if p % 2 else [mask, crop]
        cstudy, cuid, cfiles = series(f"{case}_1", "ROI mask images", images)
        crop_files.add(cfiles[0 if p % 2 else 1])
        pathology = ["MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"][p % 3]
        row = [pid, 2, "LEFT", "CC", 1, a, "OVAL", "CIRCUMSCRIBED", 3, pathology, 4,
               f"{case}/{fstudy}/{fuid}/000000.dcm", f"{case}_1/{cstudy}/{cuid}/000000.dcm",
               f"{case}_1/{cstudy}/{cuid}/000001.dcm"]  # fmt: skip
        tables[f"{a}_case_description_{split}_set.csv"].append(row)
    _write_csv(top / "metadata.csv", header, meta_rows)
    for name, rows in tables.items():
        _write_csv(root / name, CBIS_COLUMNS, rows)
    return {"root": root, "crop_files": crop_files, "full_files": full_files, "n_rows": n_patients}


# --------------------------------------------------------------------------- CheXpert
CHEXPERT_OBSERVATIONS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
]  # fmt: skip
CHEXPERT_COMPETITION = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def make_chexpert_tree(
    root: PathLike, n_train_patients: int = 24, n_valid_patients: int = 8, seed: int = 0, mirror: bool = False
) -> dict:
    """Write ``CheXpert-v1.0-small/{train,valid}.csv`` and the referenced JPEGs.

    ``mirror=True`` writes the widely used mirror instead: ``train.csv valid.csv train/ valid/`` directly in
    ``root`` (no ``CheXpert-v1.0-small/`` folder), while ``Path`` still begins with ``CheXpert-v1.0-small/``.

    Each patient has one study with a frontal view (and every third patient also a
    lateral view).  Observation values cycle deterministically through 1, 0, -1 and
    blank in the train CSV (valid has only 0/1, as in the real set).  Returns the rows
    as dicts (``"rows"``: {"train": [...], "valid": [...]}) so tests can recompute labels.
    """
    root = Path(root)
    base = root if mirror else root / "CheXpert-v1.0-small"
    rng = np.random.default_rng(seed)
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + CHEXPERT_OBSERVATIONS
    out_rows: dict[str, list[dict]] = {"train": [], "valid": []}
    pid = 0
    for split, n_pat in (("train", n_train_patients), ("valid", n_valid_patients)):
        rows = []
        for _ in range(n_pat):
            pid += 1
            views = [("frontal", "Frontal", "AP")] + ([("lateral", "Lateral", "")] if pid % 3 == 0 else [])
            for v, (vname, fl, appa) in enumerate(views, start=1):
                rel = f"CheXpert-v1.0-small/{split}/patient{pid:05d}/study1/view{v}_{vname}.jpg"
                write_image(base / rel.split("/", 1)[1], seed=pid + v, mode="L")
                values = {}
                for j, obs in enumerate(CHEXPERT_OBSERVATIONS):
                    choices = [1.0, 0.0, -1.0, None] if split == "train" else [1.0, 0.0]
                    values[obs] = choices[int(rng.integers(0, len(choices)))]
                row = {"Path": rel, "Sex": "Female" if pid % 2 else "Male", "Age": 20 + pid % 60,
                       "Frontal/Lateral": fl, "AP/PA": appa, **values}  # fmt: skip
                rows.append(row)
        _write_csv(base / f"{split}.csv", header, [[("" if r[h] is None else r[h]) for h in header] for r in rows])
        out_rows[split] = rows
    return {"root": root, "base": base, "rows": out_rows}


# --------------------------------------------------------------------------- imagefolder
def make_imagefolder_tree(
    root: PathLike,
    per_class: dict[str, int] | None = None,
    splits: Sequence[str] | None = ("train", "validation", "test"),
    ext: str = ".png",
) -> dict:
    """Write ``<root>/<split>/<class>/<class>_<i>.png`` (``splits=None``: ``<root>/<class>/...``).

    ``per_class`` maps class -> images per split folder (default ``{"benign": 4, "malignant": 4}``).
    """
    root = Path(root)
    per_class = per_class or {"benign": 4, "malignant": 4}
    files: dict[str, list[Path]] = {}
    for split in splits or [None]:
        folder = root / split if split else root
        for c, n in per_class.items():
            for i in range(n):
                p = write_image(folder / c / f"{c}_{i:03d}{ext}", size=8, seed=i + 3 * len(c))
                files.setdefault(split or "all", []).append(p)
    return {"root": root, "files": files}


# --------------------------------------------------------------------------- builder helper
def prepare(builder_cls, data_dir, cache_dir, **kwargs):
    """Instantiate a builder, ``download_and_prepare`` it and return ``(builder, DatasetDict)``."""
    import datasets

    datasets.disable_progress_bars()
    builder = builder_cls(data_dir=None if data_dir is None else str(data_dir), cache_dir=str(cache_dir), **kwargs)
    builder.download_and_prepare()
    return builder, builder.as_dataset()


def manifest(builder) -> dict:
    """The builder's ``split_manifest.json`` as a dict."""
    import json

    with open(builder.manifest_path, encoding="utf-8") as f:
        return json.load(f)
