"""Checkpoint validation (cdtm_hf.hub.checkpoint): complete, pickle-free, remote code closed over its relative imports."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers.dynamic_module_utils import get_relative_import_files

from cdtm_hf import CDTMConfig, CDTMForImageClassification, CDTMImageProcessor
from cdtm_hf.hub.checkpoint import CheckpointError, checkpoint_files, validate_checkpoint

PACKAGE = Path(__file__).resolve().parents[1] / "cdtm_hf"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ckpt") / "model"
    model = CDTMForImageClassification(CDTMConfig(backbone="test_vit", image_size=32, num_centers=4, num_labels=2))
    model.save_pretrained(out)
    CDTMImageProcessor.from_model_config(model.config).save_pretrained(out)
    (out / "training_args.bin").write_bytes(b"pickle")  # Trainer's own: tolerated, never listed
    (out / "runs").mkdir()
    (out / "runs" / "events.out.tfevents.1").write_bytes(b"x")
    return out


@pytest.fixture
def folder(saved, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(saved, dst)
    return dst


def test_files_are_config_weights_and_exactly_the_remote_code_transformers_needs(folder):
    files = validate_checkpoint(folder)
    assert files == checkpoint_files(folder)
    config = json.loads((folder / "config.json").read_text())
    module = config["auto_map"]["AutoModelForImageClassification"].split(".")[0] + ".py"
    # what transformers itself will fetch when loading with trust_remote_code
    needed = {module, *(Path(f).name for f in get_relative_import_files(folder / module))}
    code = {f for f in files if f.endswith(".py")}
    assert needed <= code
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth")) or "/" in f]


def test_a_missing_relatively_imported_file_is_named(folder):
    modeling = folder / "modeling_cdtm.py"
    modeling.write_text("from .extra_helpers import thing\n" + modeling.read_text())
    with pytest.raises(CheckpointError, match=r"lacks the remote-code file\(s\) extra_helpers.py"):
        validate_checkpoint(folder)
    (folder / "extra_helpers.py").write_text("thing = 1\n")
    assert "extra_helpers.py" in validate_checkpoint(folder)


def test_missing_config_weights_auto_map_or_folder_is_named(folder):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "auto_map"}))
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError, match="has no auto_map"):
        validate_checkpoint(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        validate_checkpoint(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        validate_checkpoint(folder)
    with pytest.raises(CheckpointError, match="does not exist"):
        validate_checkpoint(folder / "nope")


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.pkl", "state.ckpt"])
def test_a_pickle_is_refused_by_name(folder, name):
    (folder / name).write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match=rf"{name}: refusing, no pickle is ever pushed or loaded"):
        validate_checkpoint(folder)


def test_checkpoint_and_cards_import_nothing_of_runs_or_command_lines():
    """The Hub layer describes and publishes a finished folder: it needs no run, grid or command line to do it."""
    above = {"run", "experiments", "cli", "demo"}
    for name in ("checkpoint.py", "cards.py", "card_sections.py"):
        tree = ast.parse((PACKAGE / "hub" / name).read_text())
        imported = {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 2
        }
        assert not imported & above, (name, imported & above)
