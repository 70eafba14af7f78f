"""A class-per-folder image set (``--dataset imagefolder``), verified up front like the builders.

Accepted layouts (folder names of the splits as ``datasets`` reads them, case-insensitive)::

    <data_dir>/{train|training}/<class>/<image>          + {validation|val|valid|dev}/<class>/... + {test|testing}/...
    <data_dir>/<class>/<image>                           (validation and test carved here, stratified and seeded)

Missing validation or test folders are carved out of train the same way. Every image is checked before anything
is loaded (threaded): with ``skip_corrupt=False`` one error names every missing or unreadable file, with
``skip_corrupt=True`` they are dropped, each named in the log and in the manifest. The folders are read by
``datasets.load_dataset("imagefolder")``; images keep their bit depth (16-bit PNG/TIFF decode to PIL mode ``I;16``,
turned into 8-bit RGB by ``cdtm_hf.core.image_processing_cdtm.to_rgb_image`` in the training transform).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import datasets
from datasets.data_files import SPLIT_KEYWORDS

from .errors import DatasetLayoutError
from .files import IMAGE_EXTENSIONS, ImageRecord, extension_counts, is_image_file, posix_relpath, unaccepted_files
from .manifest import make_manifest
from .splits import SPLIT_NAMES, InsufficientSamplesError, class_set_problem, stratified_split
from .verify import VERIFY_MODES, verify_records

logger = logging.getLogger(__name__)

__all__ = ["SPLIT_FOLDER_NAMES", "load_imagefolder"]

#: split -> the folder names ``datasets`` reads as that split (lower case)
SPLIT_FOLDER_NAMES: dict[str, tuple[str, ...]] = {str(k): tuple(v) for k, v in SPLIT_KEYWORDS.items()}
LAYOUTS = {
    "folders": "<data_dir>/{train,validation|val|valid,test}/<class>/<image>",
    "flat": "<data_dir>/<class>/<image>",
}


def _is_hidden(p: Path) -> bool:
    return p.name.startswith((".", "__MACOSX", "__"))


def _split_of_folder(name: str) -> str | None:
    for split, names in SPLIT_FOLDER_NAMES.items():
        if name.lower() in names:
            return split
    return None


def find_split_folders(root: Path) -> dict[str, Path]:
    """split -> folder for a split layout; ``{}`` for a flat ``<class>/`` layout."""
    roots: dict[str, Path] = {}
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p))
    for d in subdirs:
        split = _split_of_folder(d.name)
        if split is None:
            continue
        if split in roots:
            raise DatasetLayoutError(
                f"imagefolder {root}: both {roots[split].name}/ and {d.name}/ are {split} folders; keep one of them"
            )
        roots[split] = d
    if not roots:
        return {}
    if "train" not in roots:
        raise DatasetLayoutError(
            f"imagefolder {root} has {', '.join(p.name + '/' for p in roots.values())} but no train/ folder; "
            f"add <data_dir>/train/<class>/ (accepted layouts: {LAYOUTS['folders']} or {LAYOUTS['flat']})"
        )
    others = [d.name for d in subdirs if _split_of_folder(d.name) is None and any(_iter_images(d))]
    if others:
        raise DatasetLayoutError(
            f"imagefolder {root} mixes split folders ({', '.join(p.name for p in roots.values())}) with other image "
            f"folders {others}; move them into a split folder or out of data_dir (layout: {LAYOUTS['folders']})"
        )
    return roots


def _iter_images(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(Path(d)))
        for name in sorted(filenames):
            if is_image_file(name):
                yield Path(dirpath) / name


def _collect(split_root: Path, data_dir: Path, split: str) -> dict[str, list[Path]]:
    """class -> images directly in ``split_root/<class>/``; images elsewhere are a layout error."""
    by_class: dict[str, list[Path]] = {}
    misplaced = []
    for path in _iter_images(split_root):
        depth = len(path.relative_to(split_root).parts)
        if depth == 2:
            by_class.setdefault(path.parent.name, []).append(path)
        else:
            misplaced.append(posix_relpath(path, data_dir))
    if misplaced:
        raise DatasetLayoutError(
            f"imagefolder: {len(misplaced)} image(s) of the {split} split are not directly in a class folder, e.g. "
            f"{misplaced[:3]}; datasets' imagefolder labels an image by its parent folder, so put every image in "
            f"{posix_relpath(split_root, data_dir.parent)}/<class>/ (no deeper sub-folders, no loose files)"
        )
    return by_class


def _unaccepted(roots: dict[str, Path], data_dir: Path, found: dict[str, dict[str, list]]) -> list[dict]:
    """Files skipped for their extension, each `{"path", "reason"}` (issue 17); a class folder that holds files but
    no accepted image is an error naming the extensions it holds."""
    skipped = []
    for split, split_root in (roots or {"train": data_dir}).items():
        for folder in sorted(p for p in split_root.iterdir() if p.is_dir() and not _is_hidden(p)):
            if not roots and _split_of_folder(folder.name):
                continue
            others = unaccepted_files(folder)
            if others and not found.get(split, {}).get(folder.name):
                raise DatasetLayoutError(
                    f"imagefolder: class {folder.name!r} has no images in the {split} split: its folder "
                    f"{posix_relpath(folder, data_dir.parent)}/ holds no accepted image "
                    f"(found {extension_counts(others)}); accepted: {', '.join(IMAGE_EXTENSIONS)}. Convert the images "
                    "(e.g. to PNG) or move the folder out of data_dir"
                )
            skipped += [{"path": posix_relpath(p, data_dir), "reason": f"extension {p.suffix.lower() or '(none)'} is "
                         "not an accepted image extension"} for p in others]
    if skipped:
        logger.warning("imagefolder %s: skipped %d file(s) for their extension (%s): %s", data_dir, len(skipped),
                       extension_counts(Path(s["path"]) for s in skipped), ", ".join(s["path"] for s in skipped))
    return skipped


def _check_classes(found: dict[str, dict[str, list]], data_dir: Path, where: str) -> list[str]:
    """Sorted class names; one-line errors for a single class and for a class missing from a split."""
    classes = sorted(set().union(*(set(c for c, files in f.items() if files) for f in found.values())))
    if not classes:
        raise DatasetLayoutError(
            f"imagefolder {data_dir} holds no images ({', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)}) "
            f"in class folders; accepted layouts: {LAYOUTS['folders']} or {LAYOUTS['flat']}"
        )
    if len(classes) == 1:
        raise DatasetLayoutError(
            f"imagefolder {data_dir} has a single class {classes[0]!r} (in the {', '.join(found)} split(s)); "
            f"classification needs at least two class folders: add a folder per class next to {classes[0]!r}"
        )
    # issue 17: name what each split lacks (both ways), and case-only differences
    problem = class_set_problem({s: [c for c, files in f.items() if files] for s, f in found.items()})
    for split, by_class in found.items():
        for name in classes:
            if not by_class.get(name):
                raise DatasetLayoutError(
                    f"imagefolder: class {name!r} has no images in the {split} split{where}; add images to "
                    f"{split}/{name}/ or remove class {name!r} from every split ({problem})"
                )
    return classes


def _carve(
    found: dict[str, dict[str, list[Path]]],
    classes: list[str],
    fractions: dict[str, float],
    seed: int,
) -> list[str]:
    """Carve the missing validation/test splits out of train (stratified by class, seeded); returns them."""
    missing = [s for s in ("validation", "test") if s not in found]
    if not missing:
        return []
    train = found["train"]
    files = [p for c in classes for p in train[c]]
    labels = [i for i, c in enumerate(classes) for _ in train[c]]
    wanted = {s: fractions[s] for s in missing}
    ratios = (1.0 - sum(wanted.values()), wanted.get("validation", 0.0), wanted.get("test", 0.0))
    try:
        parts = stratified_split(labels, ratios, seed, classes)
    except InsufficientSamplesError as err:
        raise InsufficientSamplesError(
            f"imagefolder: {err} (the {' and '.join(missing)} split(s) are carved out of train/ because data_dir "
            "has no such folder); or give the splits as folders"
        ) from None
    for split, idx in zip(SPLIT_NAMES, parts):
        out: dict[str, list[Path]] = {c: [] for c in classes}
        for i in idx:
            out[classes[labels[int(i)]]].append(files[int(i)])
        found[split] = out
    return missing


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {value!r}")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"validation_fraction + test_fraction must be below 1 to leave images for training, got "
            f"{validation_fraction!r} + {test_fraction!r}"
        )


def _verify(found, classes, data_dir, verify_images, skip_corrupt) -> list[dict]:
    """Verify every image of every split up front; drop bad ones (``skip_corrupt``) from ``found``."""
    records = [
        ImageRecord(path=str(p), relpath=posix_relpath(p, data_dir), label=i, group=str(p), has_patient_id=False)
        for by_class in found.values()
        for i, c in enumerate(classes)
        for p in by_class.get(c, [])
    ]
    keep, skipped = verify_records(records, verify_images, skip_corrupt, layout="imagefolder")
    if skipped:
        good = {r.path for r in keep}
        for by_class in found.values():
            for c in by_class:
                by_class[c] = [p for p in by_class[c] if str(p) in good]
    return skipped


def _describe(roots: dict[str, Path], carved: list[str], fractions: dict[str, float], seed: int) -> str:
    given = ", ".join(f"{s} = {p.name}/" for s, p in roots.items())
    if not roots:
        return (
            f"random stratified split of the class folders (validation {fractions['validation']:g}, test "
            f"{fractions['test']:g}, seed {seed}); not grouped by patient"
        )
    text = f"given by the folders ({given})"
    if carved:
        text += f"; {' and '.join(carved)} carved out of {roots['train'].name}/ (stratified, seed {seed})"
    return text


def _manifest(root: Path, layout: str, roots: dict, carved: list, fractions: dict[str, float], seed: int,
              verify_images: str, classes: list[str], data_files: dict, found: dict, skipped: list,
              split_description: str | None) -> dict:
    """The split manifest of an imagefolder load (what `split_manifest.json` records)."""
    given = bool(roots) and not carved
    description = _describe(roots, carved, fractions, seed)
    return make_manifest(
        dataset="imagefolder",
        # a caller that made the folders elsewhere may say how (e.g. "spatially disjoint regions"); it is recorded
        split_strategy=split_description or ("folders" if given else "stratified"),
        grouping="folders" if given else "random",
        description=f"{split_description} ({description})" if split_description else description,
        seed=seed, class_names=classes, label_column="label", multi_label=False,
        num_images={s: len(data_files[s]) for s in SPLIT_NAMES},
        counts={s: {c: len(found[s][c]) for c in classes} for s in SPLIT_NAMES}, skipped=skipped,
        files={posix_relpath(p, root): s for s in SPLIT_NAMES for p in data_files[s]}, has_patient_ids=False,
        config=None, data_dir=str(root), layout=LAYOUTS[layout], carved_splits=carved,
        split_folders={s: p.name for s, p in roots.items()}, validation_fraction=fractions["validation"],
        test_fraction=fractions["test"], verify_images=verify_images,
    )


def load_imagefolder(
    data_dir: str | os.PathLike,
    *,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 42,
    verify_images: str = "fast",
    skip_corrupt: bool = False,
    cache_dir: str | None = None,
    num_proc: int | None = None,
    split_description: str | None = None,
) -> tuple[datasets.DatasetDict, dict]:
    """Load a class-per-folder image set as train/validation/test, every image verified before anything trains.

    Args:
        data_dir (`str` or `os.PathLike`): ``<data_dir>/{train,validation|val|valid,test}/<class>/<image>`` or
            ``<data_dir>/<class>/<image>``.
        validation_fraction (`float`): share of the images carved out for validation when there is no
            validation folder.
        test_fraction (`float`): share carved out for test when there is no test folder.
        seed (`int`): seed of the stratified carving.
        verify_images (`str`): ``"fast"`` (default), ``"full"`` or ``"none"`` (the file-exists check is always done).
        skip_corrupt (`bool`): drop missing/unreadable images (each named in the log and in the manifest's
            ``skipped``) instead of raising one error that names them all.
        cache_dir (`str`, *optional*): ``datasets`` cache directory.
        num_proc (`int`, *optional*): processes ``datasets`` uses to prepare the splits.
        split_description (`str`, *optional*): how the split folders were made, in the caller's words (e.g.
            ``"spatially disjoint image regions"``); recorded as the manifest's ``split_strategy``.

    Returns:
        `tuple[datasets.DatasetDict, dict]`: the splits (``image`` and ``label`` columns, ``ClassLabel`` names =
        the sorted class folder names) and the split manifest (``dataset``, ``split_strategy``, ``grouping``
        ``"folders"`` or ``"random"``, ``counts``, ``skipped``, ``num_skipped``, ``files``, ...).

    Raises:
        DatasetLayoutError: a layout problem (single class, a class missing from a split, misplaced images).
        InsufficientSamplesError: a class has too few images to carve the missing splits.
        CorruptImageError: missing or unreadable images and ``skip_corrupt=False``.
    """
    if verify_images not in VERIFY_MODES:
        raise ValueError(f"verify_images must be one of {VERIFY_MODES}, got {verify_images!r}")
    _check_fractions(validation_fraction, test_fraction)
    root = Path(os.path.abspath(os.path.expanduser(os.fspath(data_dir))))
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise DatasetLayoutError(f"imagefolder data_dir {str(root)!r} {what}; expected {LAYOUTS['folders']} "
                                 f"or {LAYOUTS['flat']}")
    roots = find_split_folders(root)
    layout = "folders" if roots else "flat"
    logger.info("imagefolder %s: found layout %s", root, LAYOUTS[layout])
    found = {s: _collect(p, root, s) for s, p in roots.items()} if roots else {"train": _collect(root, root, "train")}
    where = "" if roots else " (flat layout)"
    by_extension = _unaccepted(roots, root, found)
    classes = _check_classes(found, root, where)
    skipped = _verify(found, classes, root, verify_images, skip_corrupt)
    _check_classes(found, root, where + " after dropping unreadable images" if skipped else where)
    fractions = {"validation": validation_fraction, "test": test_fraction}
    carved = _carve(found, classes, fractions, seed)
    data_files = {s: [str(p) for c in classes for p in found[s][c]] for s in SPLIT_NAMES}
    ds = datasets.load_dataset(
        "imagefolder", data_files=data_files, drop_labels=False, drop_metadata=True, cache_dir=cache_dir,
        num_proc=num_proc,
    )
    names = ds["train"].features["label"].names
    if names != classes:  # pragma: no cover - datasets changed how it names the classes
        raise RuntimeError(f"datasets' imagefolder named the classes {names}, expected {classes}")
    manifest = _manifest(root, layout, roots, carved, fractions, seed, verify_images, classes, data_files, found,
                         skipped, split_description)
    manifest.update(skipped_extensions=by_extension, num_skipped_extensions=len(by_extension))  # issue 17
    logger.info("imagefolder %s: %s; %s", root, manifest["description"], manifest["num_images"])
    return datasets.DatasetDict({s: ds[s] for s in SPLIT_NAMES}), manifest
