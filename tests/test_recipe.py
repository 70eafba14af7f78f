"""A run's pieces: pre-flight checks, the stratified train subset, the output folder guard, the split record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cdtm_hf.core.configuration_cdtm import FieldError
from cdtm_hf.data.manifest import make_manifest, manifest_summary
from cdtm_hf.data.splits import stratified_subset
from cdtm_hf.run import load_run_data
from cdtm_hf.training.arguments import CDTMTrainingArguments
from cdtm_hf.training.model_builder import build_model
from cdtm_hf.training.output_dir import clear_output_dir
from cdtm_hf.training.run_arguments import DataArguments, ModelArguments, resolve_model_args
from cdtm_hf.training.stages import ResumePoint, resolve_resume, stage_plan
from tests.helpers import write_imagefolder


def test_max_train_samples_keeps_every_class_stratified_and_seeded(tmp_path):
    data = write_imagefolder(tmp_path / "data")  # train: 6 benign then 6 malignant
    ds, manifest = load_run_data(DataArguments(data_dir=str(data), max_train_samples=4))
    labels = ds["train"][manifest["label_column"]]
    assert len(labels) == 4 and sorted(set(labels)) == [0, 1] and labels.count(0) == 2
    again, _ = load_run_data(DataArguments(data_dir=str(data), max_train_samples=4))
    def pixels(dataset):
        return [int(np.asarray(image).sum()) for image in dataset["image"]]

    assert pixels(again["train"]) == pixels(ds["train"])
    with pytest.raises(ValueError, match=r"max_train_samples=1 cannot keep one image of each of the 2 classes "
                                         r"\(benign, malignant\); pass --max_train_samples 2"):
        load_run_data(DataArguments(data_dir=str(data), max_train_samples=1))


def test_stratified_subset_follows_the_class_shares():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    keep = stratified_subset(labels, len(labels), 20, seed=0)
    counts = np.bincount(labels[keep], minlength=3)
    assert counts.sum() == 20 and counts[2] == 1 and counts[0] >= 17
    assert keep == stratified_subset(labels, len(labels), 20, seed=0)
    assert keep != stratified_subset(labels, len(labels), 20, seed=1)
    assert len(stratified_subset(None, 10, 3, seed=0)) == 3  # multi-label: uniform


def test_resume_values_from_the_command_line(tmp_path):
    plan = stage_plan(CDTMTrainingArguments(output_dir=str(tmp_path), finetune_mode="sft", report_to="none"))
    assert resolve_resume("False", tmp_path, plan) is None and resolve_resume(None, tmp_path, plan) is None
    with pytest.raises(FileNotFoundError, match="found no checkpoint"):
        resolve_resume("True", tmp_path, plan)
    with pytest.raises(FileNotFoundError, match="no such folder"):  # one resolver, one error type for a missing one
        resolve_resume(str(tmp_path / "stage2" / "checkpoint-9"), tmp_path, plan)
    for stage, step in (("stage1", 3), ("stage2", 5)):
        (tmp_path / stage / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / stage / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert resolve_resume("true", tmp_path, plan) == ResumePoint(1, str(tmp_path / "stage2" / "checkpoint-5"))
    assert resolve_resume(str(tmp_path / "stage1" / "checkpoint-3"), tmp_path, plan).stage_index == 0
    (tmp_path / "stage1_best").mkdir()
    with pytest.raises(ValueError, match=r"--model_name_or_path .*stage1_best.*checkpoint-3"):
        resolve_resume(str(tmp_path / "stage1_best"), tmp_path, plan)


def test_an_interrupted_run_is_refused_too(tmp_path):
    (tmp_path / "stage1" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r"stage1.*--resume_from_checkpoint True"):
        clear_output_dir(str(tmp_path), overwrite=False)
    clear_output_dir(str(tmp_path / "fresh"), overwrite=False)  # a new or empty folder is fine


def test_checkpoint_architecture_is_used_and_conflicts_refused(tmp_path):
    model = build_model(ModelArguments(backbone="test_vit", backbone_pretrained=False, image_size=32, num_centers=3),
                        ["a", "b"])
    model.save_pretrained(tmp_path)
    used = resolve_model_args(ModelArguments(model_name_or_path=str(tmp_path)))
    assert (used.backbone, used.image_size, used.num_centers) == ("test_vit", 32, 3)
    with pytest.raises(ValueError, match=r"--backbone test_convnext \(the checkpoint has test_vit\)"):
        resolve_model_args(ModelArguments(model_name_or_path=str(tmp_path), backbone="test_convnext"))
    assert ModelArguments().backbone == "vitb16.laion2b" and ModelArguments().image_size == 224


def test_offline_pretrained_backbone_error_names_the_model_and_the_remedies():
    with pytest.raises(Exception, match=r"test_vit(.|\n)*--backbone_pretrained_file(.|\n)*--no_backbone_pretrained"):
        build_model(ModelArguments(backbone="test_vit", image_size=32, num_centers=3), ["a", "b"])


def test_the_manifest_words_the_split_from_its_grouping_and_the_report_keeps_no_file_list():
    common = dict(dataset="X", seed=3, class_names=["a"], label_column="label", multi_label=False,
                  num_images={"train": 1}, counts={"train": {"a": 1}}, skipped=[], files={"p.png": "train"})
    image = make_manifest(split_strategy="patient", grouping="image", has_patient_ids=False, **common)
    assert "one patient may appear" in image["description"] and "(seed 3)" in image["description"]
    paper = make_manifest(split_strategy="paper", grouping="random", has_patient_ids=True, **common)
    assert "not grouped by patient" in paper["description"] and paper["has_patient_ids"]
    summary = manifest_summary({**paper, "data_dir": "/data", "skipped": [{"path": "/data/x/1.png", "reason": "r"}]})
    assert "files" not in summary and "data_dir" not in summary and summary["skipped"][0]["path"] == "x/1.png"
    json.dumps(summary)
    with pytest.raises(ValueError, match="grouping 'leaky' is not one of"):
        make_manifest(split_strategy="patient", grouping="leaky", has_patient_ids=True, **common)


def test_argument_dataclasses_refuse_bad_values_naming_the_field():
    with pytest.raises(FieldError, match="verify_images 'quick' is not one of: fast, full, none") as err:
        DataArguments(data_dir="d", verify_images="quick")
    assert err.value.field == "verify_images"
    with pytest.raises(ValueError, match="validation_fraction \\+ test_fraction"):
        DataArguments(data_dir="d", validation_fraction=0.5, test_fraction=0.5)
    with pytest.raises(FieldError, match="dataset imagefolder needs data_dir"):
        DataArguments()
    with pytest.raises(FieldError, match=r"unknown dataset 'brekhis' \(did you mean 'breakhis'\?\)"):
        DataArguments(dataset="brekhis")
    with pytest.raises(FieldError, match="hcrf has no config 'balancd' \\(did you mean 'balanced'\\?\\)"):
        DataArguments(dataset="hcrf", dataset_config="balancd")
    with pytest.raises(FieldError, match="num_centers .* must be >= 1, got 0") as err:
        ModelArguments(num_centers=0)
    assert err.value.field == "num_centers"
    with pytest.raises(FieldError, match="unknown backbone 'vitb16.laion2'.*did you mean 'vitb16.laion2b'") as err:
        ModelArguments(backbone="vitb16.laion2")
    assert err.value.field == "backbone"
    with pytest.raises(FieldError, match="learning_rate must be > 0") as err:
        CDTMTrainingArguments(output_dir="o", learning_rate=0, report_to="none")
    assert err.value.field == "learning_rate"
