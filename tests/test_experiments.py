"""Experiment grids: end to end on a fixture, kill + resume == uninterrupted, bad grids rejected before training."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import cdtm_hf.run as recipe
from tests import helpers
from cdtm_hf.cli.grid import main
from cdtm_hf.experiments import RECIPE_FIELDS, GridError, load_grid, run_grid
from cdtm_hf.paper import load_paper_results

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "examples" / "grids").glob("*.yaml"))
CELLS = ["test_vit__lp_cdtm", "test_vit__fft", "test_vit2__lp_cdtm", "test_vit2__fft"]


def write_imagefolder(root, per_class=(6, 3, 3)):
    return helpers.write_imagefolder(root, per_class, size=36)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run several times faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("grid_data") / "images")


def tiny_grid(data, output_dir, **changes):
    """A 2x2 grid (backbone x recipe) with 2 seeds on the fixture; tiny ViTs, one epoch, deterministic."""
    grid = {
        "name": "tiny",
        "base": {
            "dataset": "imagefolder", "data_dir": str(data), "cache_dir": str(Path(data).parent / "hf_cache"),
            "backbone_pretrained": False, "image_size": 32, "num_centers": 3,
            "num_train_epochs": 1, "stage1_epochs": 1, "stage2_epochs": 1, "warmup_epochs": 0,
            "per_device_train_batch_size": 6, "per_device_eval_batch_size": 8, "learning_rate": "1e-2",
            "use_cpu": True, "report_to": "none", "full_determinism": True, "disable_tqdm": True,
            "feature_cache": False, "logging_steps": 1,
        },
        "axes": {"backbone": ["test_vit", "test_vit2"], "recipe": ["lp_cdtm", "fft"]},
        "seeds": [0, 1],
        "output_dir": str(output_dir),
    }
    grid.update(changes)
    return grid


def write_grid(path, grid):
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


class Spy:
    """Wraps run_finetuning: records (cell, seed, resume) of every call; `before` may raise to simulate a kill."""

    def __init__(self, real=None, before=None):
        self.real, self.before, self.calls = real, before, []

    def __call__(self, model_args, data_args, training_args, run_args=None):
        run_dir = Path(training_args.output_dir)
        self.calls.append((run_dir.parent.name, int(run_dir.name[4:]), bool(training_args.resume_from_checkpoint)))
        if self.before:
            self.before(self, run_dir)
        if self.real is None:
            raise AssertionError("run_finetuning must not be called")
        return self.real(model_args, data_args, training_args, run_args)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data):
    """The uninterrupted run that the other tests compare with."""
    out = tmp_path_factory.mktemp("grid_full")
    spy = Spy(recipe.run_finetuning)
    mp = pytest.MonkeyPatch()
    mp.setattr(recipe, "run_finetuning", spy)
    try:
        result = run_grid(write_grid(out / "tiny.yaml", tiny_grid(data, out / "runs")), progress=False)
    finally:
        mp.undo()
    return result, spy, out / "runs"


def test_grid_runs_every_cell_and_seed_and_writes_the_table(full_run):
    result, spy, out = full_run
    assert [(c, s) for c, s, _ in spy.calls] == [(c, s) for c in CELLS for s in (0, 1)]
    assert not any(resume for _, _, resume in spy.calls) and result.complete and not result.failed

    runs = pd.read_csv(out / "results.csv")
    assert len(runs) == 8 and list(runs["cell_id"].unique()) == CELLS
    assert runs.groupby("cell_id")["seed"].apply(sorted).tolist() == [[0, 1]] * 4
    assert set(runs["method"]) == {"lp_cdtm_random_init", "fft_random_init"}  # backbone_pretrained: false
    assert set(runs["finetune_mode"]) == {"lp", "fft"}
    assert runs[["accuracy", "precision", "recall", "f1"]].apply(lambda c: c.between(0, 1)).all().all()
    for _, row in runs.iterrows():  # each run in its own folder, with its own results
        report = json.loads((out / row["run_dir"] / "test_results.json").read_text())
        assert math.isclose(report["metrics"]["f1"], row["f1"]) and report["seed"] == row["seed"]

    lines = (out / "results.md").read_text().splitlines()
    header = "| backbone | Pre-train | recipe | Seeds | Pre (%) | Rec (%) | Acc (%) | F1 Eq. 12 (%) | Macro-F1 (%) |"
    assert header in lines
    main_table = lines[:next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))]
    rows = [line for line in main_table if line.startswith("| test_vit")]
    assert len(rows) == 4
    for cell, line in zip(CELLS, rows):
        parts = [p.strip() for p in line.strip("|").split("|")]
        assert f"{parts[0]}__{parts[2]}" == cell and parts[1] == "–" and parts[3] == "2/2"
        sub = runs[runs["cell_id"] == cell]
        for value, metric in zip(parts[4:], ("precision", "recall", "accuracy", "f1_eq12", "f1")):
            mean, std = (float(v) for v in value.split(" ± "))  # mean ± std over the two seeds
            assert mean == pytest.approx(100 * sub[metric].mean(), abs=0.006)
            assert std == pytest.approx(100 * sub[metric].std(ddof=1), abs=0.006)
    assert json.loads((out / "test_vit2__fft" / "cell.json").read_text())["fields"]["backbone"] == "test_vit2"


def test_killed_grid_resumes_only_the_remaining_runs_and_gives_the_same_table(tmp_path, data, full_run, monkeypatch):
    _, _, full_out = full_run
    out = tmp_path / "runs"
    path = write_grid(tmp_path / "tiny.yaml", tiny_grid(data, out))

    def kill_in_second_cell(spy, run_dir):
        if len(spy.calls) == 3:  # first cell done (2 seeds); train the next run, die before its results
            def killed(*args, **kwargs):
                raise KeyboardInterrupt("killed")

            monkeypatch.setattr(recipe, "write_results", killed)

    first = Spy(recipe.run_finetuning, before=kill_in_second_cell)
    monkeypatch.setattr(recipe, "run_finetuning", first)
    with pytest.raises(KeyboardInterrupt):
        run_grid(path, progress=False)
    monkeypatch.undo()
    assert [(c, s) for c, s, _ in first.calls] == [(CELLS[0], 0), (CELLS[0], 1), (CELLS[1], 0)]
    assert (out / CELLS[0] / "seed1" / "test_results.json").exists()
    assert not (out / CELLS[1] / "seed0" / "test_results.json").exists()
    assert list((out / CELLS[1] / "seed0").glob("checkpoint-*")), "the killed run left no checkpoint"
    assert len(pd.read_csv(out / "results.csv")) == 2  # the table is written even when killed

    second = Spy(recipe.run_finetuning)
    monkeypatch.setattr(recipe, "run_finetuning", second)
    result = run_grid(path, progress=False)
    expected = [(CELLS[1], 0, True), (CELLS[1], 1, False)] + [(c, s, False) for c in CELLS[2:] for s in (0, 1)]
    assert second.calls == expected  # the first cell is skipped; the killed run resumes from its checkpoint
    assert result.resumed == [(CELLS[1], 0)] and len(result.skipped) == 2 and result.complete
    for name in ("results.csv", "results.md"):
        assert (out / name).read_text() == (full_out / name).read_text(), name


BAD_GRIDS = {
    "base.learning_rat": lambda g: g["base"].update(learning_rat=1e-3),
    "axes.backbon": lambda g: g["axes"].update(backbon=["test_vit"]),
    "axes.backbone[1]": lambda g: g["axes"].update(backbone=["test_vit", "vitb16.laoin2b"]),
    "axes.head_type[0]": lambda g: g["axes"].update(head_type=["attention"]),
    "axes.recipe[1]": lambda g: g["axes"].update(recipe=["lp_cdtm", "sft_cdmt"]),
    "axes.recipe": lambda g: g["axes"].update(recipe=[]),
    "axes: the grid is empty": lambda g: g.update(axes={}),
    "seedz": lambda g: g.update(seedz=[0]),
}


@pytest.mark.parametrize("key", list(BAD_GRIDS))
def test_bad_grid_is_rejected_before_any_training(key, tmp_path, data, monkeypatch, capsys):
    grid = tiny_grid(data, tmp_path / "runs")
    BAD_GRIDS[key](grid)
    path = write_grid(tmp_path / "bad.yaml", grid)
    spy = Spy()
    monkeypatch.setattr(recipe, "run_finetuning", spy)
    with pytest.raises(ValueError) as err:
        run_grid(path, progress=False)
    assert isinstance(err.value, GridError) and f"  - {key}" in str(err.value) and "nothing was run" in str(err.value)
    assert main([str(path)]) == 2 and f"  - {key}" in capsys.readouterr().err  # the command line says the same
    assert not spy.calls and not (tmp_path / "runs").exists()


def test_one_error_lists_every_problem_and_suggests_the_fix(tmp_path):
    grid = {"base": {"learning_rat": 1e-3, "num_centers": 2.5, "output_dir": "x", "backbone": "vitb16.laoin2b"},
            "axes": {"recipe": ["lp_cdmt"]}}
    with pytest.raises(GridError) as err:
        load_grid(grid)
    message = str(err.value)
    assert "6 problems" in message
    assert "base.data_dir: dataset imagefolder needs data_dir" in message
    assert "base.learning_rat: unknown key" in message and "did you mean 'learning_rate'" in message
    assert "base.num_centers: num_centers expects int, got 2.5" in message
    assert "base.output_dir: may not be set" in message
    assert "base.backbone: unknown backbone 'vitb16.laoin2b'" in message and "'vitb16.laion2b'" in message
    assert "axes.recipe[0]: unknown recipe 'lp_cdmt' (did you mean 'lp_cdtm'?)" in message


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_grids_are_valid(path):
    grid = load_grid(path, check_paths=False)
    assert grid.cells and grid.seeds == [0, 1, 2]
    if grid.paper_table is None:  # a question no paper has answered yet (pathology_fms): no paper column
        assert path.stem == "pathology_fms"
        return
    table = load_paper_results()["tables"][grid.paper_table]
    assert table["source"]
    if path.stem == "transfer_study":
        assert {c.value("dataset") for c in grid.cells} == {"cbis_ddsm", "isic2019", "aptos2019", "chexpert"}
        assert {c.recipe for c in grid.cells} == {"lp", "fft"} and not table["rows"]


def test_a_recipes_entry_with_a_built_in_name_extends_it(tmp_path):
    """`recipes: {lp: {learning_rate: ...}}` gives LP its own lr and keeps it LP (it used to replace the recipe and
    silently drop finetune_mode, training the cell as the default mode)."""
    path = tmp_path / "g.yaml"
    write_grid(path, {"base": {"backbone": "test_vit", "data_dir": str(tmp_path)},
                      "recipes": {"lp": {"learning_rate": 1.0e-3, "num_train_epochs": 10}},
                      "axes": {"recipe": ["lp", "fft"]}})
    cells = {c.recipe: c for c in load_grid(path, check_paths=False).cells}
    assert cells["lp"].value("finetune_mode") == "lp" and cells["lp"].value("use_cdtm") is False
    assert cells["lp"].value("learning_rate") == 1.0e-3 and cells["lp"].value("num_train_epochs") == 10
    assert cells["fft"].value("finetune_mode") == "fft" and cells["fft"].value("learning_rate") != 1.0e-3


def test_recipes_are_the_documented_bundles():
    assert RECIPE_FIELDS["scratch"] == {"finetune_mode": "scratch", "use_cdtm": False, "backbone_pretrained": False}
    assert RECIPE_FIELDS["frozen"] == RECIPE_FIELDS["lp"] == {"finetune_mode": "lp", "use_cdtm": False}
    assert RECIPE_FIELDS["unfrozen"] == RECIPE_FIELDS["fft"] and RECIPE_FIELDS["sft_cdtm"]["use_cdtm"] is True


def fake_runner(model_args, data_args, training_args, run_args=None):
    """Writes a test_results.json without training: metrics depend on the cell and the seed."""
    out = Path(training_args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    x = (len(model_args.backbone) % 7) / 100 + training_args.seed / 1000
    metrics = {"accuracy": 0.8 + x, "precision": 0.7 + x, "recall": 0.6 + x, "f1": 0.65 + x, "f1_eq12": 0.62 + x,
               "loss": 0.5}
    (out / "test_results.json").write_text(json.dumps({"metrics": metrics, "seed": training_args.seed}))
    return {"metrics": metrics}


def test_table8_grid_max_cells_and_paper_columns(tmp_path, monkeypatch):
    grid = load_grid(REPO / "examples" / "grids" / "cdtm_table8.yaml", output_dir=tmp_path,
                     overrides={"data_dir": None})
    spy = Spy(fake_runner)
    monkeypatch.setattr(recipe, "run_finetuning", spy)
    first = run_grid(grid, max_cells=3, progress=False)
    assert first.stopped_early and len(first.ran) == 9 and not first.complete
    assert "| 0/3 |" in (tmp_path / "results.md").read_text()  # unfinished cells are listed, empty
    second = run_grid(grid, progress=False)
    assert len(second.ran) == 21 and len(second.skipped) == 9 and second.complete
    assert {c for c, _, _ in spy.calls[9:]} == {c.cell_id for c in grid.cells[3:]}

    md = (tmp_path / "results.md").read_text()
    assert "Table VIII" in md
    assert "| backbone | Pre-train | recipe | Seeds | Pre (%) | Pre paper | Rec (%) | Rec paper |" in md
    row = next(line for line in md.splitlines() if line.startswith("| vitb16.laion2b | LAION-2B | sft_cdtm |"))
    cells = [p.strip() for p in row.strip("|").split("|")]
    assert cells[3] == "3/3" and cells[5] == "–" and cells[9] == "94.24" and cells[11] == "91.91"
    assert cells[8] == "80.10 ± 0.10"  # ours: mean ± sample std of 80.0, 80.1, 80.2
    assert cells[10] == "62.10 ± 0.10" and cells[12] == "65.10 ± 0.10"  # beside the paper's F1: Eq. 12, not macro
    scratch = next(line for line in md.splitlines() if line.startswith("| convnextb.laion2b | LAION-2B | scratch |"))
    assert "65.47" in scratch and "33.26" in scratch
    assert len(pd.read_csv(tmp_path / "results.csv")) == 30


def test_changed_cell_settings_are_refused_and_failures_can_be_skipped(tmp_path, monkeypatch, data):
    monkeypatch.setattr(recipe, "run_finetuning", fake_runner)
    run_grid(load_grid(tiny_grid(data, tmp_path)), max_cells=1, progress=False)
    changed = tiny_grid(data, tmp_path)
    changed["base"]["learning_rate"] = 0.5
    with pytest.raises(GridError, match=r"cell test_vit__lp_cdtm: .*learning_rate: 0\.01 -> 0\.5"):
        run_grid(load_grid(changed), progress=False)

    def flaky(model_args, data_args, training_args, run_args=None):
        if "test_vit2__fft" in training_args.output_dir:
            raise RuntimeError("out of memory")
        return fake_runner(model_args, data_args, training_args)

    monkeypatch.setattr(recipe, "run_finetuning", flaky)
    result = run_grid(load_grid(tiny_grid(data, tmp_path)), keep_going=True, progress=False)
    assert [(c, s) for c, s, _ in result.failed] == [("test_vit2__fft", 0), ("test_vit2__fft", 1)]
    assert "out of memory" in (tmp_path / "test_vit2__fft" / "seed0" / "error.txt").read_text()
    assert "| test_vit2 | – | fft | 0/2 |" in (tmp_path / "results.md").read_text()
