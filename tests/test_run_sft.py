"""examples/run_sft.py end to end on a tiny imagefolder: what a run records, its guards, resume and evaluate-only."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path

import pytest

from tests.helpers import write_imagefolder

REPO = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "test_vit", "--backbone_library", "timm", "--no_backbone_pretrained", "--image_size", "32",
        "--num_centers", "3", "--report_to", "none", "--disable_tqdm", "True"]
STAGES = ["--stage1_epochs", "1", "--stage2_epochs", "1", "--warmup_epochs", "0", "--per_device_train_batch_size", "4",
          "--logging_steps", "1", "--lr_scheduler_type", "constant", "--learning_rate", "3e-4"]


def load_run_sft():
    spec = importlib.util.spec_from_file_location("run_sft", REPO / "examples" / "run_sft.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_sft = load_run_sft()


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """One tiny SFT run through main(argv): (data dir, output dir, report, argv, cdtm_hf log messages)."""
    import transformers

    root = tmp_path_factory.mktemp("sft")
    data = write_imagefolder(root / "data")
    out = root / "out"
    argv = [*TINY, *STAGES, "--data_dir", str(data), "--output_dir", str(out)]
    handler = Collect()
    package_logger = logging.getLogger("cdtm_hf")
    package_logger.addHandler(handler)
    try:
        report = run_sft.main(argv)
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(logging.NOTSET)
        transformers.utils.logging.set_verbosity_warning()
    return data, out, report, argv, handler.messages


def logged_learning_rates(out: Path) -> dict[int, set[float]]:
    """Per stage, the learning rates the trainer logged (each stage's trainer_state.json log_history)."""
    rates: dict[int, set[float]] = {}
    for state_file in out.glob("stage*/checkpoint-*/trainer_state.json"):
        for entry in json.loads(state_file.read_text())["log_history"]:
            if "learning_rate" in entry:
                rates.setdefault(entry["stage"], set()).add(entry["learning_rate"])
    return rates


def test_recorded_stage_hyperparameters_are_the_logged_ones(sft_run):
    _, out, report, _, _ = sft_run
    training = report["training"]
    logged = logged_learning_rates(out)
    assert set(logged) == {1, 2}
    for stage in training["stages"]:
        assert sorted(logged[stage["stage"]]) == pytest.approx([stage["learning_rate"]]), stage
    assert [s["learning_rate"] for s in training["stages"]] == pytest.approx([3e-4, 3e-5])
    assert [s["epochs"] for s in training["stages"]] == [1.0, 1.0]
    assert training["optimizer"] == json.loads((out / "training_args.json").read_text())["optim"]
    assert training["selected_stage"] in (1, 2)
    saved = json.loads((out / "test_results.json").read_text())
    assert saved["training"] == training
    assert json.loads((out / "run_args.json").read_text())["training"] == training


def test_run_records_its_split_and_what_model_was_used(sft_run):
    _, out, report, _, _ = sft_run
    assert report["split"]["grouping"] == "folders" and report["split"]["manifest"]["counts"]
    manifest = json.loads((out / "split_manifest.json").read_text())
    assert {k: v for k, v in manifest.items() if k not in ("files", "data_dir")} == report["split"]["manifest"]
    assert str(out.parent) not in json.dumps(report["split"]), "no local path in the published report"
    model = json.loads((out / "run_args.json").read_text())["model"]
    assert model["backbone"] == "test_vit" and model["image_size"] == 32


def test_run_logs_stages_prunes_optimizer_states_and_pins_no_memory_on_cpu(sft_run):
    _, out, _, _, messages = sft_run
    assert any(m.startswith("cdtm_hf.training.trainer") and "stage 1/2" in m for m in messages), messages
    checkpoints = list(out.glob("stage*/checkpoint-*"))
    assert checkpoints and not [p for c in checkpoints for p in c.glob("optimizer*")]
    assert json.loads((out / "training_args.json").read_text())["dataloader_pin_memory"] is False


def test_rerun_into_a_finished_run_is_refused_before_any_data_is_read(sft_run):
    data, out, _, argv, _ = sft_run
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(FileExistsError, match="--overwrite_output_dir"):
        run_sft.main(argv)
    assert sorted(p.name for p in out.iterdir()) == before


def test_overwrite_output_dir_clears_the_old_run_first(sft_run, tmp_path):
    from cdtm_hf.training.output_dir import clear_output_dir

    data, out, _, _, _ = sft_run
    copy = shutil.copytree(out, tmp_path / "out")
    (copy / "notes.txt").write_text("mine")
    clear_output_dir(str(copy), overwrite=True)
    assert sorted(p.name for p in copy.iterdir()) == ["feature_cache", "notes.txt"]


def test_resume_true_from_the_command_line_and_stage1_best_refused(sft_run, tmp_path):
    data, out, report, argv, _ = sft_run
    copy = shutil.copytree(out, tmp_path / "out")
    resumed_argv = [*TINY, *STAGES, "--data_dir", str(data), "--output_dir", str(copy)]
    with pytest.raises(ValueError, match=r"stage1_best.*--resume_from_checkpoint True"):
        run_sft.main([*resumed_argv, "--resume_from_checkpoint", str(copy / "stage1_best")])
    resumed = run_sft.main([*resumed_argv, "--resume_from_checkpoint", "True"])
    def what_ran(stages):  # (a resumed stage's best_checkpoint is read from the copied trainer_state.json)
        return [{k: v for k, v in s.items() if k != "best_checkpoint"} for s in stages]

    assert what_ran(resumed["training"]["stages"]) == what_ran(report["training"]["stages"])
    assert resumed["metrics"] == pytest.approx(report["metrics"])


def test_evaluate_only_rescores_a_saved_model(sft_run, tmp_path):
    data, out, report, _, _ = sft_run
    scored = run_sft.main(["--do_train", "False", "--model_name_or_path", str(out), "--data_dir", str(data),
                           "--output_dir", str(tmp_path / "eval"), "--report_to", "none"])
    assert scored["metrics"] == pytest.approx(report["metrics"])
    assert scored["training"] == report["training"] and scored["evaluated_model"] == str(out)
    assert (tmp_path / "eval" / "test_results.json").exists()
    assert not list((tmp_path / "eval").glob("*.safetensors"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--learning_rate", "0"], "learning_rate must be > 0"),
        (["--finetune_mode", "fft", "--num_train_epochs", "0"], "num_train_epochs must be > 0"),
        (["--stage2_learning_rate=-1e-5"], "stage2_learning_rate must be > 0"),
        (["--max_train_samples", "0"], "max_train_samples must be >= 1"),
        (["--test_fraction", "1.5"], "test_fraction must be between 0 and 1"),
    ],
)
def test_numbers_are_checked_before_any_data_is_read(tmp_path, extra, message):
    missing = tmp_path / "no_such_data"  # loading data first would fail on this instead
    with pytest.raises(ValueError, match=message):
        run_sft.main([*TINY, "--data_dir", str(missing), "--output_dir", str(tmp_path / "out"), *extra])
    assert not (tmp_path / "out").exists()


def test_checkpoint_with_another_image_size_is_refused(sft_run, tmp_path):
    data, out, _, _, _ = sft_run
    with pytest.raises(ValueError, match=r"--image_size 64 \(the checkpoint has 32\)"):
        run_sft.main(["--model_name_or_path", str(out), "--image_size", "64", "--data_dir", str(data),
                      "--output_dir", str(tmp_path / "o"), "--report_to", "none"])


def test_push_is_checked_before_any_data_is_read(tmp_path, monkeypatch):
    import cdtm_hf.run

    def unreachable(repo_id, token=None):
        raise ConnectionError(f"the Hub did not answer for {repo_id}")

    monkeypatch.setattr(cdtm_hf.run, "check_push_ready", unreachable)
    with pytest.raises(ConnectionError, match="me/cdtm"):
        run_sft.main([*TINY, "--data_dir", str(tmp_path / "no_such_data"), "--output_dir", str(tmp_path / "o"),
                      "--push_to_hub", "--hub_model_id", "me/cdtm"])


def test_output_dir_is_required_and_help_shows_the_paper_defaults(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_sft.main([*TINY, "--data_dir", str(tmp_path)])
    assert "--output_dir" in capsys.readouterr().err
    text = " ".join(run_sft.build_parser().format_help().split())
    for default in ("default: 0.0001", "default: 0.001", "default: 16", "default: adamw_torch_fused",
                    "default: cosine", "default: f1"):
        assert default in text, default
