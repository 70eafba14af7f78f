"""cdtm-predict: classify a folder or a list of images with a saved model and write a CSV."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from cdtm_hf import CDTMConfig, CDTMForImageClassification
from cdtm_hf.core.image_processing_cdtm import CDTMImageProcessor
from cdtm_hf.cli.predict import main
from cdtm_hf.evaluation.predict import collect_images
from tests.helpers import write_imagefolder


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    torch.manual_seed(0)
    config = CDTMConfig(backbone="test_vit", image_size=32, num_centers=3, num_labels=2,
                        id2label={0: "benign", 1: "malignant"}, label2id={"benign": 0, "malignant": 1})
    model = CDTMForImageClassification(config).eval()
    path = tmp_path_factory.mktemp("model")
    model.save_pretrained(path)
    CDTMImageProcessor.from_model_config(config).save_pretrained(path)
    return path, model


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_a_folder_writes_one_row_per_image_with_the_models_answer(saved_model, tmp_path):
    path, model = saved_model
    data = write_imagefolder(tmp_path / "data", per_class=(2, 1, 1))
    assert main([str(path), str(data / "train"), "--output", str(tmp_path / "p.csv")]) == 0
    rows = read(tmp_path / "p.csv")
    assert [r["path"] for r in rows] == [str(p) for p in sorted((data / "train").rglob("*.png"))]
    processor = CDTMImageProcessor.from_pretrained(path)
    for row in rows:
        with torch.no_grad():
            logits = model(**processor(Image.open(row["path"]))).logits[0]
        probs = logits.softmax(-1).numpy()
        assert row["label"] == ("benign", "malignant")[int(probs.argmax())]
        assert [float(row["prob_benign"]), float(row["prob_malignant"])] == pytest.approx(probs, abs=1e-5)
        assert float(row["score"]) == pytest.approx(probs.max(), abs=1e-5) and row["error"] == ""


def test_predict_a_list_names_an_unreadable_file_and_goes_on(saved_model, tmp_path):
    path, _ = saved_model
    good = tmp_path / "a.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype("uint8")).save(good)
    bad = tmp_path / "broken.png"
    bad.write_bytes(good.read_bytes()[:60])
    deep = (np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40).astype(np.uint16)  # a 16-bit grayscale image
    Image.fromarray(deep).save(tmp_path / "deep.png")
    (tmp_path / "list.txt").write_text(f"{good}\n# a comment\n\n{bad}\n{tmp_path / 'deep.png'}\n")
    assert main([str(path), f"@{tmp_path / 'list.txt'}", "--output", str(tmp_path / "p.csv")]) == 1
    rows = read(tmp_path / "p.csv")
    assert [r["path"] for r in rows] == [str(good), str(bad), str(tmp_path / "deep.png")]
    assert rows[0]["label"] and not rows[0]["error"]
    assert rows[1]["label"] == "" and rows[1]["error"]
    assert rows[2]["label"] and not rows[2]["error"]


def test_missing_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        collect_images([tmp_path / "nope.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        collect_images([tmp_path / "empty"])


def test_predict_decodes_in_dataloader_workers_under_a_bar(saved_model, tmp_path, capsys):
    """Issue 18 item 5: `--num_workers` decodes in worker processes (the same rows as in-process), with a progress
    bar that `--disable_tqdm` hides."""
    path, _ = saved_model
    data = write_imagefolder(tmp_path / "data", per_class=(3, 1, 1))
    (data / "train" / "benign" / "broken.png").write_bytes(b"not a png")
    assert main([str(path), str(data), "--output", str(tmp_path / "w0.csv"), "--num_workers", "0",
                 "--batch_size", "3"]) == 1
    assert "Classifying images: 100%|" in capsys.readouterr().err
    assert main([str(path), str(data), "--output", str(tmp_path / "w2.csv"), "--num_workers", "2",
                 "--batch_size", "3", "--disable_tqdm"]) == 1
    assert "Classifying images" not in capsys.readouterr().err
    in_process, workers = read(tmp_path / "w0.csv"), read(tmp_path / "w2.csv")
    assert len(in_process) == 11 and [r["path"] for r in workers] == [r["path"] for r in in_process]
    for a, b in zip(in_process, workers):
        assert a["label"] == b["label"] and a["error"] == b["error"]
        assert float(a["prob_benign"] or 0) == pytest.approx(float(b["prob_benign"] or 0), abs=1e-6)
    assert [r["path"].endswith("broken.png") for r in workers if r["error"]] == [True]


def test_predict_reads_dicom_as_training_does(saved_model, tmp_path):
    """A folder of DICOM files (and a PNG beside them): each .dcm is classified from the gray image the builders
    store for it (pydicom's LUTs, `dicom_to_png_bytes`), i.e. what the model saw in training."""
    pytest.importorskip("pydicom")
    import io

    from cdtm_hf.data.dicom import dicom_to_image, dicom_to_png_bytes
    from tests.data_fixtures import write_dicom

    path, model = saved_model
    folder = tmp_path / "scans"
    for i in range(2):
        write_dicom(folder / f"case{i}" / "1-1.dcm", np.linspace(500 * i, 4000, 40 * 40).reshape(40, 40))
    Image.new("RGB", (16, 16), (200, 30, 90)).save(folder / "tile.png")
    assert main([str(path), str(folder), "--output", str(tmp_path / "p.csv")]) == 0
    rows = read(tmp_path / "p.csv")
    assert sorted(r["path"].rsplit("/", 2)[-2] + "/" + r["path"].rsplit("/", 1)[-1] for r in rows) == [
        "case0/1-1.dcm", "case1/1-1.dcm", "scans/tile.png"]
    processor = CDTMImageProcessor.from_pretrained(path)
    for row in (r for r in rows if r["path"].endswith(".dcm")):
        assert row["error"] == ""
        image = Image.open(io.BytesIO(dicom_to_png_bytes(row["path"])))  # what a builder stores for the file
        assert np.array_equal(np.asarray(dicom_to_image(row["path"])), np.asarray(image))  # what predict decodes
        with torch.no_grad():
            probs = model(**processor(image)).logits[0].softmax(-1).numpy()
        assert [float(row["prob_benign"]), float(row["prob_malignant"])] == pytest.approx(probs, abs=1e-5)


def test_dicom_without_pydicom_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    import sys

    (tmp_path / "a.dcm").write_bytes(b"DICM")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if it were not installed
    from cdtm_hf.data.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="pip install pydicom"):
        collect_images([tmp_path])
