"""Issue 19, item 9, for grids: one feature cache shared by every run of a grid (a recipe's lr sweep included), the
sweep's choice made on validation inside a grid, and the under-training flag printed by `cdtm-grid`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from cdtm_hf.cli.grid import main
from cdtm_hf.experiments import run_grid
from tests.helpers import write_imagefolder
from tests.test_run_sft import Collect

BASE = {"dataset": "imagefolder", "backbone": "test_vit", "backbone_pretrained": False, "image_size": 32,
        "num_centers": 3, "warmup_epochs": 0, "per_device_train_batch_size": 6, "per_device_eval_batch_size": 8,
        "learning_rate": "1e-2", "num_train_epochs": 2, "use_cpu": True, "report_to": "none", "disable_tqdm": True,
        "logging_steps": 1, "lr_scheduler_type": "constant", "bootstrap_resamples": 0}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A grid of LP with its own epochs and a two-rate sweep (a bundle axis entry), and LP+CDTM: three runs, one
    frozen backbone."""
    root = tmp_path_factory.mktemp("fair")
    data = write_imagefolder(root / "data", per_class=(6, 3, 3), size=36)
    out = root / "runs"
    path = root / "fair.yaml"
    path.write_text(yaml.safe_dump({
        "name": "fair", "base": {**BASE, "data_dir": str(data), "cache_dir": str(root / "hf_cache")},
        "axes": {"recipe": {"lp": {"recipe": "lp", "num_train_epochs": 3, "lr_sweep": [1e-4, 3e-2]},
                            "lp_cdtm": {"recipe": "lp_cdtm"}}},
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


def test_a_grid_cell_sweeps_its_lr_and_keeps_the_best_on_validation(swept):
    _, out, _ = swept
    run = out / "lp" / "seed0"
    sweep = json.loads((run / "test_results.json").read_text())["lr_sweep"]
    assert [c["learning_rate"] for c in sweep["candidates"]] == [1e-4, 3e-2]
    for c in sweep["candidates"]:  # each candidate's validation score is its kept checkpoint's, as the Trainer logged
        own = json.loads((run / c["folder"] / "test_results.json").read_text())["training"]
        assert own["stages"][-1]["epochs"] == pytest.approx(3)  # the recipe's own epochs, not base's 2
        states = sorted((run / c["folder"]).glob("checkpoint-*/trainer_state.json"),
                        key=lambda p: int(p.parent.name.split("-")[1]))
        assert c["validation_metric"] == pytest.approx(json.loads(states[-1].read_text())["best_metric"])
    best = max(sweep["candidates"], key=lambda c: (c["validation_metric"], -c["validation_loss"]))
    assert sweep["kept"] == best["learning_rate"]
    kept = json.loads((run / best["folder"] / "test_results.json").read_text())
    assert json.loads((run / "test_results.json").read_text())["metrics"] == kept["metrics"]


def _fake_run(run: Path, rising: bool) -> None:
    """A finished LP run folder whose stage record says whether its validation metric still rose at the end."""
    run.mkdir(parents=True)
    training = {"metric_for_best_model": "f1", "selected_stage": 1,
                "stages": [{"stage": 1, "best_metric": 0.52 if rising else 0.97, "still_improving": rising}]}
    (run / "test_results.json").write_text(json.dumps({"metrics": {"accuracy": 0.5, "f1": 0.5, "precision": 0.5,
                                                                   "recall": 0.5}, "training": training}))


def test_a_baseline_still_rising_at_its_last_epoch_is_flagged_in_the_printout(tmp_path, capsys):
    out = tmp_path / "runs"
    _fake_run(out / "lp" / "seed0", rising=True)  # under-trained
    _fake_run(out / "lp_cdtm" / "seed0", rising=False)  # peaked before the end
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "base": {**BASE, "data_dir": str(tmp_path),
                                                          "backbone_pretrained": True},
                                    "axes": {"recipe": ["lp", "lp_cdtm"]}, "seeds": [0], "output_dir": str(out)}))
    assert main([str(path), "--table_only"]) == 0
    printed = capsys.readouterr().out
    flag = "validation metric still rising at the last evaluation (not converged; give this recipe more epochs"
    lines = [line for line in printed.splitlines() if line.startswith("training flag:")]
    assert len(lines) == 1 and flag in lines[0] and lines[0].endswith(": lp seed 0")
    md = (out / "results.md").read_text()
    assert f"- **{flag}" in md and md.split(f"- **{flag}")[1].split("\n")[0].endswith("**: lp seed 0.")
