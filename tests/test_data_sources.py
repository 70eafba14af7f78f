"""Issue 18 item 2: every data source a run accepts, with the builders' checks, split manifest and card.

A Hub dataset is a local dataset repository folder (parquet files, no script) passed as `--dataset_name`, read with
HF_HUB_OFFLINE=1 as `datasets.load_dataset` reads a Hub repository; a `save_to_disk` folder; an imagefolder with
`metadata.csv` labels; `--image_column_name` / `--label_column_name`; `--max_eval_samples`; and a `DatasetDict`
given to `run_finetuning` from Python.
"""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
from PIL import Image

from cdtm_hf.cli.train import parse
from cdtm_hf.core.configuration_cdtm import FieldError
from cdtm_hf.data.errors import CorruptImageError, DatasetLayoutError
from cdtm_hf.run import load_run_data
from cdtm_hf.training.run_arguments import DataArguments
from tests.test_run_sft import TINY, run_sft

#: one linear-probe epoch: what these tests check is the data, its record and the card, not the stages
STAGES = ["--finetune_mode", "lp", "--num_train_epochs", "1", "--warmup_epochs", "0", "--per_device_train_batch_size",
          "8", "--lr_scheduler_type", "constant"]

CLASSES = ("benign", "malignant")


def _images(n: int, seed: int = 0) -> tuple[list[Image.Image], list[str]]:
    """`n` tiny images per class, the malignant ones brighter; their string labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for ci, name in enumerate(CLASSES):
        for _ in range(n):
            images.append(Image.fromarray((rng.random((24, 24, 3)) * 100 + ci * 120).astype("uint8")))
            labels.append(name)
    return images, labels


def _split(n: int, seed: int = 0) -> datasets.Dataset:
    images, labels = _images(n, seed)
    return datasets.Dataset.from_dict({"scan": images, "diagnosis": labels, "site": ["a"] * len(labels)}).cast_column(
        "scan", datasets.Image())


@pytest.fixture(scope="module")
def hub_repo(tmp_path_factory):
    """A script-free dataset repository as on the Hub: data/train-*.parquet and data/test-*.parquet, no validation."""
    repo = tmp_path_factory.mktemp("hub") / "org_skin"
    (repo / "data").mkdir(parents=True)
    _split(8).to_parquet(repo / "data" / "train-00000-of-00001.parquet")
    _split(3, seed=1).to_parquet(repo / "data" / "test-00000-of-00001.parquet")
    return repo


def _data_args(argv: list[str]) -> DataArguments:
    """The DataArguments a user's command line makes (`examples/run_sft.py` parses it this way)."""
    return parse([*argv, "--output_dir", "unused"])[1]


def test_hub_dataset_run_end_to_end(hub_repo, tmp_path):
    """`--dataset_name <repo> --image_column_name scan --label_column_name diagnosis`: a full run; its manifest
    records the source and the carved validation split, the card names the data set."""
    out = tmp_path / "out"
    run_sft.main([*TINY, *STAGES, "--dataset_name", str(hub_repo), "--image_column_name", "scan",
                  "--label_column_name", "diagnosis", "--output_dir", str(out), "--cache_dir", str(tmp_path / "c")])
    results = json.loads((out / "test_results.json").read_text())
    assert results["dataset"] == "org_skin" and results["split"]["manifest"]["class_names"] == list(CLASSES)
    manifest = json.loads((out / "split_manifest.json").read_text())
    assert manifest["source"] == {"kind": "hub", "name": "org_skin", "config": None, "image_column": "scan",
                                  "label_column": "diagnosis", "given_splits": ["train", "test"]}
    assert manifest["carved_splits"] == ["validation"] and manifest["grouping"] == "random"
    assert manifest["num_images"] == {"train": 12, "validation": 4, "test": 6}  # 2 of each class's 8 carved
    assert manifest["counts"]["test"] == {"benign": 3, "malignant": 3}
    card = (out / "README.md").read_text()
    assert "- org_skin" in card and str(hub_repo) not in card  # the data set by name, never its local path


def test_hub_dataset_config_and_max_eval_samples(tmp_path):
    """`--dataset_config_name` picks a config declared in the repository's README (as on the Hub)."""
    repo = tmp_path / "repo"
    for config, n in (("small", 4), ("large", 6)):
        (repo / config).mkdir(parents=True)
        _split(n).to_parquet(repo / config / "train.parquet")
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: small\n  data_files: small/*.parquet\n"
                                    "- config_name: large\n  data_files: large/*.parquet\n---\n")
    args = _data_args(["--dataset_name", str(repo), "--dataset_config_name", "large", "--image_column_name", "scan",
                       "--label_column_name", "diagnosis", "--max_eval_samples", "2",
                       "--cache_dir", str(tmp_path / "c")])
    ds, manifest = load_run_data(args)
    assert manifest["num_images"] == {"train": 8, "validation": 2, "test": 2}  # 12 = 8 + 2 + 2, both carved
    assert manifest["source"]["config"] == "large" and manifest["carved_splits"] == ["validation", "test"]
    assert len(ds["validation"]) == 2 and sorted(ds["validation"]["label"]) == [0, 1]  # stratified subset
    assert ds["train"].features["label"].names == list(CLASSES) and ds["train"].column_names == ["image", "label"]


def test_save_to_disk_folder_with_its_own_splits(tmp_path):
    saved = tmp_path / "saved"
    images, labels = _images(4)
    split = datasets.Dataset.from_dict({"image": images, "label": labels}).cast_column("image", datasets.Image())
    split = split.class_encode_column("label")
    datasets.DatasetDict({"train": split, "val": split, "test": split}).save_to_disk(str(saved))
    ds, manifest = load_run_data(_data_args(["--dataset_name", str(saved)]))
    assert manifest["source"]["kind"] == "disk" and manifest["carved_splits"] == []
    assert manifest["grouping"] == "folders" and manifest["source"]["given_splits"] == ["train", "validation", "test"]
    assert {s: len(ds[s]) for s in ds} == {"train": 8, "validation": 8, "test": 8}


def _metadata_imagefolder(root, corrupt: bool = False):
    images, labels = _images(5)
    root.mkdir(parents=True)
    rows = ["file_name,diagnosis"]
    for i, (image, label) in enumerate(zip(images, labels)):
        image.save(root / f"{i}.png")
        rows.append(f"{i}.png,{label}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    if corrupt:
        data = (root / "3.png").read_bytes()
        (root / "3.png").write_bytes(data[: len(data) // 2])
    return root


def test_imagefolder_with_metadata_csv_labels(tmp_path):
    folder = _metadata_imagefolder(tmp_path / "meta")
    ds, manifest = load_run_data(_data_args(["--data_dir", str(folder), "--label_column_name", "diagnosis",
                                             "--cache_dir", str(tmp_path / "c")]))
    assert manifest["source"]["kind"] == "imagefolder_metadata" and manifest["class_names"] == list(CLASSES)
    assert sum(manifest["num_images"].values()) == 10 and manifest["carved_splits"] == ["validation", "test"]
    assert "data_dir" not in json.dumps({k: v for k, v in manifest.items() if k == "source"})


def test_unreadable_image_is_named_before_anything_trains(tmp_path):
    folder = _metadata_imagefolder(tmp_path / "meta", corrupt=True)
    args = ["--data_dir", str(folder), "--label_column_name", "diagnosis", "--cache_dir", str(tmp_path / "c")]
    with pytest.raises(CorruptImageError, match=r"3\.png.*--skip_corrupt"):
        load_run_data(_data_args(args))
    ds, manifest = load_run_data(_data_args([*args, "--skip_corrupt", "True"]))
    assert manifest["num_skipped"] == 1 and manifest["skipped"][0]["path"].endswith("3.png")
    assert sum(manifest["num_images"].values()) == 9


def test_datasetdict_from_python_keeps_checks_manifest_and_card(tmp_path):
    """`run_finetuning(..., dataset=DatasetDict)`: checked, recorded and carded like a command-line source."""
    from cdtm_hf import run_finetuning

    model_args, _, training_args, _ = parse([*TINY, *STAGES, "--dataset", "datasetdict", "--output_dir",
                                             str(tmp_path / "out")])
    ds = datasets.DatasetDict({"train": _split(6), "test": _split(2, seed=3)})
    report = run_finetuning(model_args, DataArguments(dataset="datasetdict", image_column_name="scan",
                                                      label_column_name="diagnosis"), training_args, dataset=ds)
    assert report["dataset"] == "datasetdict" and report["split"]["manifest"]["carved_splits"] == ["validation"]
    out = tmp_path / "out"
    assert json.loads((out / "split_manifest.json").read_text())["source"]["kind"] == "datasetdict"
    assert (out / "README.md").is_file() and (out / "test_results.json").is_file()
    other = parse([*TINY, *STAGES, "--dataset", "datasetdict", "--output_dir", str(tmp_path / "other")])[2]
    with pytest.raises(DatasetLayoutError, match=r"no 'label' column.*--label_column_name"):  # the checks apply
        run_finetuning(model_args, None, other, dataset=ds)


@pytest.mark.parametrize("argv, field, message", [
    (["--dataset", "breakhis", "--dataset_name", "org/x"], "dataset_name", "two data sources"),
    (["--dataset_config_name", "large", "--data_dir", "d"], "dataset_config_name", "needs|pass --dataset_name"),
    (["--dataset_name", "org/x", "--dataset_config", "large"], "dataset_config", "--dataset_config_name"),
    (["--dataset_name", "./no/such/folder"], "dataset_name", "neither an existing folder"),
    (["--max_eval_samples", "0", "--data_dir", "d"], "max_eval_samples", ">= 1"),
])
def test_source_flags_are_checked_before_any_data_is_read(argv, field, message):
    with pytest.raises(FieldError, match=message) as info:
        _data_args(argv)
    assert info.value.field == field if hasattr(info.value, "field") else field in str(info.value)


def test_column_names_are_refused_for_sources_with_their_own_columns(tmp_path):
    from tests.helpers import write_imagefolder

    data = write_imagefolder(tmp_path / "data")
    with pytest.raises(DatasetLayoutError, match="leave them out"):
        load_run_data(_data_args(["--data_dir", str(data), "--label_column_name", "diagnosis"]))


def test_missing_column_names_the_columns(hub_repo):
    with pytest.raises(DatasetLayoutError, match=r"'img' is not a column.*scan, diagnosis, site"):
        load_run_data(_data_args(["--dataset_name", str(hub_repo), "--image_column_name", "img"]))


def test_unreadable_embedded_image_is_named_by_its_row():
    """Images stored in the Arrow file (bytes, no path) are verified too."""
    from cdtm_hf.data.sources import check_dataset

    images, labels = _images(4)
    split = datasets.Dataset.from_dict({"image": images, "label": labels}).cast_column("image", datasets.Image())
    rows = split.cast_column("image", datasets.Image(decode=False)).to_list()
    rows[2]["image"] = {"bytes": rows[2]["image"]["bytes"][:40], "path": None}
    broken = datasets.Dataset.from_list(rows).cast_column("image", datasets.Image(decode=False))
    with pytest.raises(CorruptImageError, match=r"train row 2 \("):
        check_dataset(broken)
    ds, manifest = check_dataset(broken, skip_corrupt=True, validation_fraction=0.2, test_fraction=0.2)
    assert manifest["skipped"] == [{"path": "row 2", "split": "train", "reason": manifest["skipped"][0]["reason"]}]
    assert sum(manifest["num_images"].values()) == 7


def test_hub_id_that_cannot_be_reached_offline_says_why(monkeypatch):
    """Offline, a Hub id that is not in the cache fails with the flag, the reason and the remedy (no network)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetLayoutError, match=r"--dataset_name 'org/not-cached-here'.*HF_HUB_OFFLINE.*save_to_disk"):
        load_run_data(_data_args(["--dataset_name", "org/not-cached-here"]))
