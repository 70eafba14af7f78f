"""The data sources a run accepts besides the medical builders and a class-per-folder tree, resolved in one place.

=====================  ==================================================  ======================================
source                 how it is given                                     read by
=====================  ==================================================  ======================================
``hub``                ``--dataset_name org/name`` (``--dataset_config_name``) ``datasets.load_dataset``
                       or a local dataset repository folder
``disk``               ``--dataset_name <folder>`` written by ``save_to_disk``  ``datasets.load_from_disk``
``imagefolder_metadata``  ``--dataset imagefolder --data_dir <folder>`` with    ``datasets.load_dataset("imagefolder")``
                       a ``metadata.csv`` / ``metadata.jsonl`` of labels
``datasetdict``        ``run_finetuning(..., dataset=DatasetDict)``          (given)
=====================  ==================================================  ======================================

Each goes through [`check_dataset`], the same checks the builders make: the image and label columns are found
(``--image_column_name`` / ``--label_column_name``, the names of transformers' ``run_image_classification.py``), the
labels become a ``ClassLabel`` shared by every split, the missing validation / test splits are carved out of train
with the package's stratified split (``splits.stratified_split``, seeded) and recorded, every image is verified up
front (each bad one named, or dropped with ``skip_corrupt``), and the split manifest is made
(`cdtm_hf.data.manifest`). `load_splits` then makes the checks every source shares (every class in every split).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets.data_files import SPLIT_KEYWORDS

from .errors import CorruptImageError, DatasetLayoutError
from .manifest import MANIFEST_FILENAME, make_manifest
from .splits import SPLIT_NAMES, InsufficientSamplesError, stratified_split
from .verify import MAX_LISTED, verify_image

logger = logging.getLogger(__name__)

__all__ = ["METADATA_FILES", "SOURCE_KINDS", "check_dataset", "has_metadata_file", "is_saved_dataset", "load_source",
           "source_kind"]

#: source kind -> what it is, in words (the manifest's ``source.kind``; README's table of data sources)
SOURCE_KINDS = {
    "builder": "a medical builder (--dataset breakhis, ...)",
    "imagefolder": "class folders (--dataset imagefolder --data_dir)",
    "imagefolder_metadata": "an imagefolder with metadata.csv labels (--dataset imagefolder --data_dir)",
    "hub": "a Hub dataset or a local dataset repository (--dataset_name)",
    "disk": "a folder written by save_to_disk (--dataset_name <folder>)",
    "datasetdict": "a DatasetDict / Dataset passed from Python (run_finetuning(..., dataset=))",
}
#: the metadata files datasets' imagefolder reads labels from
METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


def has_metadata_file(data_dir: str | os.PathLike | None) -> bool:
    """Whether an imagefolder has a metadata file (at its top or in a split folder): its labels are there."""
    if not data_dir or not os.path.isdir(data_dir):
        return False
    root = Path(data_dir)
    folders = [root, *(p for p in root.iterdir() if p.is_dir())]
    return any((folder / name).is_file() for folder in folders for name in METADATA_FILES)


def is_saved_dataset(path: str | os.PathLike | None) -> bool:
    """Whether `path` is a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return bool(path) and any(os.path.isfile(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json"))


def source_kind(dataset: str, data_dir: str | None = None, dataset_name: str | None = None,
                given: bool = False) -> str:
    """The kind (a key of `SOURCE_KINDS`) of the data source these arguments name."""
    from .registry import IMAGEFOLDER

    if given:
        return "datasetdict"
    if dataset_name:
        return "disk" if is_saved_dataset(dataset_name) else "hub"
    if dataset == IMAGEFOLDER:
        return "imagefolder_metadata" if has_metadata_file(data_dir) else "imagefolder"
    return "builder"


def _display_name(kind: str, dataset_name: str | None, data_dir: str | None) -> str:
    """The name a card and a report use: a Hub id as given, a local folder by its own name (no machine path)."""
    if kind == "hub" and dataset_name and not os.path.exists(dataset_name):
        return dataset_name
    path = dataset_name if kind in ("hub", "disk") else data_dir
    return Path(os.path.abspath(path)).name if path else kind


def load_source(kind: str, *, dataset_name: str | None = None, dataset_config_name: str | None = None,
                data_dir: str | None = None, cache_dir: str | None = None) -> datasets.DatasetDict | datasets.Dataset:
    """Read a `hub`, `disk` or `imagefolder_metadata` source as `datasets` gives it (not yet checked)."""
    if kind == "disk":
        return datasets.load_from_disk(dataset_name)
    if kind == "imagefolder_metadata":
        return datasets.load_dataset("imagefolder", data_dir=data_dir, cache_dir=cache_dir)
    if kind != "hub":
        raise ValueError(f"load_source reads hub, disk or imagefolder_metadata sources, not {kind!r}")
    try:
        return datasets.load_dataset(dataset_name, dataset_config_name, data_dir=data_dir, cache_dir=cache_dir)
    except (FileNotFoundError, ConnectionError, ValueError) as err:
        offline = " (HF_HUB_OFFLINE is set: only local folders and the datasets cache can be read)" if (
            os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "")) else ""
        config = f" --dataset_config_name {dataset_config_name}" if dataset_config_name else ""
        raise DatasetLayoutError(
            f"--dataset_name {dataset_name!r}{config} could not be loaded{offline}: {err}. Pass a Hub dataset id "
            "(org/name), a local dataset repository folder, or a folder written by save_to_disk"
        ) from err


# ---------------------------------------------------------------------------------------------------------------
def _as_splits(ds: Any) -> dict[str, datasets.Dataset]:
    """split -> Dataset, with datasets' split keywords mapped to train/validation/test (``val`` -> validation)."""
    if isinstance(ds, datasets.Dataset):
        return {"train": ds}
    if not isinstance(ds, Mapping):
        raise TypeError(f"expected a datasets.DatasetDict or Dataset, got {type(ds).__name__}")
    out: dict[str, datasets.Dataset] = {}
    for name, split in ds.items():
        target = next((str(k) for k, words in SPLIT_KEYWORDS.items() if str(name).lower() in words), None)
        if target is None:
            logger.warning("Ignoring split %r (a run uses train, validation and test)", name)
            continue
        if target in out:
            raise DatasetLayoutError(f"the dataset has two {target} splits ({', '.join(ds)}); keep one of them")
        out[target] = split
    if "train" not in out:
        raise DatasetLayoutError(f"the dataset has no train split; its splits are: {', '.join(ds) or 'none'}")
    return out


def _find_column(features: datasets.Features, wanted: str | None, default: str, kind: type, flag: str) -> str:
    if wanted:
        if wanted not in features:
            raise DatasetLayoutError(f"{flag} {wanted!r} is not a column of the dataset; its columns: "
                                     f"{', '.join(features)}")
        return wanted
    if default in features:
        return default
    typed = [name for name, f in features.items() if isinstance(f, kind)]
    if len(typed) == 1:
        return typed[0]
    raise DatasetLayoutError(f"the dataset has no {default!r} column and {len(typed) or 'no'} {kind.__name__} "
                             f"column(s); pass {flag} <column> (its columns: {', '.join(features)})")


def _class_names(splits: dict[str, datasets.Dataset], column: str) -> list[str]:
    feature = splits["train"].features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    if isinstance(feature, (datasets.Sequence, datasets.List, list)):
        raise DatasetLayoutError(f"label column {column!r} holds lists ({feature}): multi-label sources other than "
                                 "the CheXpert builder are not supported; pass one class per image")
    values = sorted({v for s in splits.values() for v in s.unique(column)}, key=lambda v: (str(type(v)), v))
    if any(v is None for v in values):
        raise DatasetLayoutError(f"label column {column!r} has empty labels; give every image a class")
    return [str(v) for v in values]


def _standard_columns(splits: dict[str, datasets.Dataset], image: str, label: str) -> tuple[dict, list[str]]:
    """Every split with just ``image`` (an `Image` feature) and ``label`` (a `ClassLabel` shared by all splits)."""
    names = _class_names(splits, label)
    feature = splits["train"].features[label]
    out = {}
    for split, ds in splits.items():
        ds = ds.select_columns([image, label])
        if not isinstance(ds.features[image], datasets.Image):
            if ds.features[image] != datasets.Value("string"):
                raise DatasetLayoutError(f"image column {image!r} is {ds.features[image]}, not images or file paths; "
                                         "pass --image_column_name <column of images>")
            ds = ds.cast_column(image, datasets.Image())
        if not isinstance(feature, datasets.ClassLabel) or ds.features[label] != feature:
            index = {n: i for i, n in enumerate(names)}
            target = datasets.Features({image: ds.features[image], label: datasets.ClassLabel(names=names)})
            ds = ds.map(lambda b: {label: [index[str(v)] for v in b[label]]}, batched=True, features=target,
                        desc=f"Encoding the {split} labels")
        if image != "image":
            ds = ds.rename_column(image, "image")
        if label != "label":
            ds = ds.rename_column(label, "label")
        out[split] = ds
    return out, names


def _image_problem(value: Mapping[str, Any], mode: str) -> str | None:
    """`verify_image` for an image stored in the Arrow file (its bytes) or referenced by path."""
    if not value.get("bytes"):
        return verify_image(value.get("path") or "", mode)
    if mode == "none":
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(value["bytes"])) as im:
            if mode == "fast" and im.format == "PNG":
                im.verify()
            else:
                im.load()
                if mode == "full":
                    from ..core.image_processing_cdtm import to_rgb_image

                    to_rgb_image(im)
        return None
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ...
        return f"{type(err).__name__}: {err}"


def _verify(splits: dict, mode: str, skip_corrupt: bool, name: str) -> tuple[dict, list[dict]]:
    """Every image checked before anything trains; bad ones named (or dropped with `skip_corrupt`)."""
    from ..logging import progress_bar

    skipped: list[dict] = []
    for split, ds in list(splits.items()):
        raw = ds.cast_column("image", datasets.Image(decode=False))["image"]
        with progress_bar(total=len(raw), desc=f"Verifying {split} images ({mode})", unit="img") as bar:
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # decoding releases the GIL
                reasons = [bar.update() or r for r in pool.map(lambda v: _image_problem(v, mode), raw)]
        problems = [(i, raw[i].get("path") or f"row {i}", r) for i, r in enumerate(reasons) if r is not None]
        good = [i for i, r in enumerate(reasons) if r is None]
        if not problems:
            continue
        listed = "; ".join(f"{split} {where} ({why})" for _, where, why in problems[:MAX_LISTED])
        if not skip_corrupt:
            raise CorruptImageError(f"{len(problems)} unreadable image(s) in {name}: {listed}. Repair them, or pass "
                                    f"--skip_corrupt to drop them (each is then listed in {MANIFEST_FILENAME})")
        for _, where, why in problems:
            logger.warning("Skipping image %s of the %s split: %s", where, split, why)
        skipped += [{"path": str(where), "split": split, "reason": why} for _, where, why in problems]
        splits[split] = ds.select(good)
    return splits, skipped


def _carve(splits: dict, names: list[str], fractions: dict[str, float], seed: int) -> list[str]:
    """Carve the missing validation / test splits out of train (stratified by class, seeded); return them."""
    missing = [s for s in ("validation", "test") if s not in splits]
    if not missing:
        return []
    train = splits["train"]
    labels = list(train["label"])
    wanted = {s: fractions[s] for s in missing}
    ratios = (1.0 - sum(wanted.values()), wanted.get("validation", 0.0), wanted.get("test", 0.0))
    try:
        parts = stratified_split(labels, ratios, seed, names)
    except InsufficientSamplesError as err:
        raise InsufficientSamplesError(f"{err} (the {' and '.join(missing)} split(s) are carved out of train because "
                                       "the source has none); or give the splits") from None
    for split, idx in zip(SPLIT_NAMES, parts):
        if split == "train" or split in missing:
            splits[split] = train.select(np.asarray(idx, dtype=np.int64))
    return missing


def check_dataset(
    ds: datasets.DatasetDict | datasets.Dataset | Mapping[str, datasets.Dataset],
    *,
    kind: str = "datasetdict",
    name: str | None = None,
    config: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    seed: int = 42,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    verify_images: str = "fast",
    skip_corrupt: bool = False,
    split_description: str | None = None,
    data_dir: str | None = None,
) -> tuple[datasets.DatasetDict, dict]:
    """A dataset from any source as a run's three splits (``image`` and ``label`` columns) and its split manifest.

    Args:
        ds (`DatasetDict` or `Dataset`): the source's splits (split names as ``datasets`` reads them: ``val`` and
            ``valid`` are validation); a lone `Dataset` is train.
        kind (`str`): a key of `SOURCE_KINDS`, recorded in the manifest's ``source``.
        name (`str`, *optional*): the source's name (a Hub id, a folder's name), recorded as the manifest's
            ``dataset``.
        config (`str`, *optional*): the source's config name, recorded.
        image_column (`str`, *optional*): the column of images (or image paths); default ``image``, or the one
            `Image` column.
        label_column (`str`, *optional*): the column of class labels (`ClassLabel`, integers or strings); default
            ``label``, or the one `ClassLabel` column.
        seed (`int`): the seed of the carved splits.
        validation_fraction (`float`), test_fraction (`float`): the shares carved out of train where the source lacks
            the split.
        verify_images (`str`), skip_corrupt (`bool`): the up-front image check (see `verify_records`).
        split_description (`str`, *optional*): how the source's splits were made, in the caller's words.
        data_dir (`str`, *optional*): the local folder of the images, recorded (never in a report).

    Raises:
        `DatasetLayoutError`: no train split, a column not found, labels that are lists or empty.
        `CorruptImageError`: unreadable images and ``skip_corrupt=False``.
        `InsufficientSamplesError`: a class has too few images to carve a missing split.
    """
    from .verify import VERIFY_MODES

    if verify_images not in VERIFY_MODES:
        raise ValueError(f"verify_images must be one of {VERIFY_MODES}, got {verify_images!r}")
    name = name or kind
    splits = _as_splits(ds)
    features = splits["train"].features
    image = _find_column(features, image_column, "image", datasets.Image, "--image_column_name")
    label = _find_column(features, label_column, "label", datasets.ClassLabel, "--label_column_name")
    if image == label:
        raise DatasetLayoutError(f"the image and the label column are both {image!r}; pass --image_column_name and "
                                 "--label_column_name")
    given = [s for s in SPLIT_NAMES if s in splits]
    splits, names = _standard_columns(splits, image, label)
    if len(names) < 2:
        raise DatasetLayoutError(f"{name} has a single class {names}; classification needs at least two")
    splits, skipped = _verify(splits, verify_images, skip_corrupt, name)
    fractions = {"validation": validation_fraction, "test": test_fraction}
    carved = _carve(splits, names, fractions, seed)
    text = f"the {', '.join(given)} split(s) of {name} as given"
    if carved:
        text += f"; {' and '.join(carved)} carved out of train (stratified by class, seed {seed})"
    counts = {s: dict(zip(names, np.bincount(np.asarray(splits[s]["label"], dtype=np.int64),
                                             minlength=len(names)).tolist())) for s in SPLIT_NAMES}
    manifest = make_manifest(
        dataset=name, split_strategy=split_description or ("stratified" if carved else "given"),
        grouping="random" if carved else "folders",
        description=f"{split_description} ({text})" if split_description else text, seed=seed,
        class_names=names, label_column="label", multi_label=False,
        num_images={s: len(splits[s]) for s in SPLIT_NAMES}, counts=counts, skipped=skipped, files={},
        has_patient_ids=False, config=config, data_dir=data_dir,
        source={"kind": kind, "name": name, "config": config, "image_column": image, "label_column": label,
                "given_splits": given},
        carved_splits=carved, validation_fraction=fractions["validation"], test_fraction=fractions["test"],
        verify_images=verify_images,
    )
    logger.info("%s (%s): %s; %s", name, SOURCE_KINDS.get(kind, kind), manifest["description"],
                manifest["num_images"])
    return datasets.DatasetDict({s: splits[s] for s in SPLIT_NAMES}), manifest


def load_checked_source(kind: str, *, dataset: Any = None, dataset_name: str | None = None,
                        dataset_config_name: str | None = None, data_dir: str | None = None,
                        cache_dir: str | None = None, **checks: Any) -> tuple[datasets.DatasetDict, dict]:
    """`load_source` (or the given `dataset`), then `check_dataset`: the splits and manifest of a non-builder source."""
    if kind != "datasetdict":
        dataset = load_source(kind, dataset_name=dataset_name, dataset_config_name=dataset_config_name,
                              data_dir=data_dir, cache_dir=cache_dir)
    local = data_dir if kind == "imagefolder_metadata" else (dataset_name if kind == "disk" else None)
    name = checks.pop("name", None) or _display_name(kind, dataset_name, data_dir)
    return check_dataset(dataset, kind=kind, name=name, config=dataset_config_name, data_dir=local, **checks)
