"""Bootstrap intervals against closed forms and references: the vectorised metrics equal the shipped `evaluate`
module's, the accuracy interval matches the Wilson interval, BCa matches scipy's, the multinomial image bootstrap
matches resampling images by index, the cluster bootstrap widens with correlated patients, paired differences."""

import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from cdtm_hf.evaluation import metrics
from cdtm_hf.evaluation.resampling import confusion_scores, weighted_multilabel_scores
from cdtm_hf.evaluation.uncertainty import (
    bootstrap_interval,
    bootstrap_metrics,
    bootstrap_per_class,
    format_difference,
    format_interval,
    format_runs,
    paired_bootstrap,
    summarize_runs,
)

SINGLE = ("accuracy", "precision", "recall", "f1", "f1_eq12")


def one_hot(preds, k):
    out = np.zeros((len(preds), k))
    out[np.arange(len(preds)), preds] = 1.0
    return out


def wilson(k, n, level=0.95):
    z = stats.norm.ppf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_vectorised_metrics_equal_the_evaluate_module_to_the_last_digit():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 97)  # class 4 never occurs, class 3 is never predicted
    preds = np.where(rng.random(97) < 0.6, labels, rng.integers(0, 3, 97))
    preds[labels == 3] = 0
    logits = one_hot(preds, 5)
    reference = metrics.load_classification_metric(False).compute(predictions=preds, references=labels, num_labels=5)
    got = bootstrap_metrics(logits, labels, resamples=10)
    for key in SINGLE:
        assert got[key]["value"] == reference[key], key
    confusion = confusion_scores(np.array(reference["confusion_matrix"]))
    for key in ("precision", "recall", "f1"):
        assert confusion[f"per_class_{key}"].tolist() == reference[f"per_class_{key}"]
    groups = rng.integers(0, 20, 97)  # the cluster design adds up patients' counts: the same point estimate
    clustered = bootstrap_metrics(logits, labels, groups, resamples=10)
    assert all(clustered[k]["value"] == reference[k] for k in SINGLE)


def test_multilabel_values_equal_the_evaluate_module_and_weighted_auroc_equals_sklearn():
    rng = np.random.default_rng(4)
    labels = (rng.random((80, 3)) < 0.4).astype(int)
    logits = np.round(rng.normal(size=(80, 3)) + labels, 1)  # rounded: tied scores
    reference = metrics.multilabel_metrics(logits, labels)
    got = bootstrap_metrics(logits, labels, resamples=10)
    for key in ("accuracy", "precision", "recall", "f1", "f1_eq12"):
        assert got[key]["value"] == reference[key], key
    assert got["auroc"]["value"] == pytest.approx(reference["auroc"], rel=1e-12)
    weights = rng.integers(0, 4, (5, 80)).astype(float)  # five resamples, as counts of each image
    probs = 1 / (1 + np.exp(-logits))
    scores = weighted_multilabel_scores(weights, probs, labels)
    for b in range(5):
        for j in range(3):
            expected = roc_auc_score(labels[:, j], probs[:, j], sample_weight=weights[b])
            assert scores["per_label_auroc"][b, j] == pytest.approx(expected, rel=1e-12)


def _proportion(k, n, method):
    labels = np.zeros(n, dtype=int)
    preds = np.r_[np.zeros(k, dtype=int), np.ones(n - k, dtype=int)]
    return bootstrap_metrics(one_hot(preds, 2), labels, resamples=20000, method=method, seed=1)["accuracy"]


@pytest.mark.parametrize("method,k,n", [("percentile", 160, 200), ("bca", 160, 200), ("bca", 90, 100)])
def test_accuracy_interval_of_a_binomial_proportion_matches_the_wilson_interval(method, k, n):
    got = _proportion(k, n, method)
    low, high = wilson(k, n)
    assert got["value"] == k / n
    assert got["low"] == pytest.approx(low, abs=0.012) and got["high"] == pytest.approx(high, abs=0.012)
    assert got["method"] == method and got["unit"] == "image" and got["num_units"] == n


def test_bca_corrects_the_percentile_intervals_skew_near_a_ceiling():
    """At 90/100 the percentile interval is symmetric like Wald's and too short below; BCa follows Wilson's."""
    low, _ = wilson(90, 100)
    percentile, bca = _proportion(90, 100, "percentile"), _proportion(90, 100, "bca")
    assert abs(bca["low"] - low) < 0.5 * abs(percentile["low"] - low)


def test_bca_matches_scipy_bootstrap_on_a_skewed_mean():
    correct = np.r_[np.ones(54), np.zeros(6)].astype(int)
    ours = bootstrap_metrics(one_hot(1 - correct, 2), np.zeros(60, dtype=int), resamples=40000, seed=2)["accuracy"]
    scipy_bca = stats.bootstrap((correct.astype(float),), np.mean, n_resamples=40000, method="BCa",
                                random_state=np.random.default_rng(2)).confidence_interval
    assert ours["method"] == "bca"
    assert ours["low"] == pytest.approx(scipy_bca.low, abs=0.01)
    assert ours["high"] == pytest.approx(scipy_bca.high, abs=0.01)


def test_multinomial_image_bootstrap_matches_resampling_images_by_index():
    """Drawing pattern counts from a multinomial is the image bootstrap: its macro-F1 quantiles match index draws."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 150)
    preds = np.where(rng.random(150) < 0.7, labels, rng.integers(0, 3, 150))
    got = bootstrap_metrics(one_hot(preds, 3), labels, resamples=20000, method="percentile", seed=0)["f1"]
    index = rng.integers(0, 150, (20000, 150))
    codes = labels[index] * 3 + preds[index] + 9 * np.arange(20000)[:, None]
    confusion = np.bincount(codes.ravel(), minlength=9 * 20000).reshape(20000, 3, 3)
    low, high = np.quantile(confusion_scores(confusion)["f1"], [0.025, 0.975])
    assert got["low"] == pytest.approx(low, abs=0.006) and got["high"] == pytest.approx(high, abs=0.006)


def _patients(correlated: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(40), 10)
    labels = np.repeat(rng.integers(0, 2, 40), 10)
    right = np.repeat(rng.random(40) < 0.75, 10) if correlated else rng.random(400) < 0.75
    preds = np.where(right, labels, 1 - labels)
    return one_hot(preds, 2), labels, groups


def test_cluster_bootstrap_is_wider_than_the_image_bootstrap_when_a_patients_images_agree():
    logits, labels, groups = _patients(correlated=True)
    image = bootstrap_metrics(logits, labels, resamples=2000)["accuracy"]
    patient = bootstrap_metrics(logits, labels, groups, resamples=2000)["accuracy"]
    assert image["unit"] == "image" and patient["unit"] == "patient" and patient["num_units"] == 40
    assert patient["value"] == image["value"]
    assert patient["high"] - patient["low"] > 2.0 * (image["high"] - image["low"])
    # with independent images the two agree: clustering costs nothing where there is nothing to cluster
    logits, labels, groups = _patients(correlated=False)
    image = bootstrap_metrics(logits, labels, resamples=2000)["accuracy"]
    patient = bootstrap_metrics(logits, labels, groups, resamples=2000)["accuracy"]
    assert 0.7 < (patient["high"] - patient["low"]) / (image["high"] - image["low"]) < 1.4


def test_results_are_seeded_json_records():
    logits, labels, groups = _patients(correlated=True)
    first = bootstrap_metrics(logits, labels, groups.tolist(), seed=7, resamples=300)
    assert first == bootstrap_metrics(logits, labels, groups.tolist(), seed=7, resamples=300)
    assert first["f1"]["low"] != bootstrap_metrics(logits, labels, groups, seed=8, resamples=300)["f1"]["low"]
    record = json.loads(json.dumps(first))["f1"]
    assert set(record) >= {"value", "low", "high", "level", "method", "resamples", "unit", "num_units", "seed"}
    assert record["low"] <= record["value"] <= record["high"] and record["resamples"] == 300


def test_paired_difference_of_a_model_with_itself_is_exactly_zero():
    logits, labels, groups = _patients(correlated=True)
    got = paired_bootstrap(logits, logits, labels, groups, resamples=500)
    for key in SINGLE:
        assert got[key]["value"] == 0 and got[key]["low"] == 0 and got[key]["high"] == 0
        assert got[key]["p_value"] == 1.0 and got[key]["unit"] == "patient"


def test_paired_interval_is_narrower_than_either_models_own_interval():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 300)
    preds_b = np.where(rng.random(300) < 0.8, labels, 1 - labels)
    preds_a = preds_b.copy()
    flip = rng.choice(np.flatnonzero(preds_b != labels), 15, replace=False)  # a fixes 15 of b's errors
    preds_a[flip] = labels[flip]
    a, b = one_hot(preds_a, 2), one_hot(preds_b, 2)
    diff = paired_bootstrap(a, b, labels, resamples=2000)["accuracy"]
    own_a, own_b = (bootstrap_metrics(x, labels, resamples=2000)["accuracy"] for x in (a, b))
    assert diff["value"] == pytest.approx(15 / 300) and diff["a"] - diff["b"] == diff["value"]
    assert diff["low"] > 0 and diff["p_value"] < 0.01  # every resample favours a: it never loses an image
    widths = [r["high"] - r["low"] for r in (diff, own_a, own_b)]
    assert widths[0] < min(widths[1:])
    assert widths[0] < 0.5 * math.hypot(widths[1], widths[2])  # what two unpaired intervals would suggest
    assert diff["value"] == pytest.approx(
        metrics.classification_metrics(a, labels)["accuracy"] - metrics.classification_metrics(b, labels)["accuracy"])


def test_multilabel_gets_intervals_clustered_by_patient():
    rng = np.random.default_rng(8)
    labels = (rng.random((120, 4)) < 0.3).astype(int)
    logits = rng.normal(size=(120, 4)) + 2 * labels - 1
    groups = np.repeat(np.arange(30), 4)
    got = bootstrap_metrics(logits, labels, groups, resamples=400)
    assert set(got) == {"auroc", "accuracy", "precision", "recall", "f1", "f1_eq12"}
    for record in got.values():
        assert record["unit"] == "patient" and record["low"] <= record["value"] <= record["high"]
    per_label = bootstrap_per_class(logits, labels, ["a", "b", "c", "d"], groups, resamples=200)
    assert per_label["a"]["support"] == labels[:, 0].sum() and "auroc" in per_label["a"]
    paired = paired_bootstrap(logits, logits + rng.normal(size=logits.shape), labels, resamples=200)
    assert paired["auroc"]["value"] > 0


def test_per_class_intervals_match_the_reports_per_class_scores():
    logits, labels, groups = _patients(correlated=True)
    report = metrics.evaluation_report(logits, labels, ["benign", "malignant"])
    got = bootstrap_per_class(logits, labels, ["benign", "malignant"], groups, resamples=300)
    for name in ("benign", "malignant"):
        for key in ("precision", "recall", "f1"):
            assert got[name][key]["value"] == pytest.approx(report["per_class"][name][key], abs=1e-15)
        assert got[name]["support"] == report["per_class"][name]["support"]
        assert got[name]["patients"] == len(set(groups[labels == (name == "malignant")]))


def test_bca_falls_back_to_percentile_where_the_estimate_lies_outside_every_resample():
    found = bootstrap_interval(np.linspace(0.5, 0.6, 100), 0.9, method="bca", jackknife=np.full(10, 0.9))
    assert found["method"] == "percentile" and "BCa undefined" in found["note"]
    assert found["low"] == pytest.approx(0.5025) and found["high"] == pytest.approx(0.5975)
    nan = bootstrap_interval(np.r_[np.full(10, np.nan), np.linspace(0, 1, 90)], 0.5, method="percentile")
    assert nan["undefined_resamples"] == 10


def test_bad_settings_are_refused_with_the_remedy():
    logits, labels, groups = _patients(correlated=True)
    with pytest.raises(ValueError, match="not one of"):
        bootstrap_metrics(logits, labels, method="normal")
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_metrics(logits, labels, resamples=1)
    with pytest.raises(ValueError, match="one patient id per image"):
        bootstrap_metrics(logits, labels, groups[:-1])
    with pytest.raises(ValueError, match="needs at least 2"):
        bootstrap_metrics(logits, labels, np.zeros(len(labels)))
    with pytest.raises(ValueError, match="same test images"):
        paired_bootstrap(logits, logits[:-1], labels)


def test_mean_std_over_runs_and_the_formatted_cells():
    runs = [{"f1": 0.90, "accuracy": 0.9}, {"f1": 0.92, "accuracy": None}, {"f1": 0.94, "accuracy": 0.95}]
    summary = summarize_runs(runs)
    assert summary["f1"]["mean"] == pytest.approx(0.92) and summary["f1"]["std"] == pytest.approx(0.02)
    assert summary["f1"]["n"] == 3 and summary["accuracy"]["n"] == 2
    assert format_runs(summary["f1"]) == "92.00 ± 2.00 (n=3)"
    assert format_runs(summarize_runs([{"f1": 0.5}])["f1"]) == "50.00 (n=1)"
    assert format_interval({"value": 0.917, "low": 0.882, "high": 0.946}) == "91.7 [88.2, 94.6]"
    assert format_difference({"value": 0.012, "low": -0.031, "high": 0.054}) == "+1.2 [-3.1, +5.4]"
    assert format_interval({"value": math.nan}) == "–"
