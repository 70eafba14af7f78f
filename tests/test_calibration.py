"""Calibration against closed forms and scikit-learn: ECE 0 for a calibrated set, Brier and NLL as sklearn defines
them, temperature scaling that lowers the NLL of an overconfident model, and a saturated validation set refused."""

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.metrics import brier_score_loss, log_loss

from cdtm_hf.evaluation.calibration import (
    apply_temperature,
    brier_score,
    calibration_intervals,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)


def binary_logits(confidence, correct, labels):
    """Two-class logits whose top-label confidence is `confidence`, right where `correct`."""
    predicted = np.where(correct, labels, 1 - labels)
    probs = np.zeros((len(labels), 2))
    probs[np.arange(len(labels)), predicted] = confidence
    probs[np.arange(len(labels)), 1 - predicted] = 1 - confidence
    return np.log(probs)


def test_ece_is_zero_for_a_perfectly_calibrated_set_and_matches_a_hand_count():
    # 10 images at confidence 0.6 with 6 right, 20 at 0.9 with 18 right: every bin's accuracy is its confidence
    confidence = np.r_[np.full(10, 0.6), np.full(20, 0.9)]
    correct = np.r_[np.arange(10) < 6, np.arange(20) < 18]
    labels = np.arange(30) % 2
    logits = binary_logits(confidence, correct, labels)
    assert expected_calibration_error(logits, labels) == pytest.approx(0.0, abs=1e-12)
    bins = reliability_bins(logits, labels)
    assert sum(bins["count"]) == 30 and len(bins["edges"]) == 16
    # all 30 right instead: |1 - 0.6| * 10/30 + |1 - 0.9| * 20/30
    logits = binary_logits(confidence, np.ones(30, bool), labels)
    assert expected_calibration_error(logits, labels) == pytest.approx(0.4 / 3 + 0.2 / 3)


@pytest.mark.parametrize("classes", [2, 4])
def test_brier_and_nll_equal_scikit_learns(classes):
    rng = np.random.default_rng(classes)
    logits, labels = rng.normal(size=(200, classes)), rng.integers(0, classes, 200)
    probs = softmax(logits, axis=1)
    assert brier_score(logits, labels) == pytest.approx(brier_score_loss(labels, probs, labels=range(classes)))
    assert negative_log_likelihood(logits, labels) == pytest.approx(log_loss(labels, probs, labels=range(classes)))
    multi = (rng.random((200, classes)) < 0.3).astype(int)
    assert brier_score(logits, multi) == pytest.approx(brier_score_loss(multi.ravel(), expit(logits).ravel()))
    assert negative_log_likelihood(logits, multi) == pytest.approx(log_loss(multi.ravel(), expit(logits).ravel()))


def _calibrated(n, seed):
    rng = np.random.default_rng(seed)
    logits = 1.5 * rng.normal(size=(n, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits, axis=1)])
    return logits, labels


def test_temperature_scaling_lowers_the_nll_of_an_overconfident_model():
    val_logits, val_labels = _calibrated(1500, 0)
    test_logits, test_labels = _calibrated(1500, 1)
    fit = fit_temperature(3.0 * val_logits, val_labels)  # three times too confident
    assert fit["identified"] and fit["temperature"] == pytest.approx(3.0, rel=0.15)
    assert fit["validation_nll_after"] < fit["validation_nll_before"]
    report = calibration_report(3.0 * test_logits, test_labels, fit["temperature"])
    assert report["after"]["nll"] < report["before"]["nll"] and report["after"]["ece"] < report["before"]["ece"]
    assert report["after"]["brier"] < report["before"]["brier"]
    scaled = apply_temperature(3.0 * test_logits, fit["temperature"])
    assert (scaled.argmax(1) == test_logits.argmax(1)).all()  # accuracy and F1 are unchanged
    under = fit_temperature(0.4 * val_logits, val_labels)
    assert under["temperature"] < 1


def test_a_saturated_validation_set_fits_no_temperature():
    labels = np.arange(20) % 2
    logits = 5.0 * np.eye(2)[labels]
    fit = fit_temperature(logits, labels)
    assert fit["identified"] is False and fit["temperature"] == 1.0 and "every validation image" in fit["warning"]


def test_calibration_intervals_hold_the_point_values_and_cluster_by_patient():
    logits, labels = _calibrated(300, 2)
    groups = np.repeat(np.arange(60), 5)
    got = calibration_intervals(3 * logits, labels, groups, temperature=2.0, resamples=400)
    assert got["ece"]["value"] == pytest.approx(expected_calibration_error(3 * logits, labels, temperature=2.0))
    assert got["brier"]["value"] == pytest.approx(brier_score(3 * logits, labels, temperature=2.0))
    assert got["nll"]["value"] == pytest.approx(negative_log_likelihood(3 * logits, labels, temperature=2.0))
    assert got["ece"]["method"] == "percentile" and got["nll"]["method"] == "bca"
    for record in got.values():
        assert record["unit"] == "patient" and record["num_units"] == 60
    assert got["nll"]["low"] <= got["nll"]["value"] <= got["nll"]["high"]


def test_bad_temperature_is_refused():
    with pytest.raises(ValueError, match="positive finite"):
        apply_temperature(np.zeros((2, 2)), 0.0)
