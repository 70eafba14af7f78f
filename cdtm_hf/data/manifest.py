"""The split manifest: what a data source split, how, and what it skipped. One builder, one writer, one reader.

Every data source (the medical builders, `load_imagefolder`) records its split with [`make_manifest`], writes it with
[`write_manifest`] as `split_manifest.json`, and returns it beside its `DatasetDict`. A run reads the label facts from
it (`label_column`, `multi_label`, `class_names`) instead of guessing them from column names, and its report keeps
[`manifest_summary`] (no per-file list, no local path).

Keys every manifest has:

- `dataset`, `split_strategy`, `grouping`, `description`, `seed`: how it was split. `grouping` says what the split
  kept together: `"patient"` (no patient in two splits), `"image"` (one group per image: the data has no patient ids),
  `"folders"` (the split folders as given) or `"random"` (random, stratified by class).
- `has_patient_ids`: whether the group ids are real patient (or lesion) ids.
- `class_names`, `label_column`, `multi_label`: the label facts.
- `num_images` and `counts` (images per split and class), `skipped` (every file left out, with its reason) and
  `num_skipped`, `files` (relative path -> split).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MANIFEST_FILENAME = "split_manifest.json"

#: grouping -> what it means for the split, in words (the card and the report say it this way)
GROUPINGS = {
    "patient": "grouped by patient: no patient contributes images to more than one split",
    "image": "grouped by image: the data carries no patient ids, so one patient may appear in several splits",
    "folders": "as given by the train/validation/test folders",
    "random": "random, stratified by class, not grouped by patient",
}

__all__ = ["GROUPINGS", "MANIFEST_FILENAME", "make_manifest", "manifest_summary", "read_manifest", "write_manifest"]


def make_manifest(
    *,
    dataset: str,
    split_strategy: str,
    grouping: str,
    seed: int | None,
    class_names: Sequence[str],
    label_column: str,
    multi_label: bool,
    num_images: Mapping[str, int],
    counts: Mapping[str, Mapping[str, int]],
    skipped: Sequence[Mapping[str, Any]],
    files: Mapping[str, str],
    has_patient_ids: bool,
    description: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A split manifest with the keys every reader relies on; `extra` holds what one source adds.

    Args:
        dataset (`str`): the data set's display name (`"BreakHis"`, `"imagefolder"`).
        split_strategy (`str`): the strategy that made the split (`"patient"`, `"paper"`, `"official"`, `"folders"`,
            `"stratified"`, or the caller's own words for a split made elsewhere).
        grouping (`str`): one of `GROUPINGS`.
        seed (`int`, *optional*): the split seed.
        class_names (`Sequence[str]`): the class (label) names, in id order.
        label_column (`str`): `"label"` (a `ClassLabel`) or `"labels"` (multi-hot floats).
        multi_label (`bool`): whether `label_column` is multi-hot.
        num_images (`Mapping[str, int]`): split -> images.
        counts (`Mapping`): split -> class -> images (multi-label: positives).
        skipped (`Sequence[Mapping]`): one `{"path", "reason"}` per file left out.
        files (`Mapping[str, str]`): relative path -> split.
        has_patient_ids (`bool`): whether the groups are real patient (or lesion) ids.
        description (`str`, *optional*): the split in one sentence; default from the strategy, grouping and seed.
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping {grouping!r} is not one of: {', '.join(GROUPINGS)}")
    if description is None:
        seeded = f" (seed {seed})" if seed is not None else ""
        description = f"{split_strategy} split, {GROUPINGS[grouping]}{seeded}"
    counts = {s: dict(c) for s, c in counts.items()}
    return {
        "dataset": dataset,
        "split_strategy": split_strategy,
        "grouping": grouping,
        "description": description,
        "seed": seed,
        "has_patient_ids": bool(has_patient_ids),
        "class_names": list(class_names),
        "label_column": label_column,
        "multi_label": bool(multi_label),
        **extra,
        "num_images": {s: int(n) for s, n in num_images.items()},
        "counts": counts,
        "skipped": [dict(s) for s in skipped],
        "num_skipped": len(skipped),
        "files": dict(sorted(files.items())),
    }


def write_manifest(manifest: Mapping[str, Any], folder: str | os.PathLike) -> Path:
    """Write `manifest` as `<folder>/split_manifest.json` (the folder is created); return its path."""
    os.makedirs(folder, exist_ok=True)
    path = Path(folder) / MANIFEST_FILENAME
    path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return path


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read a `split_manifest.json` (or the folder that holds one).

    Manifests written by cdtm_hf 0.2 are read too: their `class_counts` is their `counts`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILENAME
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if "counts" not in manifest and "class_counts" in manifest:
        manifest["counts"] = manifest["class_counts"]
    manifest.pop("class_counts", None)
    manifest.pop("skipped_corrupt", None)
    return manifest


def manifest_summary(manifest: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The manifest as a run report carries it (the report travels with the model, to cards and the Hub): without
    the per-file list and the local data path, and with skipped files named relative to the data folder."""
    if not manifest:
        return None
    summary = {k: v for k, v in manifest.items() if k not in ("files", "data_dir")}
    root = str(manifest.get("data_dir") or "")
    if root and summary.get("skipped"):
        summary["skipped"] = [
            {**s, "path": os.path.relpath(s["path"], root) if str(s["path"]).startswith(root) else s["path"]}
            for s in summary["skipped"]
        ]
    return summary
