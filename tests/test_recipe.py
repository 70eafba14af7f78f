"""The recipe's pieces: pre-flight checks, the stratified train subset, the output folder guard, the split record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cdtm_hf.recipe import (
    DataArguments,
    ModelArguments,
    build_model,
    load_data,
    split_record,
    stratified_subset,
)
from cdtm_hf.run_args import clear_output_dir, resolve_model_args, resolve_resume
from tests.helpers import write_imagefolder


def test_max_train_samples_keeps_every_class_stratified_and_seeded(tmp_path):
    data = write_imagefolder(tmp_path / "data")  # train: 6 benign then 6 malignant
    ds, names, column = load_data(DataArguments(data_dir=str(data), max_train_samples=4))
    labels = ds["train"][column]
    assert len(labels) == 4 and sorted(set(labels)) == [0, 1] and labels.count(0) == 2
    again, _, _ = load_data(DataArguments(data_dir=str(data), max_train_samples=4))
    def pixels(dataset):
        return [int(np.asarray(image).sum()) for image in dataset["image"]]

    assert pixels(again["train"]) == pixels(ds["train"])
    with pytest.raises(ValueError, match=r"max_train_samples=1 cannot keep one image of each of the 2 classes "
                                         r"\(benign, malignant\); pass --max_train_samples 2"):
        load_data(DataArguments(data_dir=str(data), max_train_samples=1))


def test_stratified_subset_follows_the_class_shares():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    keep = stratified_subset(labels, len(labels), 20, seed=0)
    counts = np.bincount(labels[keep], minlength=3)
    assert counts.sum() == 20 and counts[2] == 1 and counts[0] >= 17
    assert keep == stratified_subset(labels, len(labels), 20, seed=0)
    assert keep != stratified_subset(labels, len(labels), 20, seed=1)
    assert len(stratified_subset(None, 10, 3, seed=0)) == 3  # multi-label: uniform


def test_resume_values_from_the_command_line(tmp_path):
    assert resolve_resume("False", str(tmp_path)) is None and resolve_resume(None, str(tmp_path)) is None
    with pytest.raises(ValueError, match="found no checkpoint"):
        resolve_resume("True", str(tmp_path))
    (tmp_path / "stage1" / "checkpoint-3").mkdir(parents=True)
    (tmp_path / "stage1" / "checkpoint-3" / "trainer_state.json").write_text("{}")
    assert resolve_resume("true", str(tmp_path)) is True
    assert resolve_resume(str(tmp_path / "stage1" / "checkpoint-3"), str(tmp_path)).endswith("checkpoint-3")
    (tmp_path / "stage1_best").mkdir()
    with pytest.raises(ValueError, match=r"--model_name_or_path .*stage1_best.*checkpoint-3"):
        resolve_resume(str(tmp_path / "stage1_best"), str(tmp_path))


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


def test_split_record_states_the_grouping():
    builder = split_record(DataArguments(dataset="aptos2019", split_strategy="patient"), None)
    assert builder["grouping"] == "image" and "one patient may appear" in builder["description"]
    manifest = {"split_strategy": "patient", "grouping": "patient", "counts": {}}
    record = split_record(DataArguments(dataset="breakhis"), manifest)
    assert record["grouping"] == "patient" and record["manifest"] == manifest
    json.dumps(record)
    paper = split_record(DataArguments(dataset="breakhis", split_strategy="paper"), {**manifest, "split_strategy": "paper"})
    assert paper["grouping"] == "random" and "no patient" not in paper["description"]


def test_argument_dataclasses_refuse_bad_values():
    with pytest.raises(ValueError, match="verify_images 'quick' is not one of: fast, full, none"):
        DataArguments(verify_images="quick")
    with pytest.raises(ValueError, match="validation_fraction \\+ test_fraction"):
        DataArguments(validation_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="num_centers .* must be >= 1, got 0"):
        ModelArguments(num_centers=0)
