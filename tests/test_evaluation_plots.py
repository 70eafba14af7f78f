"""The plots write readable PNGs without touching the caller's matplotlib backend; the ROC plot reports sklearn's
AUROC per class; the training curves continue the step across stages."""

import matplotlib
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from cdtm_hf.evaluation.plots import (
    continuous_steps,
    plot_forest,
    plot_reliability_diagram,
    plot_roc_pr_curves,
    plot_training_curves,
)
from cdtm_hf.evaluation.uncertainty import bootstrap_metrics, paired_bootstrap

HISTORY = [
    {"loss": 0.9, "step": 5, "stage": 1}, {"eval_loss": 0.8, "eval_f1": 0.6, "step": 10, "stage": 1},
    {"train_runtime": 1.0, "step": 10, "stage": 1},
    {"loss": 0.5, "step": 5, "stage": 2}, {"eval_loss": 0.4, "eval_f1": 0.9, "step": 8, "stage": 2},
]


def data(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, 120)
    logits = rng.normal(size=(120, 3))
    logits[np.arange(120), labels] += 1.5
    return logits, labels


def readable_png(path, min_width=400):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= min_width and image.height >= 150
        assert np.asarray(image.convert("L")).std() > 5  # not blank


def test_the_step_continues_across_stages():
    got = [(stage, step) for stage, step, _ in continuous_steps(HISTORY)]
    assert got == [(1, 5), (1, 10), (1, 10), (2, 15), (2, 18)]
    assert [s for _, s, _ in continuous_steps([{"loss": 1, "step": 3}, {"epoch": 1}])] == [3]


def test_every_plot_writes_a_png_and_leaves_the_backend_alone(tmp_path):
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        logits, labels = data()
        plot_reliability_diagram(3 * logits, labels, tmp_path / "reliability.png", temperature=2.5)
        path, per_class = plot_roc_pr_curves(logits, labels, ["a", "b", "c"], tmp_path / "roc_pr.png")
        plot_training_curves(HISTORY, tmp_path / "curves" / "training_curves.png",
                             stage_names={1: "backbone frozen", 2: "all layers"})
        base, other = bootstrap_metrics(logits, labels, resamples=200), bootstrap_metrics(
            logits + np.random.default_rng(1).normal(size=logits.shape), labels, resamples=200)
        plot_forest([("LP", base["f1"]), ("LP+CDTM", other["f1"])], tmp_path / "forest.png",
                    reference=base["f1"]["value"], reference_label="LP")
        diff = paired_bootstrap(np.roll(logits, 1, axis=0), logits, labels, resamples=200)
        plot_forest([("half vs full", diff["f1"])], tmp_path / "difference.png", reference=0.0)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    for name in ("reliability.png", "roc_pr.png", "curves/training_curves.png", "forest.png", "difference.png"):
        readable_png(tmp_path / name)
    for c, name in enumerate("abc"):
        assert per_class[name]["auroc"] == pytest.approx(roc_auc_score(labels == c, logits[:, c] - np.log(
            np.exp(logits).sum(axis=1))))


def test_a_class_absent_from_the_test_set_has_no_curve(tmp_path):
    logits, labels = data()
    labels[labels == 2] = 0
    _, per_class = plot_roc_pr_curves(logits, labels, ["a", "b", "c"], tmp_path / "roc.png")
    assert per_class["c"]["auroc"] is None and per_class["a"]["auroc"] is not None
    multi = (np.random.default_rng(2).random((50, 2)) < 0.5).astype(int)
    _, per_label = plot_roc_pr_curves(np.random.default_rng(3).normal(size=(50, 2)), multi, ["x", "y"],
                                      tmp_path / "roc_ml.png")
    assert set(per_label) == {"x", "y"}
    plot_reliability_diagram(np.zeros((50, 2)), multi, tmp_path / "reliability_ml.png")
    readable_png(tmp_path / "reliability_ml.png")


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no entry with a `step`"):
        plot_training_curves([{"epoch": 1}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one"):
        plot_forest([], tmp_path / "x.png")
