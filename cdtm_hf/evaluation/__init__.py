"""Evaluation: the metrics (an `evaluate` module shipped here), their bootstrap intervals and paired comparisons,
patient-level results, calibration, the result plots, reporting tables, efficiency (Table VII), CCA explanations,
ONNX export and prediction over image files."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["calibration_intervals", "calibration_report", "fit_temperature"], ".calibration"),
    **dict.fromkeys(["efficiency_row", "efficiency_summary"], ".efficiency"),
    **dict.fromkeys(["cca_explanations", "explain_dataset"], ".explain"),
    **dict.fromkeys(["export_onnx", "verify_onnx"], ".export"),
    **dict.fromkeys(["compute_metrics", "evaluation_report", "write_results"], ".metrics"),
    **dict.fromkeys(["patient_level_results", "patient_recognition_rate"], ".patients"),
    **dict.fromkeys(
        ["plot_forest", "plot_reliability_diagram", "plot_roc_pr_curves", "plot_training_curves"], ".plots"
    ),
    **dict.fromkeys(["load_for_inference", "predict_images"], ".predict"),
    **dict.fromkeys(["markdown_table", "mean_std"], ".reporting"),
    **dict.fromkeys(["bootstrap_metrics", "bootstrap_per_class", "paired_bootstrap", "summarize_runs"], ".uncertainty"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
