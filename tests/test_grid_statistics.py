"""Issue 19 in grids: each recipe against a named baseline on the same test images (paired-bootstrap differences),
each run's interval, the per-class table and the forest plots, printed by `cdtm-grid` and written to results.md."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cdtm_hf.cli.grid import main
from cdtm_hf.evaluation.run_statistics import load_predictions
from cdtm_hf.evaluation.uncertainty import format_difference, paired_bootstrap
from cdtm_hf.experiments.grid import load_grid
from cdtm_hf.experiments.spec import GridError
from tests import helpers


def grid_file(tmp_path, data, **changes):
    grid = {
        "name": "paired",
        "base": {
            "dataset": "imagefolder", "data_dir": str(data), "cache_dir": str(tmp_path / "hf_cache"),
            "backbone": "test_vit", "backbone_pretrained": False, "image_size": 32, "num_centers": 3,
            "num_train_epochs": 1, "warmup_epochs": 0, "per_device_train_batch_size": 6,
            "learning_rate": "1e-2", "use_cpu": True, "report_to": "none", "disable_tqdm": True,
            "bootstrap_resamples": 300, "logging_steps": 1,
        },
        "axes": {"recipe": ["lp_cdtm", "lp"]},
        "compare": ["lp_cdtm vs lp"],
        "seeds": [0],
        "output_dir": str(tmp_path / "runs"),
        **changes,
    }
    path = tmp_path / "paired.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def test_grid_prints_and_tables_the_paired_difference(tmp_path, capsys):
    data = helpers.write_imagefolder(tmp_path / "data", (6, 4, 4), size=36)
    assert main([str(grid_file(tmp_path, data)), "--no_progress"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "runs"
    a, b = load_predictions(out / "lp_cdtm" / "seed0"), load_predictions(out / "lp" / "seed0")
    expected = paired_bootstrap(a["logits"], b["logits"], a["labels"], resamples=300, seed=0)
    line = f"lp_cdtm vs lp: Macro-F1 {format_difference(expected['f1'])}"
    assert line in printed
    markdown = (out / "results.md").read_text()
    assert "## Paired comparisons" in markdown and format_difference(expected["f1_eq12"]) in markdown
    saved = json.loads((out / "comparisons.json").read_text())
    assert saved[0]["seeds"][0]["differences"]["f1"]["value"] == pytest.approx(expected["f1"]["value"])
    runs = pd.read_csv(out / "results.csv")
    assert {"f1_low", "f1_high", "bootstrap_unit", "ece", "nll"} <= set(runs.columns)
    assert (runs["f1_low"] <= runs["f1"]).all() and (runs["f1"] <= runs["f1_high"]).all()
    assert "## Each run with its 95 % bootstrap interval" in markdown and "## Per class" in markdown
    assert "benign recall" in markdown and "Test support (images): benign 4, malignant 4" in markdown
    for name in ("forest.png", "forest_differences.png"):
        assert Image.open(out / name).size[0] > 400

    # Both tiny runs score 100 %, so the difference above is 0 [0, 0] whichever runs were paired. Give the baseline
    # known mistakes (its saved test predictions: two malignant images called benign) and re-table: the difference
    # is then the closed form F1(lp_cdtm) - F1(lp) of those predictions, image for image, and no longer 0.
    from sklearn.metrics import f1_score

    from cdtm_hf.evaluation.run_statistics import save_predictions

    wrong = b["logits"].copy()
    malignant = np.flatnonzero(b["labels"] == 1)[:2]
    wrong[malignant] = wrong[malignant][:, ::-1]  # swap the two logits: the prediction flips to benign
    save_predictions(out / "lp" / "seed0", wrong, b["labels"])
    assert main([str(grid_file(tmp_path, data)), "--table_only"]) == 0
    difference = json.loads((out / "comparisons.json").read_text())[0]["seeds"][0]["differences"]["f1"]
    closed_form = (f1_score(a["labels"], a["logits"].argmax(-1), average="macro")
                   - f1_score(b["labels"], wrong.argmax(-1), average="macro"))
    assert closed_form > 0.2 and difference["value"] == pytest.approx(closed_form)
    assert difference["low"] <= difference["value"] <= difference["high"] and difference["high"] > difference["low"]
    assert f"lp_cdtm vs lp: Macro-F1 {format_difference(difference)}" in capsys.readouterr().out


@pytest.mark.parametrize("compare, message", [("lpp", "is no label of any axis"),
                                              (["lp_cdtm versus lp"], "must read 'A vs B'")])
def test_a_bad_compare_entry_is_named(tmp_path, compare, message):
    data = helpers.write_imagefolder(tmp_path / "data", (2, 1, 1), size=16)
    with pytest.raises(GridError, match=message):
        load_grid(grid_file(tmp_path, data, compare=compare))


def test_baseline_shorthand_compares_every_other_label_with_it(tmp_path):
    data = helpers.write_imagefolder(tmp_path / "data", (2, 1, 1), size=16)
    grid = load_grid(grid_file(tmp_path, data, compare="lp", axes={"recipe": ["lp_cdtm", "lp", "fft"]}))
    assert grid.comparisons == [("recipe", "lp_cdtm", "lp"), ("recipe", "fft", "lp")]
    assert np.all([c[2] == "lp" for c in grid.comparisons])


def test_cv_folds_as_a_grid_field_tables_the_pooled_out_of_fold_result(tmp_path):
    from cdtm_hf.experiments.runner import run_grid

    data = helpers.write_imagefolder(tmp_path / "data", (4, 2, 2), size=36)
    path = grid_file(tmp_path, data, axes={"recipe": ["lp"]}, compare=None)
    grid = yaml.safe_load(path.read_text())
    grid.pop("compare")
    grid["base"].update(cv_folds=2, num_train_epochs=2)
    path.write_text(yaml.safe_dump(grid))
    result = run_grid(load_grid(path), progress=False)
    run_dir = tmp_path / "runs" / "lp" / "seed0"
    assert (run_dir / "fold0" / "test_results.json").is_file() and (run_dir / "fold1" / "test_results.json").is_file()
    pooled = json.loads((run_dir / "test_results.json").read_text())
    assert pooled["cv"]["n_folds"] == 2 and pooled["num_test_examples"] == 16
    assert result.runs.loc[0, "f1"] == pytest.approx(pooled["metrics"]["f1"])
    assert result.runs.loc[0, "f1_low"] == pytest.approx(pooled["intervals"]["f1"]["low"])


def test_a_token_set_in_the_grid_file_is_written_nowhere(tmp_path):
    """A Hub token in a grid file (`token`, `hub_token`) reaches the run, but no file of the grid's folder holds it
    (grid.json held it before): cell.json and run_args.json record "<TOKEN>", and a second invocation does not call
    the cell changed, and the Trainer's pickle of the arguments in each `checkpoint-N/` has the token taken out."""
    secret = "hf_NotARealTokenButSecret123"
    data = helpers.write_imagefolder(tmp_path / "data", (6, 4, 4), size=36)
    path = grid_file(tmp_path, data, axes={"recipe": ["lp"]}, compare=[])
    grid = yaml.safe_load(path.read_text())
    grid["base"].update(token=secret, hub_token=secret)
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    assert main([str(path), "--no_progress"]) == 0
    out = tmp_path / "runs"
    assert list(out.rglob("checkpoint-*/training_args.bin"))  # the Trainer's pickle is there, and was searched
    holding = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not holding, holding
    assert json.loads((out / "lp" / "cell.json").read_text())["fields"]["token"] == "<TOKEN>"
    assert json.loads((out / "lp" / "seed0" / "run_args.json").read_text())["model"]["token"] == "<TOKEN>"
    assert main([str(path), "--no_progress"]) == 0  # the finished run is found, not refused as a changed cell
