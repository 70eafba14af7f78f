"""Metrics: the shipped `evaluate` module (offline, from its path), the paper's Eq. 12 F1 beside scikit-learn's
macro-F1, per-class scores, the confusion matrix and its PNG, and the Table IV markdown."""

import json
import math
import socket

import evaluate
import matplotlib
import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score
from transformers import EvalPrediction

from cdtm_hf import CDTMConfig, CDTMForImageClassification
from cdtm_hf.evaluation import metrics
from cdtm_hf.evaluation.evaluate_metrics import CLASSIFICATION_METRIC_PATH
from cdtm_hf.evaluation.evaluate_metrics.cdtm_classification import eq12_f1 as module_eq12_f1
from cdtm_hf.paper import load_paper_results
from cdtm_hf.evaluation.reporting import markdown_table

SCALAR_KEYS = {"accuracy", "precision", "recall", "f1", "f1_eq12"}


def one_hot_logits(preds, num_classes):
    logits = np.zeros((len(preds), num_classes), dtype=np.float32)
    logits[np.arange(len(preds)), preds] = 1.0
    return logits


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test, and the metric is loaded afresh inside it."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    metrics.load_classification_metric.cache_clear()
    yield
    metrics.load_classification_metric.cache_clear()


def test_eq12_reproduces_the_papers_table_iv_f1():
    # Table IV, ViT-B-CDTM-SFT: P 92.74, R 91.08 -> F1 91.91 (2PR / (P + R) of the printed, rounded P and R is 91.903)
    for eq12_f1 in (metrics.eq12_f1, module_eq12_f1):
        assert eq12_f1(0.9274, 0.9108) == pytest.approx(2 * 0.9274 * 0.9108 / (0.9274 + 0.9108))
        assert abs(100 * eq12_f1(0.9274, 0.9108) - 91.91) < 0.01
        assert eq12_f1(0.0, 0.0) == 0.0
    # every CDTM row the paper prints (Tables IV-VI) has F1 = Eq. 12 of its P and R, up to the 2-decimal rounding
    tables = load_paper_results()["tables"].values()
    rows = [r for t in tables for r in t["rows"] if {"precision", "recall", "f1"} <= set(r)]
    assert len(rows) >= 4
    for row in rows:
        assert abs(100 * metrics.eq12_f1(row["precision"] / 100, row["recall"] / 100) - row["f1"]) <= 0.01, row


def test_eq12_f1_differs_from_sklearn_macro_f1_on_imbalanced_data():
    # class 0: P 2/2, R 2/3, F1 0.8; class 1: P 1/2, R 1/1, F1 2/3 -> macro P 0.75, R 5/6
    labels, preds = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])
    got = metrics.classification_metrics(one_hot_logits(preds, 2), labels)
    assert set(got) == SCALAR_KEYS
    assert got["precision"] == pytest.approx(0.75) and got["recall"] == pytest.approx(5 / 6)
    assert got["f1"] == pytest.approx((0.8 + 2 / 3) / 2) == pytest.approx(f1_score(labels, preds, average="macro"))
    assert got["f1_eq12"] == pytest.approx(2 * 0.75 * (5 / 6) / (0.75 + 5 / 6))  # 0.7895
    assert got["f1_eq12"] - got["f1"] > 0.05
    assert got["accuracy"] == pytest.approx(0.75)


def test_single_label_report_matches_sklearn_with_a_class_never_predicted():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 60)
    preds = np.where((rng.random(60) < 0.6) & (labels < 3), labels, rng.integers(0, 3, 60))  # 3 never predicted
    names = ["a", "b", "c", "d"]
    report = metrics.evaluation_report(one_hot_logits(preds, 4), labels, names, loss=0.25)
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=range(4), zero_division=0)
    assert report["metrics"]["precision"] == pytest.approx(p.mean())
    assert report["metrics"]["recall"] == pytest.approx(r.mean())
    assert report["metrics"]["f1"] == pytest.approx(f.mean())
    assert report["metrics"]["f1_eq12"] == pytest.approx(2 * p.mean() * r.mean() / (p.mean() + r.mean()))
    assert report["metrics"]["loss"] == 0.25
    assert report["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": int(s[3])}
    assert [report["per_class"][n]["f1"] for n in names] == pytest.approx(f)
    assert report["confusion_matrix"] == confusion_matrix(labels, preds, labels=range(4)).tolist()
    assert report["labels"] == names and report["num_test_examples"] == 60
    json.dumps(report)  # plain types only


def test_a_class_missing_from_the_eval_set_still_counts_in_the_macro_average():
    labels, preds = np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])
    got = metrics.classification_metrics(one_hot_logits(preds, 3), labels)  # 3 classes, class 2 absent
    assert got["accuracy"] == 1.0 and got["precision"] == pytest.approx(2 / 3) and got["f1"] == pytest.approx(2 / 3)


def test_metric_module_loads_offline_from_its_package_path(no_network):
    assert CLASSIFICATION_METRIC_PATH.is_file()
    module = metrics.load_classification_metric()
    assert isinstance(module, evaluate.EvaluationModule) and module.name == "cdtm_classification"
    assert metrics.load_classification_metric() is module  # loaded once per process
    direct = evaluate.load(str(CLASSIFICATION_METRIC_PATH), keep_in_memory=True)
    out = direct.compute(predictions=[0, 0, 1, 1], references=[0, 0, 0, 1], num_labels=2)
    assert out["f1_eq12"] == pytest.approx(15 / 19) and out["confusion_matrix"] == [[2, 1], [0, 1]]
    assert set(metrics.load_classification_metric(True).compute(
        prediction_scores=[[0.9, 0.2], [0.1, 0.7]], references=[[1, 0], [0, 1]]
    )) >= {"auroc", "f1", "f1_eq12", "per_label_auroc"}
    with pytest.raises(ValueError, match="'default', 'multilabel'"):
        evaluate.load(str(CLASSIFICATION_METRIC_PATH), config_name="binary")


def test_trainer_hook_and_report_both_go_through_the_evaluate_module(monkeypatch):
    calls = []
    real = metrics.load_classification_metric

    def spy(multilabel=False):
        calls.append(multilabel)
        return real(multilabel)

    monkeypatch.setattr(metrics, "load_classification_metric", spy)
    logits, labels = one_hot_logits(np.array([0, 1, 1]), 2), np.array([0, 1, 0])
    hooked = metrics.compute_metrics(EvalPrediction(predictions=(logits, np.zeros(3)), label_ids=labels))
    assert set(hooked) == SCALAR_KEYS and all(type(v) is float for v in hooked.values())
    assert metrics.evaluation_report(logits, labels, ["x", "y"])["metrics"] == hooked
    assert calls == [False, False]


def test_multilabel_auroc_skips_one_valued_labels_and_reports_both_f1s():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (40, 3)).astype(np.float32)
    labels[:, 2] = 0  # no positive: AUROC undefined for this label
    logits = rng.normal(size=(40, 3)) + 2 * (labels - 0.5)
    report = metrics.evaluation_report(logits, labels, ["atelectasis", "edema", "effusion"])
    probs = 1 / (1 + np.exp(-logits))
    expected = np.mean([roc_auc_score(labels[:, j], probs[:, j]) for j in (0, 1)])
    assert report["metrics"]["auroc"] == pytest.approx(expected)
    preds = (probs >= 0.5).astype(int)
    assert report["metrics"]["f1"] == pytest.approx(f1_score(labels, preds, average="macro", zero_division=0))
    assert report["metrics"]["accuracy"] == pytest.approx((preds == labels).mean())
    p, r = report["metrics"]["precision"], report["metrics"]["recall"]
    assert report["metrics"]["f1_eq12"] == pytest.approx(2 * p * r / (p + r))
    assert report["per_class"]["effusion"]["auroc"] is None
    assert report["per_class"]["edema"]["auroc"] == pytest.approx(roc_auc_score(labels[:, 1], probs[:, 1]))
    assert "confusion_matrix" not in report
    hooked = metrics.compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    assert set(hooked) == SCALAR_KEYS | {"auroc"}


def test_bad_inputs_are_named_with_the_remedy():
    with pytest.raises(ValueError, match=r"class ids \[5\].*num_labels"):
        metrics.load_classification_metric().compute(predictions=[0, 1], references=[0, 5], num_labels=2)
    with pytest.raises(ValueError, match=r"must be 0 or 1, got \[-1.0, 0.0, 1.0\].*uncertainty_policy"):
        metrics.multilabel_metrics(np.zeros((2, 2)), np.array([[1.0, -1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="3 class names.*2 classes"):
        metrics.evaluation_report(np.zeros((2, 2)), np.array([0, 1]), ["a", "b", "c"])


def test_confusion_png_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        path = metrics.save_confusion_matrix_png(np.array([[3, 1], [0, 2]]), ["benign", "malignant"],
                                                 tmp_path / "cm.png", "title")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_results_table_iv_names_both_f1s_and_uses_the_one_renderer(tmp_path):
    labels, preds = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])
    report = metrics.evaluation_report(one_hot_logits(preds, 2), labels, ["benign", "malignant"])
    paths = metrics.write_results(report, tmp_path, "ViT-B-CDTM-SFT")
    m = report["metrics"]
    expected = markdown_table(
        ["Method", "Pre (%)", "Rec (%)", "Acc (%)", "F1 Eq. 12 (%)", "Macro-F1 (%)"],
        [["ViT-B-CDTM-SFT", "75.00", "83.33", "75.00", "78.95", "73.33"]],
    )
    assert paths["markdown"].read_text() == expected + "\n"
    assert 100 * m["f1_eq12"] == pytest.approx(78.947, abs=1e-3)
    assert json.loads(paths["json"].read_text())["metrics"]["f1_eq12"] == m["f1_eq12"]
    assert paths["png"].is_file()

    multi = {"metrics": {"auroc": 0.8, "accuracy": 0.7, "precision": 0.6, "recall": 0.5, "f1": 0.52,
                         "f1_eq12": metrics.eq12_f1(0.6, 0.5)}, "labels": ["a", "b"]}
    paths = metrics.write_results(multi, tmp_path / "ml", "LP")
    header, _, row = paths["markdown"].read_text().splitlines()
    assert header == "| Method | AUROC (%) | Pre (%) | Rec (%) | F1 Eq. 12 (%) | Macro-F1 (%) |"
    assert row == "| LP | 80.00 | 60.00 | 50.00 | 54.55 | 52.00 |" and "png" not in paths


def test_trainer_logs_f1_eq12_and_can_select_on_it(tmp_path):
    from cdtm_hf.training.arguments import CDTMTrainingArguments
    from cdtm_hf.training.trainer import CDTMTrainer

    torch.manual_seed(0)
    model = CDTMForImageClassification(CDTMConfig(backbone="test_vit", image_size=32, num_labels=2, num_centers=3))
    from datasets import Dataset

    pixels = np.random.default_rng(0).normal(size=(6, 3, 32, 32)).astype("float32")
    data = Dataset.from_dict({"pixel_values": pixels, "labels": [0, 1] * 3}).with_format("torch")
    args = CDTMTrainingArguments(output_dir=str(tmp_path), finetune_mode="lp", report_to="none", use_cpu=True,
                                 per_device_eval_batch_size=6, metric_for_best_model="f1_eq12", disable_tqdm=True)
    trainer = CDTMTrainer(model=model, args=args, eval_dataset=data, compute_metrics=metrics.compute_metrics)
    result = trainer.evaluate()
    assert {f"eval_{k}" for k in SCALAR_KEYS} <= set(result)
    p, r = result["eval_precision"], result["eval_recall"]
    assert math.isclose(result["eval_f1_eq12"], 2 * p * r / (p + r) if p + r else 0.0, rel_tol=1e-9)
