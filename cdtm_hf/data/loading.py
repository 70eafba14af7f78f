"""Loading a data source as train/validation/test: the builder registry, `load_medical_dataset` and `load_splits`.

Every source returns `(DatasetDict, manifest)`: the three splits (an `image` column and the label column) and the
split manifest (`cdtm_hf.data.manifest`), which names the label column, whether it is multi-label and the class names,
so that nothing downstream guesses them.
"""

from __future__ import annotations

import logging
import os

import datasets
import numpy as np

from .errors import DatasetLayoutError
from .imagefolder import load_imagefolder
from .manifest import read_manifest
from .registry import DATASET_BUILDERS, IMAGEFOLDER, get_builder_class
from .sources import load_checked_source, source_kind
from .splits import SPLIT_NAMES, SPLIT_STRATEGIES, InsufficientSamplesError, stratified_subset

logger = logging.getLogger(__name__)

__all__ = ["label_names", "load_medical_dataset", "load_splits"]


def label_names(dataset: datasets.Dataset | datasets.DatasetDict) -> list[str]:
    """Class names of a dataset built here (or any ``ClassLabel`` dataset).

    Single-label sets: the ``ClassLabel`` names of ``label``. Multi-label sets (CheXpert's multi-hot ``labels``
    floats carry no names in their feature): the builder's ``LABEL_NAMES``, found through
    ``dataset.info.builder_name``. A run reads them from the split manifest instead (``class_names``).
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
) -> tuple[datasets.DatasetDict, dict]:
    """Prepare (or reuse from the cache) a medical dataset; return its three splits and its split manifest.

    Args:
        name (`str`): a key of `cdtm_hf.data.DATASET_BUILDERS` (``breakhis``, ``hcrf``, ``isic2019``, ``aptos2019``,
            ``cbis_ddsm``, ``chexpert``).
        data_dir (`str | os.PathLike | None`): the dataset folder or archive; ``None`` downloads the public archive
            where one exists (BreakHis, ISIC 2019) and raises [`DataDirRequiredError`] (saying where to get the data)
            otherwise.
        config (`str`, *optional*): builder config name (``None`` = the builder's default).
        split_strategy (`str`, *optional*, defaults to `"patient"`): ``"patient"`` (recommended, no patient in two
            splits), ``"paper"`` (random stratified, as in the paper) or ``"official"``.
        seed (`int`, *optional*, defaults to 42): split seed.
        cache_dir (`str`, *optional*): ``datasets`` cache directory (default: the HF datasets cache).
        skip_corrupt (`bool`, *optional*, defaults to `False`): skip missing/unreadable images and CSV rows whose
            image cannot be found instead of raising (each is named in the log and listed under ``skipped``).
        verify_images (`str`, *optional*, defaults to `"fast"`): ``"fast"``, ``"full"`` or ``"none"`` (no decode;
            the file-exists check is always done).
        download_mode (`str`, *optional*): ``"force_redownload"`` rebuilds a prepared dataset (needed after the files
            under ``data_dir`` changed; the cache is keyed on the options, not on the file contents).
        num_proc (`int`, *optional*): processes used to write the Arrow files.
        **config_kwargs: other config options, e.g. ``ratios=(1, 1, 2)``, ``magnification=400``,
            ``uncertainty_policy="zeros"``.

    Returns:
        `tuple[datasets.DatasetDict, dict]`: ``train``, ``validation`` and ``test``, and the split manifest
        (``cdtm_hf.data.manifest``).
    """
    cls = get_builder_class(name)
    builder = cls(
        config_name=config, data_dir=data_dir, cache_dir=cache_dir, split_strategy=split_strategy, seed=seed,
        skip_corrupt=skip_corrupt, verify_images=verify_images, **config_kwargs,
    )
    builder.download_and_prepare(download_mode=download_mode, num_proc=num_proc)
    splits = builder.as_dataset()
    logger.info("%s split manifest: %s", cls.DISPLAY_NAME, builder.manifest_path)
    return datasets.DatasetDict({s: splits[s] for s in SPLIT_NAMES}), read_manifest(builder.manifest_path)


def load_splits(
    dataset: str,
    data_dir: str | os.PathLike | None,
    *,
    dataset_config: str | None = None,
    split_strategy: str = "patient",
    seed: int = 42,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    cache_dir: str | None = None,
    verify_images: str = "fast",
    skip_corrupt: bool = False,
    max_train_samples: int | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    image_column_name: str | None = None,
    label_column_name: str | None = None,
    max_eval_samples: int | None = None,
    given: datasets.DatasetDict | datasets.Dataset | None = None,
) -> tuple[datasets.DatasetDict, dict]:
    """The train/validation/test splits of a run's data source, checked, and their manifest.

    The source (`cdtm_hf.data.sources.source_kind`): a medical builder, class folders, an imagefolder with
    ``metadata.csv`` labels, a Hub dataset or local dataset repository (`dataset_name`), a `save_to_disk` folder
    (`dataset_name`), or a `DatasetDict` given from Python (`given`); each checked the same way.

    Args:
        dataset (`str`): ``"imagefolder"`` or a key of `cdtm_hf.data.DATASET_BUILDERS`.
        data_dir (`str`, *optional*): the folder or archive.
        dataset_config (`str`, *optional*): a builder config.
        split_strategy (`str`): a builder's strategy; for an imagefolder, any other text says how its split folders
            were made and is recorded (the folders decide the split).
        seed (`int`): the split seed (and the seed of `max_train_samples`).
        validation_fraction (`float`), test_fraction (`float`): an imagefolder's shares where it lacks the folder.
        cache_dir (`str`, *optional*): the ``datasets`` cache.
        verify_images (`str`), skip_corrupt (`bool`): the up-front image check (see [`verify_records`]).
        max_train_samples (`int`, *optional*): a stratified, seeded subset of train (every class kept).
        dataset_name (`str`, *optional*), dataset_config_name (`str`, *optional*): a Hub dataset id (or a local
            dataset repository folder, or a `save_to_disk` folder) and its config.
        image_column_name (`str`, *optional*), label_column_name (`str`, *optional*): the columns of a Hub, disk,
            metadata or given source (default ``image`` / ``label``).
        max_eval_samples (`int`, *optional*): a stratified, seeded subset of validation (every class kept).
        given (`DatasetDict` or `Dataset`, *optional*): the splits themselves (Python); a lone `Dataset` is train.

    Raises:
        `DatasetLayoutError`: a split is missing, or a class has no image in one of them.
    """
    kind = source_kind(dataset, data_dir, dataset_name, given=given is not None)
    if kind in ("builder", IMAGEFOLDER) and {image_column_name, label_column_name} - {None, "image", "label"}:
        raise DatasetLayoutError(
            f"--image_column_name / --label_column_name name the columns of a --dataset_name, save_to_disk, "
            f"metadata.csv or Python source; {dataset} has its own columns: leave them out"
        )
    if kind not in ("builder", IMAGEFOLDER):
        ds, manifest = load_checked_source(
            kind, dataset=given, dataset_name=dataset_name, dataset_config_name=dataset_config_name,
            data_dir=data_dir, cache_dir=cache_dir, image_column=image_column_name, label_column=label_column_name,
            seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction,
            verify_images=verify_images, skip_corrupt=skip_corrupt,
            split_description=None if split_strategy in SPLIT_STRATEGIES else split_strategy,
        )
    elif dataset == IMAGEFOLDER:
        if not data_dir:
            raise DatasetLayoutError("--data_dir is required for --dataset imagefolder (<data_dir>/<class>/*.png, "
                                     "optionally under train/validation/test)")
        ds, manifest = load_imagefolder(
            data_dir, validation_fraction=validation_fraction, test_fraction=test_fraction, seed=seed,
            verify_images=verify_images, skip_corrupt=skip_corrupt, cache_dir=cache_dir,
            split_description=None if split_strategy in SPLIT_STRATEGIES else split_strategy,
        )
    else:
        ds, manifest = load_medical_dataset(
            dataset, data_dir=data_dir, config=dataset_config, split_strategy=split_strategy, seed=seed,
            cache_dir=cache_dir, skip_corrupt=skip_corrupt, verify_images=verify_images,
        )
    return _checked_subsets(ds, manifest, seed, max_train_samples, max_eval_samples)


def _checked_subsets(ds: datasets.DatasetDict, manifest: dict, seed: int, max_train_samples: int | None,
                     max_eval_samples: int | None) -> tuple[datasets.DatasetDict, dict]:
    """The checks every source shares (three splits, every class in each), then the debugging subsets."""
    missing = [s for s in SPLIT_NAMES if s not in ds]
    if missing:
        raise DatasetLayoutError(f"the dataset has no {', '.join(missing)} split(s); it has: {', '.join(ds)}")
    names, column = manifest["class_names"], manifest["label_column"]
    if not manifest["multi_label"]:
        for split in SPLIT_NAMES:
            counts = np.bincount(np.asarray(ds[split][column]), minlength=len(names))
            empty = [names[i] for i, c in enumerate(counts) if c == 0]
            if empty:
                raise DatasetLayoutError(f"class(es) {', '.join(empty)} have no images in the {split} split")
    if max_train_samples and max_train_samples < len(ds["train"]):
        labels = None if manifest["multi_label"] else np.asarray(ds["train"][column])
        ds["train"] = ds["train"].select(stratified_subset(labels, len(ds["train"]), max_train_samples, seed, names))
    if max_eval_samples and max_eval_samples < len(ds["validation"]):  # issue 18: HF's --max_eval_samples
        labels = None if manifest["multi_label"] else np.asarray(ds["validation"][column])
        try:
            keep = stratified_subset(labels, len(ds["validation"]), max_eval_samples, seed, names)
        except InsufficientSamplesError as err:
            raise InsufficientSamplesError(str(err).replace("max_train_samples", "max_eval_samples")) from None
        ds["validation"] = ds["validation"].select(keep)
    return ds, manifest
