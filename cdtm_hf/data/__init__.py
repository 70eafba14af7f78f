"""HuggingFace ``datasets`` builders for the medical image sets used with CDTM.

``datasets`` >= 4 has no loading scripts, so every set is an importable
``datasets.GeneratorBasedBuilder`` subclass::

    from cdtm_hf.data import BreakHis, load_medical_dataset

    builder = BreakHis(config_name="malignant_200x", data_dir="BreaKHis_v1.tar.gz", cache_dir="cache")
    builder.download_and_prepare()
    ds = builder.as_dataset()          # DatasetDict: train / validation / test
    print(builder.manifest_path)       # split_manifest.json: file -> split, seed, ratios, ...

    ds = load_medical_dataset("breakhis", "BreaKHis_v1.tar.gz", split_strategy="patient", seed=42)

    ds, manifest = load_imagefolder("my_images/")   # <class>/ or {train,validation,test}/<class>/ folders

See ``docs/datasets.md`` for sources, layouts, configs and split strategies.
"""

from __future__ import annotations

import logging
import os
import re
import datasets

from ._common import (
    IMAGE_EXTENSIONS,
    MANIFEST_FILENAME,
    VERIFY_MODES,
    CorruptImageError,
    DataDirRequiredError,
    DatasetLayoutError,
    MedicalDatasetError,
    MissingColumnError,
    MissingDependencyError,
    read_manifest,
    verify_image,
    write_manifest,
)
from .aptos2019 import APTOS2019
from .breakhis import BreakHis, BreakHisConfig
from .cbis_ddsm import CBISDDSM, CBISDDSMConfig
from .chexpert import CheXpert, CheXpertConfig
from .hcrf import HCRF, HCRFConfig
from .imagefolder import load_imagefolder
from .isic2019 import ISIC2019, ISIC2019Config
from .builder import MedicalImageBuilder, MedicalImageConfig
from .splits import (
    SPLIT_NAMES,
    SPLIT_STRATEGIES,
    InsufficientSamplesError,
    SplitIndices,
    patient_grouped_split,
    stratified_split,
)

logger = logging.getLogger(__name__)

#: registry: dataset name -> builder class (names are matched case-insensitively,
#: ignoring ``-``/``_``, so ``"CBIS-DDSM"`` and ``"cbis_ddsm"`` both work)
DATASET_BUILDERS: dict[str, type[MedicalImageBuilder]] = {
    "breakhis": BreakHis,
    "hcrf": HCRF,
    "isic2019": ISIC2019,
    "aptos2019": APTOS2019,
    "cbis_ddsm": CBISDDSM,
    "chexpert": CheXpert,
}


def _canonical(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def get_builder_class(name: str) -> type[MedicalImageBuilder]:
    """Builder class for a dataset name (see :data:`DATASET_BUILDERS`)."""
    lookup = {_canonical(k): v for k, v in DATASET_BUILDERS.items()}
    try:
        return lookup[_canonical(name)]
    except KeyError:
        raise ValueError(f"unknown medical dataset {name!r}; available: {sorted(DATASET_BUILDERS)}") from None


def label_names(dataset: datasets.Dataset | datasets.DatasetDict) -> list[str]:
    """Class names of a dataset built here (or any ``ClassLabel`` dataset).

    Single-label sets: the ``ClassLabel`` names of ``label``.  Multi-label sets
    (CheXpert's multi-hot ``labels`` floats carry no names in their feature): the
    builder's ``LABEL_NAMES``, found through ``dataset.info.builder_name``.
    """
    ds = dataset[next(iter(dataset))] if isinstance(dataset, datasets.DatasetDict) else dataset
    column = "label" if "label" in ds.features else "labels"
    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    cls = DATASET_BUILDERS.get(ds.info.builder_name or "")
    if cls is not None and getattr(cls, "LABEL_NAMES", None):
        return list(cls.LABEL_NAMES)
    raise ValueError(f"cannot tell the class names of column {column!r} ({feature})")


def split_manifest_of(dataset: datasets.Dataset | datasets.DatasetDict) -> dict | None:
    """The ``split_manifest.json`` written next to the Arrow files of a dataset prepared by a builder.

    Args:
        dataset (`datasets.Dataset` or `datasets.DatasetDict`): e.g. what [`load_medical_dataset`] returned.

    Returns:
        `dict | None`: the manifest, or ``None`` when the dataset has no cache files or no manifest beside them
        (``load_imagefolder`` returns its manifest instead).
    """
    ds = dataset[next(iter(dataset))] if isinstance(dataset, datasets.DatasetDict) else dataset
    for cache in ds.cache_files:
        path = os.path.join(os.path.dirname(cache["filename"]), MANIFEST_FILENAME)
        if os.path.isfile(path):
            return read_manifest(path)
    return None


def load_medical_dataset(
    name: str,
    data_dir: str | os.PathLike | None,
    config: str | None = None,
    split_strategy: str = "patient",
    seed: int = 42,
    cache_dir: str | None = None,
    skip_corrupt: bool = False,
    *,
    verify_images: str = "fast",
    download_mode: str | None = None,
    num_proc: int | None = None,
    **config_kwargs,
) -> datasets.DatasetDict:
    """Prepare (or reuse from the cache) a medical dataset and return its three splits.

    Args:
        name (`str`): a key of :data:`DATASET_BUILDERS` (``breakhis``, ``hcrf``, ``isic2019``,
            ``aptos2019``, ``cbis_ddsm``, ``chexpert``).
        data_dir (`str | os.PathLike | None`): the dataset folder or archive; ``None`` downloads the public archive
            where one exists (BreakHis, ISIC 2019) and raises
            [`DataDirRequiredError`] (saying where to get the data) otherwise.
        config (`str | None`, *optional*, defaults to `None`): builder config name (``None`` = the builder's default).
        split_strategy (`str`, *optional*, defaults to `'patient'`): ``"patient"`` (recommended, no patient in two splits),
            ``"paper"`` (random stratified, as in the paper) or ``"official"``.
        seed (`int`, *optional*, defaults to `42`): split seed.
        cache_dir (`str | None`, *optional*, defaults to `None`): ``datasets`` cache directory (default: the HF datasets cache).
        skip_corrupt (`bool`, *optional*, defaults to `False`): skip missing/unreadable images and CSV rows whose image cannot be found
            instead of raising (each is named in the log and listed under ``skipped`` in the manifest).
        verify_images (`str`, *optional*, defaults to `'fast'`): ``"fast"`` (default), ``"full"`` or ``"none"`` (no decode; the file-exists
            check is always done).
        download_mode (`str | None`, *optional*, defaults to `None`): ``"force_redownload"`` rebuilds a prepared dataset (needed after
            the files under ``data_dir`` changed; the cache is keyed on the options, not
            on the file contents).
        num_proc (`int | None`, *optional*, defaults to `None`): processes used to write the Arrow files.
        **config_kwargs: other config options, e.g. ``ratios=(1, 1, 2)``,
            ``magnification=400``, ``uncertainty_policy="zeros"``.

    Returns:
        ``datasets.DatasetDict`` with ``train``, ``validation`` and ``test``.
    """
    cls = get_builder_class(name)
    builder = cls(
        config_name=config,
        data_dir=data_dir,
        cache_dir=cache_dir,
        split_strategy=split_strategy,
        seed=seed,
        skip_corrupt=skip_corrupt,
        verify_images=verify_images,
        **config_kwargs,
    )
    builder.download_and_prepare(download_mode=download_mode, num_proc=num_proc)
    splits = builder.as_dataset()
    logger.info("%s split manifest: %s", cls.DISPLAY_NAME, builder.manifest_path)
    return datasets.DatasetDict({s: splits[s] for s in SPLIT_NAMES})


__all__ = [
    "APTOS2019",
    "BreakHis",
    "BreakHisConfig",
    "CBISDDSM",
    "CBISDDSMConfig",
    "CheXpert",
    "CheXpertConfig",
    "CorruptImageError",
    "DATASET_BUILDERS",
    "DataDirRequiredError",
    "DatasetLayoutError",
    "HCRF",
    "HCRFConfig",
    "IMAGE_EXTENSIONS",
    "ISIC2019",
    "ISIC2019Config",
    "InsufficientSamplesError",
    "MANIFEST_FILENAME",
    "MedicalDatasetError",
    "MedicalImageBuilder",
    "MedicalImageConfig",
    "MissingColumnError",
    "MissingDependencyError",
    "SPLIT_NAMES",
    "SPLIT_STRATEGIES",
    "SplitIndices",
    "VERIFY_MODES",
    "get_builder_class",
    "label_names",
    "load_imagefolder",
    "load_medical_dataset",
    "patient_grouped_split",
    "read_manifest",
    "split_manifest_of",
    "stratified_split",
    "verify_image",
    "write_manifest",
]
