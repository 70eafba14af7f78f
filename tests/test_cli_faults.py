"""Issue 17, driven through the command lines: each wrong answer of the issue, and the faults it lists.

Each test runs a console entry point (`main(argv)`, or a subprocess where a signal or the real console matters) and
checks the one line it prints, its exit status and what it left on disk.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.data_fixtures import make_breakhis_tree, make_tar_gz
from tests.helpers import write_imagefolder

REPO = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "test_vit", "--backbone_library", "timm", "--no_backbone_pretrained", "--image_size", "32",
        "--num_centers", "3", "--report_to", "none", "--disable_tqdm", "True"]
QUICK = ["--finetune_mode", "lp", "--num_train_epochs", "1", "--warmup_epochs", "0", "--per_device_train_batch_size",
         "4"]


def is_progress_bar(line: str) -> bool:
    return "it/s]" in line or "s/it]" in line or "%|" in line


_STDERR: list[io.StringIO] = []


def call(main, argv):
    """`main(argv)` with stderr kept in a buffer that stays open (a library's log handler may keep writing to it)."""
    buffer = io.StringIO()
    _STDERR.append(buffer)
    with contextlib.redirect_stderr(buffer):
        return main(argv)


def one_error_line(capsys=None) -> str:
    """The one stderr line of the last refused command (asserting that there is exactly one, and no traceback); a
    progress bar that ran before the refusal (loading weights) is no message and not counted."""
    err = _STDERR[-1].getvalue()
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and not is_progress_bar(line)]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(autouse=True)
def restore_logging():
    """The commands configure logging (basicConfig, transformers' verbosity) as a console process does; undo it."""
    import logging

    import transformers

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    loggers = [root, *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    for logger in loggers:  # a library's handler made while capsys held stderr would write to a closed file
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and getattr(stream, "closed", False):
                handler.setStream(sys.stderr)
    for name in ("cdtm_hf", "cdtm-train"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    transformers.utils.logging.set_verbosity_warning()


def last_error_line() -> str:
    """The last stderr line of a command refused after its log began (data loaded): the error, no traceback."""
    err = _STDERR[-1].getvalue()
    assert "Traceback" not in err, err
    line = [line for line in err.splitlines() if line.strip()][-1]
    assert line.startswith("error: "), err
    return line


def train(argv):
    from cdtm_hf.cli.train import main

    return call(main, argv)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A saved tiny CDTM classifier (classes benign, malignant) and an image folder it fits."""
    from cdtm_hf.core.configuration_cdtm import CDTMConfig
    from cdtm_hf.core.image_processing_cdtm import CDTMImageProcessor
    from cdtm_hf.core.modeling_cdtm import CDTMForImageClassification

    root = tmp_path_factory.mktemp("model")
    config = CDTMConfig(backbone="test_vit", image_size=32, num_centers=3, num_labels=2,
                        id2label={0: "benign", 1: "malignant"}, label2id={"benign": 0, "malignant": 1})
    model = CDTMForImageClassification(config)
    model.save_pretrained(root / "model")
    CDTMImageProcessor.from_model_config(model.config).save_pretrained(root / "model")
    return root / "model", write_imagefolder(root / "data", per_class=(4, 2, 2), size=32)


def without_tensor(model_dir: Path, dest: Path, key: str = "head.fc.weight") -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, dest)
    tensors = load_file(dest / "model.safetensors")
    del tensors[key]
    save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


# ---- 1. a checkpoint with a missing tensor ------------------------------------------------------------------------
def test_predict_refuses_a_checkpoint_with_a_missing_tensor(saved_model, tmp_path, capsys):
    from cdtm_hf.cli.predict import main

    model_dir, data = saved_model
    cut = without_tensor(model_dir, tmp_path / "cut")
    assert call(main, [str(cut), str(data / "test"), "--output", str(tmp_path / "p.csv"), "--device", "cpu"]) == 2
    line = one_error_line(capsys)
    assert "missing 1 tensor(s): head.fc.weight" in line and "download or save it again" in line
    assert not (tmp_path / "p.csv").exists()


def test_rescoring_refuses_a_checkpoint_with_a_missing_tensor(saved_model, tmp_path, capsys):
    model_dir, data = saved_model
    cut = without_tensor(model_dir, tmp_path / "cut", "transfer.blocks.0.attn.centers")
    code = train(["--do_train", "False", "--model_name_or_path", str(cut), "--data_dir", str(data),
                  "--output_dir", str(tmp_path / "eval"), "--report_to", "none"])
    assert code == 2
    assert "transfer.blocks.0.attn.centers" in one_error_line(capsys)
    assert not (tmp_path / "eval" / "test_results.json").exists()


def test_from_pretrained_is_strict_and_allow_missing_keys_opts_out(saved_model, tmp_path):
    from cdtm_hf.core.modeling_cdtm import CDTMForImageClassification, CheckpointKeysError

    model_dir, _ = saved_model
    cut = without_tensor(model_dir, tmp_path / "cut")
    with pytest.raises(CheckpointKeysError, match="head.fc.weight"):
        CDTMForImageClassification.from_pretrained(cut)
    model = CDTMForImageClassification.from_pretrained(cut, allow_missing_keys=True)
    assert model.head.fc.weight.shape[0] == 2
    CDTMForImageClassification.from_pretrained(model_dir)  # a complete checkpoint loads as before
    other = shutil.copytree(model_dir, tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config.update(id2label={"0": "a", "1": "b", "2": "c"}, label2id={"a": 0, "b": 1, "c": 2})
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointKeysError, match="2 tensor.s. of another shape: head.fc.bias, head.fc.weight"):
        CDTMForImageClassification.from_pretrained(other)  # not transformers' "look at the above report"
    assert CDTMForImageClassification.from_pretrained(other, ignore_mismatched_sizes=True).config.num_labels == 3


# ---- 2. files skipped for their extension; GIF accepted ---------------------------------------------------------
def test_a_gif_class_trains_and_skipped_files_are_named(tmp_path, capsys):
    data = write_imagefolder(tmp_path / "data", per_class=(4, 2, 2), size=32)
    for split in ("train", "validation", "test"):
        folder = data / split / "gifs"
        folder.mkdir()
        for i in range(4 if split == "train" else 2):
            Image.new("P", (32, 32), color=i * 40).save(folder / f"{i}.gif")
    (data / "train" / "benign" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert train([*TINY, *QUICK, "--data_dir", str(data), "--output_dir", str(out)]) == 0
    manifest = json.loads((out / "split_manifest.json").read_text())
    assert manifest["class_names"] == ["benign", "gifs", "malignant"]
    assert manifest["counts"]["train"]["gifs"] == 4
    assert manifest["num_skipped_extensions"] == 1
    assert manifest["skipped_extensions"][0]["path"] == "train/benign/notes.txt"


def test_a_class_folder_without_an_accepted_image_names_the_extensions(tmp_path, capsys):
    data = write_imagefolder(tmp_path / "data", per_class=(4, 2, 2), size=32)
    for split in ("train", "validation", "test"):
        (data / split / "phones").mkdir()
        for i in range(2):
            (data / split / "phones" / f"{i}.heic").write_bytes(b"\0" * 16)
    assert train([*TINY, "--data_dir", str(data), "--output_dir", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert "'phones'" in line and "2 .heic" in line and ".gif" in line  # what was found, what is accepted


# ---- 3. --output_dir inside --data_dir ---------------------------------------------------------------------------
def test_output_dir_inside_data_dir_is_refused_before_anything_is_written(tmp_path, capsys):
    data = write_imagefolder(tmp_path / "data", per_class=(4, 2, 2), size=32)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    assert train([*TINY, "--data_dir", str(data), "--output_dir", str(data / "train" / "out")]) == 2
    assert "inside --data_dir" in one_error_line(capsys)
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


# ---- 4. class sets named both ways ------------------------------------------------------------------------------
def test_mismatched_class_sets_are_named_both_ways_and_case_only_differences(tmp_path, capsys):
    data = write_imagefolder(tmp_path / "data", per_class=(4, 2, 2), size=32)
    (data / "test" / "malignant").rename(data / "test" / "other")
    assert train([*TINY, "--data_dir", str(data), "--output_dir", str(tmp_path / "o1")]) == 2
    line = one_error_line(capsys)
    assert "'malignant'" in line and "'other'" in line
    (data / "test" / "other").rename(data / "test" / "Malignant")
    assert train([*TINY, "--data_dir", str(data), "--output_dir", str(tmp_path / "o2")]) == 2
    line = one_error_line(capsys)
    assert "'Malignant' vs 'malignant'" in line and "case" in line


# ---- 5. a truncated archive --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_a_truncated_archive_is_named_twice_and_no_partial_extraction_is_kept(tmp_path, capsys, kind):
    from tests.data_fixtures import make_zip

    tree = make_breakhis_tree(tmp_path / "src", patients={"A": 1, "F": 1, "PT": 1, "TA": 1, "DC": 1, "LC": 1,
                                                          "MC": 1, "PC": 1}, images_per_patient=1,
                              magnifications=(200,))
    make = make_tar_gz if kind == "tar.gz" else make_zip
    archive = make(tree["root"] / "BreaKHis_v1", tmp_path / f"BreaKHis_v1.{kind}")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    cache = tmp_path / "cache"
    argv = [*TINY, "--dataset", "breakhis", "--dataset_config", "malignant_200x", "--data_dir", str(archive),
            "--cache_dir", str(cache), "--output_dir", str(tmp_path / "out")]
    for _ in range(2):  # the second try meets the same archive, not a partial extraction
        assert train(argv) == 2
        line = one_error_line(capsys)
        assert archive.name in line and "incomplete" in line and "download it again" in line
        assert f"{len(data) // 2} bytes" in line
    assert not [p for p in cache.rglob("*.partial")], "a partial extraction was left in the cache"


# ---- 6. a grid axis label that escapes the output folder ---------------------------------------------------------
def test_a_grid_label_that_leaves_the_output_dir_is_refused(tmp_path, capsys):
    from cdtm_hf.cli.grid import main

    data = write_imagefolder(tmp_path / "data", per_class=(4, 2, 2), size=32)
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "name: escape\noutput_dir: " + str(tmp_path / "grids" / "g") + "\n"
        "base: {backbone: test_vit, backbone_library: timm, backbone_pretrained: false, image_size: 32, "
        f"num_centers: 3, data_dir: {data}, finetune_mode: lp, num_train_epochs: 1}}\n"
        "axes:\n  bundle:\n    '..': {learning_rate: 0.001}\n"
    )
    assert call(main, [str(grid), "--no_progress"]) == 2
    assert "not a plain name" in one_error_line(capsys)
    assert not (tmp_path / "grids").exists()


# ---- 7. a code-running pickle ------------------------------------------------------------------------------------
class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_code_running_pickle_is_refused_without_the_weights_only_false_advice(saved_model, tmp_path, capsys):
    from cdtm_hf.cli.predict import main

    model_dir, data = saved_model
    folder = tmp_path / "evil"
    folder.mkdir()
    shutil.copy(model_dir / "config.json", folder / "config.json")
    marker = tmp_path / "code_ran"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"head.fc.weight": _RunsCode(str(marker))}))
    assert call(main, [str(folder), str(data / "test"), "--output", str(tmp_path / "p.csv"), "--device", "cpu"]) == 2
    line = one_error_line(capsys)
    assert "pytorch_model.bin is not a plain tensor file" in line and "safetensors" in line
    assert "weights_only=False" not in line and not marker.exists()


# ---- 8. pre-flight checks that came late ------------------------------------------------------------------------
def test_predict_output_naming_a_folder_fails_before_any_image_is_classified(saved_model, tmp_path, capsys,
                                                                              monkeypatch):
    import cdtm_hf.evaluation.predict
    from cdtm_hf.cli.predict import main

    model_dir, data = saved_model
    monkeypatch.setattr(cdtm_hf.evaluation.predict, "predict_images", lambda *a, **k: pytest.fail("classified"))
    assert call(main, [str(model_dir), str(data / "test"), "--output", str(tmp_path)]) == 2
    assert "is a folder" in one_error_line(capsys)


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


@pytest.fixture
def mounted(tmp_path):
    mounts = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        if not _mount_tmpfs(path, options):
            pytest.skip("needs root to mount a tmpfs")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", str(path)], capture_output=True)


def _read_only_folder(tmp_path: Path, mounted) -> Path:
    if os.geteuid() == 0:
        return mounted("readonly", "ro,size=1m")
    path = tmp_path / "readonly"
    path.mkdir()
    path.chmod(0o555)
    return path


def test_a_read_only_output_dir_is_refused_before_the_data_is_read(tmp_path, capsys, mounted, monkeypatch):
    import cdtm_hf.run

    monkeypatch.setattr(cdtm_hf.run, "load_splits", lambda *a, **k: pytest.fail("the data was read"))
    folder = _read_only_folder(tmp_path, mounted)
    data = write_imagefolder(tmp_path / "data", per_class=(4, 2, 2), size=32)
    assert train([*TINY, "--data_dir", str(data), "--output_dir", str(folder / "run")]) == 2
    assert "cannot be written" in one_error_line(capsys)


def test_a_nearly_full_disk_is_refused_before_training(tmp_path, capsys, mounted, monkeypatch):
    import cdtm_hf.training.trainer

    monkeypatch.setattr(cdtm_hf.training.trainer.CDTMTrainer, "train", lambda *a, **k: pytest.fail("trained"))
    small = mounted("small", "size=700k")
    data = write_imagefolder(tmp_path / "data", per_class=(4, 2, 2), size=32)
    assert train([*TINY, *QUICK, "--data_dir", str(data), "--output_dir", str(small / "run")]) == 2
    line = last_error_line()
    assert line.startswith(f"error: no space left in {small / 'run'}") and "MB are free" in line


def test_a_full_disk_during_a_run_names_the_folder_and_the_file(tmp_path, capsys, monkeypatch):
    import errno

    import cdtm_hf.run

    def full(*args, **kwargs):  # stage 2's checkpoint-2 is complete; checkpoint-4 fails half-way
        stage2 = tmp_path / "out" / "stage2"
        for step in (2, 4):
            (stage2 / f"checkpoint-{step}").mkdir(parents=True)
            (stage2 / f"checkpoint-{step}" / "config.json").write_text("{}")
        (stage2 / "checkpoint-2" / "trainer_state.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device", str(stage2 / "checkpoint-4" / "model.safetensors"))

    monkeypatch.setattr(cdtm_hf.run, "run_finetuning", full)
    data = write_imagefolder(tmp_path / "data", per_class=(4, 2, 2), size=32)
    assert train([*TINY, "--data_dir", str(data), "--output_dir", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: no space left in {tmp_path / 'out' / 'stage2' / 'checkpoint-4'}")
    assert "could not write model.safetensors" in line
    stage2 = tmp_path / "out" / "stage2"
    assert (stage2 / "checkpoint-2" / "trainer_state.json").is_file()  # the last good checkpoint stays
    assert not (stage2 / "checkpoint-4").exists()  # the half-written one would break --resume_from_checkpoint True


def test_hub_push_offline_with_a_token_is_one_line(saved_model, tmp_path, capsys, monkeypatch):
    from cdtm_hf.cli.hub import main

    model_dir, _ = saved_model
    folder = shutil.copytree(model_dir, tmp_path / "run")
    (folder / "README.md").write_text("card")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert call(main, ["push", str(folder), "me/cdtm-test", "--token", "hf_not_a_real_token"]) == 2
    assert "cannot push" in one_error_line(capsys)


def test_damaged_model_files_and_a_missing_folder_are_named(saved_model, tmp_path, capsys):
    from cdtm_hf.cli.predict import main

    model_dir, data = saved_model
    cut = shutil.copytree(model_dir, tmp_path / "cut")
    weights = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    assert call(main, [str(cut), str(data / "test"), "--output", str(tmp_path / "p.csv")]) == 2
    line = one_error_line(capsys)
    assert "model.safetensors is damaged" in line and "download or save it again" in line
    garbled = shutil.copytree(model_dir, tmp_path / "garbled")
    (garbled / "config.json").write_text('{"backbone": "test_vit",')
    assert call(main, [str(garbled), str(data / "test"), "--output", str(tmp_path / "p.csv")]) == 2
    assert "config.json is damaged" in one_error_line(capsys)
    assert call(main, [str(tmp_path / "no" / "such" / "model"), str(data / "test")]) == 2
    assert "no such folder" in one_error_line(capsys)
    code = train(["--model_name_or_path", "./no_such_run/", "--data_dir", str(data), "--output_dir",
                  str(tmp_path / "o"), *TINY[-4:]])
    assert code == 2 and "no such folder" in one_error_line(capsys)


# ---- faults: two runs at once, Ctrl-C ----------------------------------------------------------------------------
def test_a_second_run_into_the_same_output_dir_is_refused(tmp_path, capsys):
    from cdtm_hf.training.output_dir import LOCK_FILE

    data = write_imagefolder(tmp_path / "data", per_class=(4, 2, 2), size=32)
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(  # another process that holds the run's lock, as a running run does
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); f.write('4242'); f.flush(); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(out / LOCK_FILE)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert train([*TINY, "--data_dir", str(data), "--output_dir", str(out)]) == 2
        line = one_error_line(capsys)
        assert "another run (pid 4242) is writing into" in line
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock went with it, and the next run is not refused for it
    from cdtm_hf.training.output_dir import lock_output_dir, release_output_dir

    lock_output_dir(out)
    release_output_dir(out)
    assert not (out / LOCK_FILE).exists()


def test_a_run_called_from_python_releases_its_lock_however_it_ends(tmp_path):
    from types import SimpleNamespace

    from cdtm_hf.training.output_dir import LOCK_FILE, lock_output_dir, releases_output_dir_lock

    @releases_output_dir_lock
    def run(model_args, data_args, training_args, run_args=None):
        lock_output_dir(training_args.output_dir)  # what the pre-flight does
        raise ValueError("the run failed")

    args = SimpleNamespace(output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError):
        run(None, None, args)
    assert not (tmp_path / "out" / LOCK_FILE).exists()
    probe = subprocess.run(  # another process can take the folder now
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a+'); "
         "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(tmp_path / "out" / LOCK_FILE)])
    assert probe.returncode == 0


#: run_sft.py with one addition that changes no number: after stage 2's first checkpoint it says so and waits
PAUSED_RUN = """
import sys, time
from transformers import TrainerCallback
import cdtm_hf.training.trainer as trainer_module

class PauseAfterFirstStage2Checkpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if args.output_dir.rstrip("/").endswith("stage2"):
            print("checkpoint saved", flush=True)
            time.sleep(600)

init = trainer_module.CDTMTrainer.__init__
def patched(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.add_callback(PauseAfterFirstStage2Checkpoint())
trainer_module.CDTMTrainer.__init__ = patched

from cdtm_hf.cli.train import main
sys.exit(main(sys.argv[1:]))
"""
SFT = ["--finetune_mode", "sft", "--stage1_epochs", "1", "--stage2_epochs", "2", "--warmup_epochs", "0",
       "--per_device_train_batch_size", "4", "--lr_scheduler_type", "constant", "--learning_rate", "3e-4"]


def start_paused_run(argv, cwd):
    """A run_sft.py process stopped right after its first stage-2 checkpoint (it prints, then waits)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_RUN, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.strip() == "checkpoint saved":
            return proc
    pytest.fail(f"the run ended before stage 2 saved a checkpoint: {proc.communicate()[1][-3000:]}")


def test_ctrl_c_during_training_keeps_the_checkpoint_and_says_how_to_resume(tmp_path):
    data = write_imagefolder(tmp_path / "data", per_class=(4, 2, 2), size=32)
    out = tmp_path / "out"
    proc = start_paused_run([*TINY, *SFT, "--data_dir", str(data), "--output_dir", str(out)], tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("interrupted: stopped by Ctrl-C; the last checkpoint") and \
        "--resume_from_checkpoint True" in last
    kept = sorted(out.glob("stage2/checkpoint-*"))
    assert kept and str(kept[-1]) in last and (kept[-1] / "model.safetensors").is_file()
    assert not (out / LOCK_NAME).exists()


def test_sigkill_in_stage2_then_resume_equals_an_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    data = write_imagefolder(tmp_path / "data", per_class=(4, 2, 2), size=32)
    common = [*TINY, *SFT, "--data_dir", str(data)]
    killed = tmp_path / "killed"
    proc = start_paused_run([*common, "--output_dir", str(killed)], tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert train([*common, "--output_dir", str(killed), "--resume_from_checkpoint", "True"]) == 0
    assert train([*common, "--output_dir", str(tmp_path / "straight")]) == 0
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key


LOCK_NAME = ".cdtm_run.lock"
