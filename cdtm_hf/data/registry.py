"""The registry of medical data sets (name -> builder class, imported when used) and the one check of a data source.

Listing the names and checking a `--dataset` costs no import of `datasets`: a builder module is imported only when its
class is asked for (a config to check, a data set to build).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from ..core.presets import suggest
from .splits import SPLIT_STRATEGIES

if TYPE_CHECKING:
    from .builder import MedicalImageBuilder

__all__ = ["DATASETDICT", "DATASET_BUILDERS", "IMAGEFOLDER", "data_source_problem", "get_builder_class"]

#: the class-per-folder source (`load_imagefolder`), beside the builders
IMAGEFOLDER = "imagefolder"
#: the splits given from Python (`run_finetuning(..., dataset=DatasetDict)`)
DATASETDICT = "datasetdict"
#: a Hub dataset id (``org/name`` or ``name``), as `--dataset_name` takes it where it is not a local folder
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

_BUILDERS = {
    "breakhis": ("breakhis", "BreakHis"),
    "hcrf": ("hcrf", "HCRF"),
    "isic2019": ("isic2019", "ISIC2019"),
    "aptos2019": ("aptos2019", "APTOS2019"),
    "cbis_ddsm": ("cbis_ddsm", "CBISDDSM"),
    "chexpert": ("chexpert", "CheXpert"),
}


class _BuilderRegistry(Mapping):
    """name -> builder class; a builder's module is imported on first access."""

    def __getitem__(self, name: str) -> type[MedicalImageBuilder]:
        module, cls = _BUILDERS[name]
        return getattr(importlib.import_module(f".{module}", __package__), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(_BUILDERS)

    def __len__(self) -> int:
        return len(_BUILDERS)


#: registry: dataset name -> builder class (names are matched case-insensitively, ignoring ``-``/``_``, so
#: ``"CBIS-DDSM"`` and ``"cbis_ddsm"`` both work)
DATASET_BUILDERS: Mapping[str, type[MedicalImageBuilder]] = _BuilderRegistry()


def _canonical(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _registered_name(name: str) -> str | None:
    return next((k for k in _BUILDERS if _canonical(k) == _canonical(name)), None)


def get_builder_class(name: str) -> type[MedicalImageBuilder]:
    """Builder class for a dataset name (see `DATASET_BUILDERS`)."""
    key = _registered_name(name)
    if key is None:
        raise ValueError(f"unknown medical dataset {name!r}{suggest(name, list(_BUILDERS))}; available: "
                         f"{', '.join(sorted(_BUILDERS))} (or {IMAGEFOLDER})")
    return DATASET_BUILDERS[key]


def _named_source_problem(dataset: str, dataset_config: str | None, dataset_name: str | None,
                          dataset_config_name: str | None) -> tuple[str, str] | None:
    """The check of `--dataset_name` / `--dataset_config_name` (a Hub dataset, a local repository or a
    `save_to_disk` folder) against the other source flags."""
    if not dataset_name:
        if dataset_config_name:
            return "dataset_config_name", ("--dataset_config_name is the config of a --dataset_name dataset; pass "
                                           "--dataset_name too (a builder's config is --dataset_config)")
        return None
    if dataset not in (IMAGEFOLDER, DATASETDICT):
        return "dataset_name", (f"--dataset_name {dataset_name} and --dataset {dataset} name two data sources; pass "
                                "one of them")
    if dataset_config:
        return "dataset_config", (f"--dataset_config is a builder's config; the config of --dataset_name "
                                  f"{dataset_name} is --dataset_config_name {dataset_config}")
    looks_local = dataset_name.startswith((".", "/", "~", "\\")) or os.path.isabs(dataset_name)
    if not os.path.exists(os.path.expanduser(dataset_name)) and (looks_local or not _HUB_ID.match(dataset_name)):
        return "dataset_name", (f"--dataset_name {dataset_name!r} is neither an existing folder nor a Hub dataset id "
                                "(org/name); pass a Hub id, a local dataset repository or a save_to_disk folder")
    return None


def data_source_problem(
    dataset: str, dataset_config: str | None = None, split_strategy: str | None = None, *,
    dataset_name: str | None = None, dataset_config_name: str | None = None,
) -> tuple[str, str] | None:
    """`(field, why)` when a data source cannot be loaded as asked, or None: the one check of `--dataset`,
    `--dataset_config`, `--split_strategy` (a builder's strategies; an imagefolder takes any text as a description
    of how its folders were made), `--dataset_name` and `--dataset_config_name` (the sources of
    `cdtm_hf.data.sources`: a Hub dataset, a local dataset repository, a `save_to_disk` folder; and `datasetdict`,
    the splits given from Python).

    Only a `dataset_config` makes the builder's module (and `datasets`) load, to read its configs.
    """
    problem = _named_source_problem(dataset, dataset_config, dataset_name, dataset_config_name)
    if problem or dataset in (IMAGEFOLDER, DATASETDICT):
        return problem
    key = _registered_name(dataset)
    if key is None:
        return "dataset", (f"unknown dataset {dataset!r}{suggest(dataset, [*_BUILDERS, IMAGEFOLDER])}; datasets: "
                           f"{IMAGEFOLDER}, {', '.join(_BUILDERS)}; a Hub or save_to_disk dataset: --dataset_name")
    if split_strategy is not None and split_strategy not in SPLIT_STRATEGIES:
        return "split_strategy", (f"split_strategy {split_strategy!r} is not one of: {', '.join(SPLIT_STRATEGIES)}"
                                  f"{suggest(split_strategy, SPLIT_STRATEGIES)}")
    if dataset_config is not None:
        configs = [c.name for c in DATASET_BUILDERS[key].BUILDER_CONFIGS]
        if dataset_config not in configs:
            return "dataset_config", (f"{dataset} has no config {dataset_config!r}{suggest(dataset_config, configs)}; "
                                      f"configs: {', '.join(configs)}")
    if split_strategy == "official" and not DATASET_BUILDERS[key].HAS_OFFICIAL_SPLIT:
        return "split_strategy", (f"split_strategy 'official' is not available for {dataset} (it has no official "
                                  "split); use patient or paper")
    return None
