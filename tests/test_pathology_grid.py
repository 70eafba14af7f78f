"""examples/grids/pathology_fms.yaml (issue 20) parses and every cell passes the argument checks of a run."""

from pathlib import Path

from cdtm_hf import BACKBONE_PRESETS
from cdtm_hf.core.presets import FOUNDATION_PRESETS
from cdtm_hf.experiments import load_grid

GRID = Path(__file__).resolve().parents[1] / "examples" / "grids" / "pathology_fms.yaml"


def test_pathology_grid_parses_and_checks(tmp_path):
    grid = load_grid(GRID, output_dir=tmp_path, check_paths=False)  # each cell built into its argument dataclasses
    assert len(grid.cells) == 10 * 5 * 2
    backbones = {c.value("backbone") for c in grid.cells}
    assert backbones == {"vitb16.laion2b", *(n for n, p in FOUNDATION_PRESETS.items() if p.source == "pathology")}
    assert backbones <= set(BACKBONE_PRESETS)
    by_recipe = {}
    for cell in grid.cells:
        by_recipe.setdefault(cell.cell_id.split("__")[2], set()).add(
            (cell.value("finetune_mode"), cell.value("use_cdtm"), cell.value("stage2_method") or "full"))
    assert by_recipe == {
        "frozen": {("lp", False, "full")}, "unfrozen": {("fft", False, "full")}, "lp_cdtm": {("lp", True, "full")},
        "sft_cdtm": {("sft", True, "full")}, "sft_cdtm_lora": {("sft", True, "lora")},
    }
    assert {c.value("head_type") for c in grid.cells} == {"linear", "mha"}
