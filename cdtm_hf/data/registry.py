"""The registry of medical data sets (name -> builder class, imported when used) and the one check of a data source.

Listing the names and checking a `--dataset` costs no import of `datasets`: a builder module is imported only when its
class is asked for (a config to check, a data set to build).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from ..core.presets import suggest
from .splits import SPLIT_STRATEGIES

if TYPE_CHECKING:
    from .builder import MedicalImageBuilder

__all__ = ["DATASET_BUILDERS", "IMAGEFOLDER", "data_source_problem", "get_builder_class"]

#: the class-per-folder source (`load_imagefolder`), beside the builders
IMAGEFOLDER = "imagefolder"

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


def data_source_problem(
    dataset: str, dataset_config: str | None = None, split_strategy: str | None = None
) -> tuple[str, str] | None:
    """`(field, why)` when a data source cannot be loaded as asked, or None: the one check of `--dataset`,
    `--dataset_config` and `--split_strategy` (a builder's strategies; an imagefolder takes any text as a description
    of how its folders were made).

    Only a `dataset_config` makes the builder's module (and `datasets`) load, to read its configs.
    """
    if dataset == IMAGEFOLDER:
        return None
    key = _registered_name(dataset)
    if key is None:
        return "dataset", (f"unknown dataset {dataset!r}{suggest(dataset, [*_BUILDERS, IMAGEFOLDER])}; datasets: "
                           f"{IMAGEFOLDER}, {', '.join(_BUILDERS)}")
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
