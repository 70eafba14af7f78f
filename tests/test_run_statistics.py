"""Issue 19 wired into runs: `run_sft.py` writes the bootstrap intervals, calibration, patient-level scores and plots,
the card shows them, and `--calibrate` fits a temperature on validation that `pipeline()` and `cdtm-predict` apply."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.special import softmax

from cdtm_hf.evaluation.run_statistics import PLOT_FILES, load_predictions, statistics_report
from cdtm_hf.evaluation.uncertainty import bootstrap_metrics
from tests.helpers import write_imagefolder
from tests.test_run_sft import STAGES, TINY, run_sft

# trained long enough to be confident; one mislabelled validation (and test) image keeps the validation set from
# being all right, so the model is confidently wrong there and a temperature above 1 is identified
LONGER = [*STAGES, "--stage1_epochs", "4", "--learning_rate", "3e-3"]


def mislabel_one(data, split):
    (data / split / "benign" / "0.png").rename(data / split / "malignant" / "swapped.png")


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    data = write_imagefolder(root / "data", per_class=(6, 4, 4))
    mislabel_one(data, "validation")
    mislabel_one(data, "test")
    out = root / "out"
    report = run_sft.main([*TINY, *LONGER, "--data_dir", str(data), "--output_dir", str(out), "--calibrate", "True",
                           "--bootstrap_resamples", "200"])
    return data, out, report


def test_run_writes_intervals_that_the_bootstrap_reproduces(calibrated_run):
    _, out, report = calibrated_run
    saved = json.loads((out / "test_results.json").read_text())
    assert saved["bootstrap"]["unit"] == "image" and saved["bootstrap"]["resamples"] == 200
    assert "no real patient ids" in saved["bootstrap"]["reason"]
    predictions = load_predictions(out)
    again = bootstrap_metrics(predictions["logits"], predictions["labels"], resamples=200, seed=saved["seed"])
    for key in ("accuracy", "f1", "f1_eq12"):
        assert saved["intervals"][key]["value"] == pytest.approx(saved["metrics"][key])
        assert saved["intervals"][key]["low"] == pytest.approx(again[key]["low"], abs=1e-6)
        assert saved["intervals"][key]["low"] <= saved["metrics"][key] <= saved["intervals"][key]["high"]
    assert set(saved["per_class_intervals"]) == {"benign", "malignant"}
    table = (out / "test_results.md").read_text()
    assert "95 % bootstrap intervals (BCa, 200 resamples of 8 images" in table
    assert "ECE (%, 15 bins)" in table


def test_calibrate_records_the_temperature_and_reports_before_and_after(calibrated_run):
    _, out, report = calibrated_run
    fit = report["temperature_scaling"]
    assert fit["identified"], fit
    config = json.loads((out / "config.json").read_text())
    assert config["calibration_temperature"] == pytest.approx(fit["temperature"])
    assert fit["validation_nll_after"] < fit["validation_nll_before"]
    calibration = report["calibration"]
    assert calibration["temperature"] == pytest.approx(fit["temperature"])
    assert set(calibration["before"]) == set(calibration["after"]) == {"ece", "brier", "nll"}
    assert set(calibration["intervals"]) == {"before", "after"}
    card = (out / "README.md").read_text()
    assert f"T = {fit['temperature']:.3g}" in card and "calibration_temperature" in card


def test_plots_are_written_and_linked_from_the_card(calibrated_run):
    _, out, report = calibrated_run
    assert report["plots"] == {"reliability": PLOT_FILES["reliability"], "roc_pr": PLOT_FILES["roc_pr"],
                               "training": PLOT_FILES["training"]}
    card = (out / "README.md").read_text()
    for name in PLOT_FILES.values():
        assert Image.open(out / name).size[0] > 400
        assert f"]({name})" in card
    assert "Brackets: 95 % bootstrap intervals" in card
    first = report["metrics"]["accuracy"]
    low, high = report["intervals"]["accuracy"]["low"], report["intervals"]["accuracy"]["high"]
    assert f"{100 * first:.2f} % [{100 * low:.1f}, {100 * high:.1f}]" in card
    # the model-index holds the point value
    assert f"value: {first}" in card or f"value: {round(first, 4)}" in card


def test_pipeline_and_predict_apply_the_temperature(calibrated_run, tmp_path):
    from transformers import pipeline

    from cdtm_hf import CDTMForImageClassification, CDTMImageProcessor
    from cdtm_hf.cli.predict import main as predict_main
    from cdtm_hf.hub.pipeline import CDTMImageClassificationPipeline

    data, out, report = calibrated_run
    temperature = report["temperature_scaling"]["temperature"]
    model = CDTMForImageClassification.from_pretrained(out).eval()
    processor = CDTMImageProcessor.from_pretrained(out)
    image = data / "test" / "benign" / "1.png"
    with torch.no_grad():
        logits = model(**processor(Image.open(image).convert("RGB"))).logits[0].numpy()
    expected = softmax(logits / temperature)
    assert not np.allclose(expected, softmax(logits), atol=1e-4)
    classify = pipeline("image-classification", model=str(out), pipeline_class=CDTMImageClassificationPipeline)
    scores = {r["label"]: r["score"] for r in classify(str(image))}
    assert scores[model.config.id2label[0]] == pytest.approx(expected[0], abs=1e-5)
    csv_path = tmp_path / "p.csv"
    predict_main([str(out), str(image), "--output", str(csv_path)])
    row = next(csv.DictReader(csv_path.open()))
    assert float(row[f"prob_{model.config.id2label[0]}"]) == pytest.approx(expected[0], abs=1e-5)


def test_bootstrap_off_and_patient_level_scores():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    logits = rng.normal(size=(40, 2)) + 2.0 * np.eye(2)[labels]
    off = statistics_report(logits, labels, ["a", "b"], resamples=0)
    assert off["bootstrap"]["resamples"] == 0 and "intervals" not in off
    assert set(off["calibration"]["before"]) == {"ece", "brier", "nll"}
    groups = [f"p{i // 4}" for i in range(40)]
    on = statistics_report(logits, labels, ["a", "b"], groups, resamples=100)
    assert on["bootstrap"]["unit"] == "patient" and on["bootstrap"]["num_units"] == 10
    assert on["intervals"]["f1"]["unit"] == "patient"
    assert on["patient_level"]["num_patients"] == 10
    assert 0 <= on["patient_level"]["patient_recognition_rate"]["value"] <= 1


def test_cv_folds_writes_the_fold_table_and_resumes_fold_by_fold(tmp_path):
    from cdtm_hf.data.folds import assign_folds

    data = write_imagefolder(tmp_path / "data", per_class=(4, 2, 2))
    out = tmp_path / "cv"
    argv = [*TINY, "--finetune_mode", "lp", "--num_train_epochs", "3", "--warmup_epochs", "0",
            "--learning_rate", "1e-2", "--per_device_train_batch_size", "4", "--data_dir", str(data), "--output_dir", str(out),
            "--cv_folds", "3", "--bootstrap_resamples", "100"]
    report = run_sft.main(argv)
    cv = json.loads((out / "cv_results.json").read_text())
    assert cv["n_folds"] == 3 and len(cv["per_fold"]) == 3 and cv["folds"]["grouping"] == "image"
    tested = []
    for k in range(3):
        fold = json.loads((out / f"fold{k}" / "test_results.json").read_text())
        assert fold["metrics"]["f1"] == pytest.approx(cv["per_fold"][k]["f1"])
        tested.append(fold["num_test_examples"])
    assert sum(tested) == 16  # every image tested once
    assert cv["pooled_out_of_fold"]["metrics"]["accuracy"] > 0.5  # the folds' models learned the brightness
    f1s = [m["f1"] for m in cv["per_fold"]]
    assert cv["mean_std"]["f1"]["mean"] == pytest.approx(np.mean(f1s))
    assert cv["mean_std"]["f1"]["std"] == pytest.approx(np.std(f1s, ddof=1))
    pooled = load_predictions(out)
    assert len(pooled["labels"]) == 16
    again = bootstrap_metrics(pooled["logits"], pooled["labels"], resamples=100, seed=report["seed"])
    assert report["intervals"]["f1"]["low"] == pytest.approx(again["f1"]["low"])
    table = (out / "cv_results.md").read_text()
    assert "| fold 2 |" in table and "mean ± std (n=3)" in table and "pooled out-of-fold [95 %]" in table
    # the folds are the library's (seeded by split_seed): no image in two folds, every class in every fold
    assignment = assign_folds([0] * 8 + [1] * 8, None, n_folds=3, seed=42)
    assert sorted(np.bincount(assignment.folds).tolist()) == sorted(tested)
    # resumable fold by fold: a lost fold is run again, the others are kept
    import shutil

    kept = (out / "fold0" / "test_results.json").stat().st_mtime_ns
    shutil.rmtree(out / "fold1")
    (out / "cv_results.json").unlink()
    run_sft.main(argv)
    assert (out / "fold0" / "test_results.json").stat().st_mtime_ns == kept
    assert (out / "fold1" / "test_results.json").is_file() and (out / "cv_results.json").is_file()


def test_extra_test_folder_is_reported_on_its_own(tmp_path):
    data = write_imagefolder(tmp_path / "data")
    shifted = write_imagefolder(tmp_path / "shifted", per_class=(3, 1, 1))  # another "scanner": 5 images a class
    out = tmp_path / "out"
    report = run_sft.main([*TINY, *STAGES, "--data_dir", str(data), "--output_dir", str(out), "--bootstrap_resamples",
                           "100", "--extra_test", f"scanner_b={shifted}"])
    extra = report["extra_tests"]["scanner_b"]
    assert extra["num_images"] == 10 and extra["kind"] == "folder" and extra["source"] == "shifted"
    saved = load_predictions(out, extra["predictions_file"])
    again = bootstrap_metrics(saved["logits"], saved["labels"], resamples=100, seed=report["seed"])
    assert extra["metrics"]["f1"] == pytest.approx(again["f1"]["value"])
    assert extra["intervals"]["f1"]["low"] == pytest.approx(again["f1"]["low"])
    assert json.loads((out / "test_results.json").read_text())["extra_tests"]["scanner_b"]["metrics"] == \
        extra["metrics"]
    card = (out / "README.md").read_text()
    assert "### Shifted test sets" in card and "| scanner_b | folder: `shifted` | 10 |" in card


def test_a_bad_extra_test_is_refused_before_any_data_is_read(tmp_path):
    from cdtm_hf.training.run_arguments import DataArguments, FieldError

    with pytest.raises(FieldError, match="must read name=DIR or name=CONFIG"):
        DataArguments(dataset="imagefolder", data_dir=str(tmp_path), extra_test=["no_equals_sign"])
    with pytest.raises(FieldError, match="names repeat"):
        DataArguments(dataset="imagefolder", data_dir=str(tmp_path), extra_test=["a=x", "a=y"])


def test_extra_test_is_repeatable_on_the_command_line():
    """`--extra_test a=X --extra_test b=Y c=Z` keeps all three (argparse's default for a list would keep the last)."""
    from cdtm_hf.cli.train import parse

    data_args = parse(["--output_dir", "o", "--data_dir", "d", "--extra_test", "a=X", "--extra_test", "b=Y", "c=Z"])[1]
    assert data_args.extra_test == ["a=X", "b=Y", "c=Z"]
    assert parse(["--output_dir", "o", "--data_dir", "d"])[1].extra_test is None


def test_lr_sweep_keeps_the_best_learning_rate_on_validation(tmp_path):
    data = write_imagefolder(tmp_path / "data")
    out = tmp_path / "sweep"
    report = run_sft.main([*TINY, "--finetune_mode", "lp", "--num_train_epochs", "2", "--warmup_epochs", "0",
                           "--per_device_train_batch_size", "4", "--data_dir", str(data), "--output_dir", str(out),
                           "--bootstrap_resamples", "50", "--lr_sweep", "1e-6", "3e-2"])
    sweep = report["lr_sweep"]
    assert [c["learning_rate"] for c in sweep["candidates"]] == [1e-6, 3e-2]
    best = max(sweep["candidates"], key=lambda c: (c["validation_metric"], -c["validation_loss"]))
    assert sweep["kept"] == best["learning_rate"] and sweep["folder"] == best["folder"]
    for c in sweep["candidates"]:  # each candidate's validation metric is what its own run recorded
        own = json.loads((out / c["folder"] / "test_results.json").read_text())
        assert c["validation_metric"] == own["training"]["stages"][-1]["best_metric"]
    kept = json.loads((out / best["folder"] / "test_results.json").read_text())
    assert report["metrics"] == kept["metrics"] and (out / "test_predictions.npz").is_file()


def test_breakhis_run_resamples_patients_and_tests_other_magnifications_of_its_test_patients(tmp_path):
    from tests.data_fixtures import make_breakhis_tree

    tree = make_breakhis_tree(tmp_path / "bh", images_per_patient=2)
    out = tmp_path / "out"
    report = run_sft.main([*TINY, "--finetune_mode", "lp", "--num_train_epochs", "1", "--warmup_epochs", "0",
                           "--dataset", "breakhis", "--dataset_config", "malignant_200x", "--data_dir",
                           str(tree["root"]), "--cache_dir", str(tmp_path / "cache"), "--split_strategy", "patient",
                           "--output_dir", str(out), "--bootstrap_resamples", "100",
                           "--extra_test", "x40=all_magnifications:magnification=40"])
    test_patients = set(load_predictions(out)["patient_ids"].tolist())
    assert report["bootstrap"]["unit"] == "patient" and report["bootstrap"]["num_units"] == len(test_patients)
    assert "real patient ids" in report["bootstrap"]["reason"] and report["intervals"]["f1"]["unit"] == "patient"
    assert report["patient_level"]["num_patients"] == len(test_patients)
    assert "patient_recognition_rate" in report["patient_level"]
    extra = report["extra_tests"]["x40"]
    shifted = load_predictions(out, extra["predictions_file"])
    assert set(shifted["patient_ids"].tolist()) == test_patients  # the test patients' 40x images, no one else's
    assert extra["num_images"] == 2 * len(test_patients) and extra["intervals"]["f1"]["unit"] == "patient"
