"""Experiment grids without training: values typed like the command line, F1 Eq. 12 beside the paper's F1, only the
main process writes, and the package stays in small modules."""

import ast
import json
from pathlib import Path

import pytest

import cdtm_hf.experiments.runner as runner_module
from cdtm_hf.cli.grid import main
from cdtm_hf.experiments import GridError, load_grid, run_grid
from cdtm_hf.cli.grid import parse_set
from cdtm_hf.experiments.tables import f1_eq12

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cdtm_hf" / "experiments"


def grid_dict(output_dir, **base):
    """A 1 x 2 grid over the fields given, no data needed (check_paths=False)."""
    return {
        "name": "typed",
        "base": {"dataset": "imagefolder", "data_dir": "unused", "backbone": "test_vit", "backbone_pretrained": False,
                 **base},
        "axes": {"recipe": ["lp_cdtm", "fft"]},
        "seeds": [0, 1],
        "output_dir": str(output_dir),
    }


def write_result(training_args, metrics):
    out = Path(training_args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "test_results.json").write_text(json.dumps({"metrics": metrics, "seed": training_args.seed}))


def test_values_are_typed_like_run_sft_command_line(tmp_path):
    grid = load_grid(grid_dict(tmp_path, backbone_pretrained="false", augment="yes", learning_rate="1e-4",
                               num_train_epochs=1,
                               per_device_train_batch_size="4", report_to="none"),
                     overrides=parse_set(["stage2_epochs=3", "max_train_samples=16", "cache_dir=null"]),
                     check_paths=False)
    fields = grid.cells[0].fields
    assert fields["backbone_pretrained"] is False and fields["augment"] is True and fields["learning_rate"] == 1e-4
    assert fields["num_train_epochs"] == 1.0 and isinstance(fields["num_train_epochs"], float)
    assert fields["per_device_train_batch_size"] == 4 and fields["stage2_epochs"] == 3.0
    assert fields["max_train_samples"] == 16 and fields["cache_dir"] is None

    model_args, data_args, training_args, run_args = grid.arguments(grid.cells[1], seed=1)
    assert model_args.backbone_pretrained is False and model_args.use_cdtm is False  # fft: no CDTM
    assert training_args.augment is True and data_args.max_train_samples == 16 and training_args.seed == 1
    assert training_args.output_dir == str(tmp_path / "fft" / "seed1")
    assert run_args.overwrite_output_dir is True  # a new run replaces what a killed run without checkpoints left
    resumed = grid.arguments(grid.cells[1], seed=1, resume=True)
    assert resumed[2].resume_from_checkpoint is True and resumed[3].overwrite_output_dir is False


def test_bad_values_name_the_place_the_type_and_the_value(tmp_path):
    grid = grid_dict(tmp_path, use_cdtm="maybe", num_centers=2.5, learning_rate=None, overwrite_output_dir=True)
    grid["axes"]["head_type"] = ["linear", "attention"]
    with pytest.raises(GridError) as err:
        load_grid(grid, check_paths=False)
    message = str(err.value)
    assert "base.use_cdtm: use_cdtm expects bool, got 'maybe'" in message
    assert "base.num_centers: num_centers expects int, got 2.5" in message
    assert "base.learning_rate: learning_rate may not be null" in message
    assert "base.overwrite_output_dir: may not be set in a grid file" in message
    assert "axes.head_type[1]: head_type 'attention' is not one of: linear, mha" in message
    with pytest.raises(GridError, match=r"--set 'num_train_epochs': expected key=value"):
        parse_set(["num_train_epochs"])


def test_dataclass_checks_run_before_training(tmp_path, capsys):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(grid_dict(tmp_path / "runs", learning_rate=-1.0, data_dir=str(tmp_path))))
    assert main([str(path), "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert "base.learning_rate: learning_rate must be > 0, got -1.0" in err  # at the place that set it
    assert not (tmp_path / "runs").exists()


def test_f1_eq12_stands_beside_the_paper_f1_and_old_results_are_derived(tmp_path):
    grid = load_grid(REPO / "examples" / "grids" / "cdtm_table8.yaml", output_dir=tmp_path,
                     overrides={"data_dir": None}, check_paths=False)

    def runner(model_args, data_args, training_args, run_args=None):
        if training_args.seed == 2:  # a result written before f1_eq12 existed: Eq. 12 from its P and R
            write_result(training_args, {"accuracy": 0.9, "precision": 0.8, "recall": 0.6, "f1": 0.5})
        else:
            write_result(training_args, {"accuracy": 0.9, "precision": 0.8, "recall": 0.6, "f1": 0.5,
                                         "f1_eq12": 0.7})

    run = run_grid(grid, only=["vitb16.laion2b__sft_cdtm"], runner=runner, progress=False)
    assert len(run.ran) == 3
    md = (tmp_path / "results.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| vitb16.laion2b | LAION-2B | sft_cdtm |"))
    cells = [p.strip() for p in row.strip("|").split("|")]
    eq12_old = 2 * 0.8 * 0.6 / (0.8 + 0.6)
    mean = 100 * (0.7 + 0.7 + eq12_old) / 3
    assert cells[10].startswith(f"{mean:.2f} ± ") and cells[11] == "91.91"  # ours (Eq. 12) | the paper's F1
    assert cells[12] == "50.00 ± 0.00"  # sklearn's macro-F1 in its own column
    assert "| F1 Eq. 12 (%) | F1 paper | Macro-F1 (%) |" in md
    assert "1 run(s) predate `f1_eq12`" in md
    assert f1_eq12({"f1": 0.4}) == (0.4, "macro_f1")


def test_only_the_main_process_writes_grid_files(tmp_path, monkeypatch):
    class Worker:
        is_main_process = False

    monkeypatch.setattr(runner_module, "PartialState", Worker)
    trained = []

    def runner(model_args, data_args, training_args, run_args=None):
        trained.append(training_args.output_dir)
        write_result(training_args, {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "f1_eq12": 1.0})

    run = run_grid(load_grid(grid_dict(tmp_path), check_paths=False), runner=runner, progress=False)
    assert len(trained) == 4 and run.paths == {}  # every process trains (one distributed Trainer run each) ...
    assert not (tmp_path / "grid.json").exists() and not (tmp_path / "results.md").exists()  # ... one writes
    assert not (tmp_path / "fft" / "cell.json").exists()


def _long_functions(tree: ast.AST) -> list[str]:
    return [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_modules_stay_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 500, f"{path.name} has {len(text.splitlines())} lines"
    assert not _long_functions(ast.parse(text)), _long_functions(ast.parse(text))
