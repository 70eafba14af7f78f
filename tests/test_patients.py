"""Patient-level results on hand-made examples: the BreakHis patient recognition rate, the prediction by mean
probability (which can differ from a majority vote), patients split by class, multi-label aggregation."""

import json

import numpy as np
import pytest

from cdtm_hf.evaluation import metrics
from cdtm_hf.evaluation.patients import (
    aggregate_by_patient,
    patient_ids,
    patient_level_results,
    patient_recognition_rate,
)

# patient A: 3 benign images, 2 right; B: 1 malignant image, right; C: 2 malignant images, both wrong
LABELS = np.array([0, 0, 0, 1, 1, 1])
GROUPS = ["A", "A", "A", "B", "C", "C"]
LOGITS = np.log(np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.1, 0.9], [0.7, 0.3], [0.6, 0.4]]))


def test_patient_recognition_rate_of_a_hand_made_example():
    got = patient_recognition_rate(LOGITS, LABELS, GROUPS, resamples=200)
    assert got["value"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # 5/9, while image accuracy is 3/6
    assert got["patient_scores"] == pytest.approx({"A": 2 / 3, "B": 1.0, "C": 0.0})
    assert got["unit"] == "patient" and got["num_units"] == 3
    assert 0 <= got["low"] <= got["value"] <= got["high"] <= 1
    assert metrics.classification_metrics(LOGITS, LABELS)["accuracy"] == 0.5


def test_patient_prediction_is_the_argmax_of_the_mean_probability_not_a_vote():
    # patient P, three malignant images: two lean benign (0.55), one is surely malignant (0.99); Q one benign image
    logits = np.log(np.array([[0.55, 0.45], [0.55, 0.45], [0.01, 0.99], [0.9, 0.1]]))
    got = patient_level_results(logits, np.array([1, 1, 1, 0]), ["P"] * 3 + ["Q"], resamples=10, per_patient=True,
                                class_names=["benign", "malignant"])
    assert got["patients"][0]["prediction"] == "malignant"  # mean 0.63 malignant; a majority vote says benign
    assert got["patients"][0]["share_correct"] == pytest.approx(1 / 3)
    assert got["metrics"]["accuracy"] == 1.0


def test_patient_level_metrics_are_the_evaluate_module_over_patients():
    got = patient_level_results(LOGITS, LABELS, GROUPS, resamples=300, per_patient=True)
    # mean probabilities: A benign (0.70), B malignant (0.90), C benign (0.35 malignant) -> 2 of 3 patients right
    expected = metrics.classification_metrics(np.eye(2)[[0, 1, 0]], np.array([0, 1, 1]))
    assert got["metrics"] == expected and got["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert got["num_patients"] == 3 and got["num_images"] == 6 and got["split_patients"] == []
    assert got["intervals"]["accuracy"]["unit"] == "patient" and got["intervals"]["accuracy"]["num_units"] == 3
    assert got["intervals"]["f1"]["value"] == pytest.approx(expected["f1"])
    assert got["patient_recognition_rate"]["value"] == pytest.approx(5 / 9)
    assert "mean probability" in got["aggregation"]
    json.dumps(got)


def test_a_patient_with_two_classes_is_split_into_one_case_per_class():
    labels = np.array([0, 1, 1, 0])
    grouped = aggregate_by_patient(np.zeros((4, 2)), labels, ["X", "X", "X", "Y"])
    assert grouped["split_patients"] == ["X"]
    assert grouped["patients"] == ["X|0", "X|1", "Y"] and grouped["num_images"].tolist() == [1, 2, 1]
    assert grouped["labels"].tolist() == [0, 1, 0]


def test_multilabel_patients_are_positive_where_any_image_is():
    labels = np.array([[1, 0], [0, 0], [0, 1]])
    probs = np.array([[0.8, 0.1], [0.2, 0.3], [0.5, 0.9]])
    grouped = aggregate_by_patient(probs, labels, ["p", "p", "q"], probabilities=True)
    assert grouped["labels"].tolist() == [[1, 0], [0, 1]]
    np.testing.assert_allclose(grouped["probabilities"], [[0.5, 0.2], [0.5, 0.9]])
    got = patient_level_results(np.log(probs / (1 - probs)), labels, ["p", "p", "q"], resamples=10)
    assert "patient_recognition_rate" not in got and "auroc" in got["intervals"]


def test_patient_ids_only_where_the_manifest_says_they_are_real():
    class Split:
        column_names = ["image", "label", "patient_id"]

        def __getitem__(self, key):
            return ["14-10926", "14-10926", "13-412"]

    assert patient_ids(Split(), {"has_patient_ids": True}) == ["14-10926", "14-10926", "13-412"]
    assert patient_ids(Split(), {"has_patient_ids": False}) is None


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="one patient id per test image"):
        patient_level_results(LOGITS, LABELS, GROUPS[:-1])
    with pytest.raises(ValueError, match="single-label"):
        patient_recognition_rate(LOGITS, np.eye(2)[LABELS], GROUPS)
