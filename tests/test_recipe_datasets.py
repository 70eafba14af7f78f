"""run_finetuning (what examples/run_sft.py runs) on the medical builders, with fixture trees."""

import json

import pytest

from cdtm_hf.run import run_finetuning
from cdtm_hf.training.run_arguments import DataArguments, ModelArguments
from cdtm_hf.training.arguments import CDTMTrainingArguments
from tests.data_fixtures import make_breakhis_tree, make_chexpert_tree

TINY = dict(backbone="test_vit", backbone_pretrained=False, image_size=32, num_centers=3)


def training_args(out, **kw):
    return CDTMTrainingArguments(
        output_dir=str(out), finetune_mode="sft", stage1_epochs=1, stage2_epochs=1, warmup_epochs=0,
        per_device_train_batch_size=8, report_to="none", use_cpu=True, disable_tqdm=True, **kw,
    )


def test_breakhis_builder_through_run_finetuning(tmp_path):
    make_breakhis_tree(tmp_path / "raw")
    data = DataArguments(dataset="breakhis", dataset_config="malignant_200x", data_dir=str(tmp_path / "raw"),
                         split_strategy="patient", cache_dir=str(tmp_path / "cache"))
    report = run_finetuning(ModelArguments(**TINY), data, training_args(tmp_path / "out"))
    assert report["labels"] == ["ductal_carcinoma", "lobular_carcinoma", "mucinous_carcinoma", "papillary_carcinoma"]
    saved = json.loads((tmp_path / "out" / "test_results.json").read_text())
    assert saved["split_strategy"] == "patient" and saved["dataset"] == "breakhis"
    assert saved["split"]["grouping"] == "patient" and "no patient" in saved["split"]["description"]
    manifest = json.loads((tmp_path / "out" / "split_manifest.json").read_text())
    assert manifest["split_strategy"] == "patient" and manifest["files"]  # the full manifest stays local
    summary = {k: v for k, v in manifest.items() if k not in ("files", "data_dir")}
    assert saved["split"]["manifest"] == summary  # the report (pushed with the model) holds no paths
    assert (tmp_path / "out" / "confusion_matrix.png").exists()
    assert not (tmp_path / "out" / "training_args.bin").exists(), "the published folder must hold no pickle"


def test_chexpert_multilabel_through_run_finetuning(tmp_path):
    make_chexpert_tree(tmp_path / "raw")
    data = DataArguments(dataset="chexpert", data_dir=str(tmp_path / "raw"), split_strategy="patient",
                         cache_dir=str(tmp_path / "cache"))
    report = run_finetuning(ModelArguments(**TINY), data,
                            training_args(tmp_path / "out", metric_for_best_model="auroc"))
    assert "auroc" in report["metrics"] and "confusion_matrix" not in report
    assert len(report["labels"]) == 5
    from cdtm_hf import CDTMForImageClassification

    model = CDTMForImageClassification.from_pretrained(tmp_path / "out")
    assert model.config.problem_type == "multi_label_classification"


def test_unknown_dataset_name_is_named(tmp_path):
    with pytest.raises(ValueError, match="mnist"):
        run_finetuning(ModelArguments(**TINY), DataArguments(dataset="mnist", data_dir=str(tmp_path)),
                       training_args(tmp_path / "out"))


def test_run_sft_explain_writes_cca_maps_for_the_test_set(tmp_path):
    from tests.helpers import write_imagefolder

    data = write_imagefolder(tmp_path / "data")
    run_finetuning(ModelArguments(**TINY), DataArguments(data_dir=str(data), explain=True),
                   training_args(tmp_path / "out"))
    explain = tmp_path / "out" / "explain"
    assert (explain / "cluster_usage.png").exists() and (explain / "summary.json").exists()
    assert list(explain.glob("image*_mixing.png"))
