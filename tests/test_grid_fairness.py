"""Issue 19, item 9, for grids: each recipe its own lr and epochs, a small lr sweep per recipe chosen on validation,
one feature cache shared by every run of a grid, and a flag on a baseline whose validation metric still rises."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cdtm_hf.cli.grid import main
from cdtm_hf.experiments import GridError, load_grid, run_grid
from tests.helpers import write_imagefolder
from tests.test_run_sft import Collect

BASE = {"dataset": "imagefolder", "backbone": "test_vit", "backbone_pretrained": False, "image_size": 32,
        "num_centers": 3, "warmup_epochs": 0, "per_device_train_batch_size": 6, "per_device_eval_batch_size": 8,
        "learning_rate": "1e-2", "num_train_epochs": 2, "use_cpu": True, "report_to": "none", "disable_tqdm": True,
        "logging_steps": 1, "lr_scheduler_type": "constant"}


def test_a_recipe_sets_its_own_lr_and_epochs_and_a_sweep_is_checked(tmp_path):
    grid = load_grid({"base": {**BASE, "data_dir": "x"}, "axes": {"recipe": ["lp", "lp_cdtm", "mine"]},
                      "recipes": {"lp": {"learning_rate": "1e-3", "num_train_epochs": 10, "lr_sweep": [1e-3, 1e-2]},
                                  "mine": {"finetune_mode": "fft", "stage1_epochs": 3}},
                      "output_dir": str(tmp_path)}, check_paths=False)
    lp, lp_cdtm, mine = grid.cells
    # a built-in recipe's name extends it: LP keeps finetune_mode lp and no CDTM, with its own lr and epochs
    assert (lp.value("finetune_mode"), lp.value("use_cdtm"), lp.value("learning_rate"),
            lp.value("num_train_epochs")) == ("lp", False, 1e-3, 10)
    assert lp.lr_sweep == [1e-3, 1e-2] and lp_cdtm.lr_sweep is None
    assert (lp_cdtm.value("learning_rate"), lp_cdtm.value("num_train_epochs")) == (1e-2, 2)
    assert mine.value("finetune_mode") == "fft" and mine.value("use_cdtm") is True  # a new recipe is all its own
    with pytest.raises(GridError) as err:
        load_grid({"base": {**BASE, "data_dir": "x"}, "axes": {"recipe": ["lp"], "learning_rate": [1e-3, 1e-2]},
                   "lr_sweep": [0, "fast"]}, check_paths=False)
    assert "lr_sweep: must be a list of learning rates" in str(err.value)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("fair")
    data = write_imagefolder(root / "data", per_class=(6, 3, 3), size=36)
    out = root / "runs"
    path = root / "fair.yaml"
    path.write_text(yaml.safe_dump({
        "name": "fair", "base": {**BASE, "data_dir": str(data), "cache_dir": str(root / "hf_cache")},
        "recipes": {"lp": {"num_train_epochs": 3, "lr_sweep": [1e-4, 3e-2]}}, "axes": {"recipe": ["lp", "lp_cdtm"]},
        "seeds": [0], "output_dir": str(out)}))
    handler, package = Collect(), logging.getLogger("cdtm_hf")
    package.addHandler(handler)
    level, _ = package.level, package.setLevel(logging.INFO)
    try:
        result = run_grid(path, progress=False)
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
    return result, out, handler.messages


def test_a_grid_shares_one_feature_cache_and_reuses_it(swept):
    result, out, messages = swept
    assert result.complete and not result.failed
    built = [m for m in messages if "Caching frozen backbone features" in m or "Feature cache:" in m]
    reused = [m for m in messages if "Reusing feature cache" in m]
    assert (out / "feature_cache").is_dir() and not list(out.glob("*/seed0/**/feature_cache"))
    # three runs (two lr of LP, LP+CDTM), one backbone: built once (train, validation), reused by the two others
    assert len(reused) == 4, (built, reused)
    assert len(list((out / "feature_cache").glob("*.features.npy"))) == 2  # train and validation, once


def test_the_sweep_keeps_the_best_lr_on_validation_and_reports_every_score(swept):
    result, out, messages = swept
    run = out / "lp" / "seed0"
    record = json.loads((run / "lr_sweep.json").read_text())
    scores = {}
    for lr in ("0.0001", "0.03"):  # each candidate's validation score is its kept checkpoint's, as logged
        folder = run / "lr_sweep" / f"lr{float(lr):g}"
        states = sorted(folder.glob("checkpoint-*/trainer_state.json"))
        if not states:  # the chosen candidate moved into the run folder
            states = sorted(run.glob("checkpoint-*/trainer_state.json"))
        scores[f"{float(lr):g}"] = json.loads(states[-1].read_text())["best_metric"]
    assert record["scores"] == pytest.approx(scores)
    best = max(scores, key=lambda k: (scores[k], -float(k)))
    assert record["chosen"] == float(best) and record["metric"] == "f1"
    report = json.loads((run / "test_results.json").read_text())
    assert report["lr_sweep"] == record and (run / "model.safetensors").is_file()
    assert not (run / "lr_sweep" / f"lr{float(best):g}" / "test_results.json").exists()
    csv = pd.read_csv(out / "results.csv")
    assert csv.set_index("cell_id").loc["lp", "lr_chosen"] == float(best)
    md = (out / "results.md").read_text()
    assert f"lp seed 0: learning rate {float(best):g} chosen on validation f1 (tried 0.0001: " in md
    assert any(f"lr {float(best):g} chosen on validation" in m for m in messages)  # the printed summary


def _fake_run(run: Path, f1s: list[float]) -> None:
    """A finished LP run folder: its test results and its last checkpoint's Trainer log (validation F1 per epoch)."""
    (run / "checkpoint-30").mkdir(parents=True)
    history = [{"epoch": float(i + 1), "step": 10 * (i + 1), "eval_f1": f, "eval_loss": 1 - f}
               for i, f in enumerate(f1s)]
    (run / "checkpoint-30" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    training = {"metric_for_best_model": "f1", "selected_stage": 1,
                "stages": [{"stage": 1, "best_metric": max(f1s)}]}
    (run / "test_results.json").write_text(json.dumps({"metrics": {"accuracy": 0.5, "f1": 0.5, "precision": 0.5,
                                                                   "recall": 0.5}, "training": training}))


def test_a_baseline_still_rising_at_its_last_epoch_is_flagged(tmp_path, capsys):
    out = tmp_path / "runs"
    _fake_run(out / "lp" / "seed0", [0.3, 0.4, 0.52])  # still rising: under-trained
    _fake_run(out / "lp_cdtm" / "seed0", [0.9, 0.97, 0.95])  # peaked before the end
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "base": {**BASE, "data_dir": str(tmp_path),
                                                                 "backbone_pretrained": True},
                                    "axes": {"recipe": ["lp", "lp_cdtm"]}, "seeds": [0], "output_dir": str(out)}))
    assert main([str(path), "--table_only"]) == 0
    printed = capsys.readouterr().out
    assert "lp: LP may be under-trained: val f1 still rising at the last epoch (seed(s) 0)" in printed
    md = (out / "results.md").read_text()
    assert "**lp: LP may be under-trained**: val f1 still rising at the last epoch (seed(s) 0)" in md
    assert "lp_cdtm: LP+CDTM may be under-trained" not in md
    csv = pd.read_csv(out / "results.csv").set_index("cell_id")
    assert bool(csv.loc["lp", "val_still_rising"]) and not bool(csv.loc["lp_cdtm", "val_still_rising"])
