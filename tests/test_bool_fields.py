"""YAML booleans and every boolean spelling for the fields that mean on, off or auto (issue 18, item 8).

`backbone_norm_eval` is auto, True or False. A grid file's `backbone_norm_eval: true` (a YAML boolean) and
`run_sft.py --backbone_norm_eval true` were refused: only the exact string "True" passed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cdtm_hf.cli.grid import main as grid_main
from cdtm_hf.cli.train import parse
from cdtm_hf.experiments import load_grid

TINY = ["--backbone", "test_vit", "--backbone_library", "timm", "--output_dir", "unused", "--data_dir", "unused"]


def write_grid(path: Path, value: str) -> Path:
    path.write_text(f"""
name: norm_eval
base:
  dataset: imagefolder
  data_dir: {path.parent}
  backbone: test_vit
  backbone_pretrained: false
  backbone_norm_eval: {value}
axes:
  recipe: [sft_cdtm]
seeds: [0]
output_dir: {path.parent / "runs"}
""")
    return path


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False), ("yes", True), ("off", False),
                                                 ("auto", "auto"), ("'True'", True), ("'no'", False)])
def test_grid_yaml_takes_booleans_for_backbone_norm_eval(tmp_path, capsys, value, expected):
    path = write_grid(tmp_path / "grid.yaml", value)
    assert grid_main([str(path), "--dry_run"]) == 0, capsys.readouterr().err
    grid = load_grid(str(path))
    training_args = grid.arguments(grid.cells[0], seed=0)[2]
    assert training_args.backbone_norm_eval == expected and type(training_args.backbone_norm_eval) is type(expected)


def test_grid_refuses_a_value_that_is_no_choice(tmp_path, capsys):
    assert grid_main([str(write_grid(tmp_path / "grid.yaml", "maybe")), "--dry_run"]) == 2
    assert "backbone_norm_eval" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("False", False), ("1", True), ("auto", "auto")])
def test_command_line_takes_every_boolean_spelling(value, expected):
    training_args = parse([*TINY, "--backbone_norm_eval", value])[2]
    assert training_args.backbone_norm_eval is expected if isinstance(expected, bool) else \
        training_args.backbone_norm_eval == expected
