"""Evaluation: the metrics (an `evaluate` module shipped here), reporting tables, efficiency (Table VII), CCA
explanations, ONNX export and prediction over image files."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["efficiency_row", "efficiency_summary"], ".efficiency"),
    **dict.fromkeys(["cca_explanations", "explain_dataset"], ".explain"),
    **dict.fromkeys(["export_onnx", "verify_onnx"], ".export"),
    **dict.fromkeys(["compute_metrics", "evaluation_report", "write_results"], ".metrics"),
    **dict.fromkeys(["load_for_inference", "predict_images"], ".predict"),
    **dict.fromkeys(["markdown_table", "mean_std"], ".reporting"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
