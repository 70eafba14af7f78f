"""Issue 18 item 5: progress bars where work is long, cdtm_hf's logger following transformers', a short log, a
short --help."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from tests.helpers import write_imagefolder
from tests.test_run_sft import REPO, TINY, run_sft

RUN = ["--finetune_mode", "lp", "--num_train_epochs", "1", "--warmup_epochs", "0", "--per_device_train_batch_size", "8"]


def _python(code: str, cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_a_tiny_run_logs_each_line_once_and_briefly(tmp_path):
    """The run a user types, with --disable_tqdm True: datasets' INFO lines neither doubled nor shown (a local
    folder is not "downloaded"), no progress bar of cdtm_hf or datasets, and under 60 lines in all (a one-epoch LP
    run; an SFT run of two epochs logged 144 lines before, 76 now). On a CI machine (CI=true, where transformers and
    datasets propagate to the root handler) as elsewhere: there, each transformers line was printed twice (67 lines)."""
    data = write_imagefolder(tmp_path / "data")
    argv = [*TINY, *RUN, "--data_dir", str(data), "--output_dir", str(tmp_path / "out"),
            "--cache_dir", str(tmp_path / "hf_cache")]
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "run_sft.py"), *argv], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "CI": "true"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    text = "\n".join(lines)
    assert "Downloading and preparing dataset" not in text and "datasets.builder" not in text
    assert "Generating train split" not in text and "Verifying images" not in text and "Caching frozen" not in text
    assert "test: accuracy" in text and "LP: stage 1/1" in text  # the package's own stage lines stay
    repeated = [line for line, n in Counter(line.split(" - ")[-1] for line in lines).items() if n > 1
                and "datasets" in line]
    assert not repeated, repeated
    trainer_lines = [line for line in lines if "Num examples = 12" in line]
    assert len(trainer_lines) == 1, trainer_lines  # transformers' lines once, in its own format
    assert len(lines) < 60, f"{len(lines)} lines:\n{text}"


def test_verification_bar_shows_and_honours_disable_tqdm(tmp_path, capsys):
    from cdtm_hf.data.files import ImageRecord
    from cdtm_hf.data.verify import verify_records
    from cdtm_hf.logging import progress_bars

    data = write_imagefolder(tmp_path / "data", per_class=(3, 1, 1))
    records = [ImageRecord(path=str(p), relpath=p.name, label=0, group=str(p)) for p in data.rglob("*.png")]
    verify_records(records, "fast", skip_corrupt=False)
    assert "Verifying images (fast): 100%|" in capsys.readouterr().err and len(records) == 10
    with progress_bars(False):  # what a run with --disable_tqdm does
        verify_records(records, "fast", skip_corrupt=False)
    assert "Verifying" not in capsys.readouterr().err


def test_feature_cache_bar_honours_disable_tqdm(tmp_path, capsys):
    import torch

    from cdtm_hf import CDTMConfig, CDTMForImageClassification
    from cdtm_hf.training.feature_cache import build_feature_cache

    model = CDTMForImageClassification(CDTMConfig(backbone="test_vit", backbone_library="timm", image_size=32,
                                                  num_centers=3, num_labels=2))
    data = [{"pixel_values": torch.rand(3, 32, 32), "labels": torch.tensor(i % 2)} for i in range(4)]
    build_feature_cache(model, data, tmp_path / "a", batch_size=2, desc="Caching test", disable_tqdm=True)
    assert "Caching test" not in capsys.readouterr().err
    build_feature_cache(model, data, tmp_path / "b", batch_size=2, desc="Caching test", disable_tqdm=False)
    assert "Caching test: 100%|" in capsys.readouterr().err


def test_set_verbosity_info_surfaces_cdtm_hf_messages_in_a_notebook(tmp_path):
    """A notebook has no root handler: transformers.logging.set_verbosity_info() alone makes cdtm_hf's INFO lines
    (here the imagefolder's layout line) appear, once; set_verbosity_warning() hides them again."""
    write_imagefolder(tmp_path / "data", per_class=(2, 1, 1))
    proc = _python(f"""
        import sys, transformers
        import cdtm_hf
        from cdtm_hf.run import load_run_data
        from cdtm_hf.training.run_arguments import DataArguments
        args = DataArguments(data_dir={str(tmp_path / 'data')!r}, cache_dir={str(tmp_path / 'c')!r})
        load_run_data(args)
        print("--- info", file=sys.stderr)
        transformers.logging.set_verbosity_info()
        load_run_data(args)
        print("--- warning", file=sys.stderr)
        transformers.logging.set_verbosity_warning()
        load_run_data(args)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, rest = proc.stderr.split("--- info")
    during, after = rest.split("--- warning")
    assert "found layout" not in before and "found layout" not in after
    assert during.count("cdtm_hf.data.imagefolder] imagefolder") == 2  # the layout line and the split line, once


def test_help_groups_the_package_options_and_help_all_lists_everything(capsys):
    with pytest.raises(SystemExit):
        run_sft.main(["--help"])
    short = capsys.readouterr().out
    with pytest.raises(SystemExit):
        run_sft.main(["--help_all"])
    full = capsys.readouterr().out
    # 720 lines before; the package has about 130 options of its own, the inherited TrainingArguments about 120 more
    assert len(short.splitlines()) < 0.5 * len(full.splitlines()) and len(full.splitlines()) > 600
    titles = [line for line in short.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert titles[:4] == ["help:", "model (cdtm_hf ModelArguments):", "data (cdtm_hf DataArguments):",
                          "fine-tuning (cdtm_hf CDTMTrainingArguments):"]
    for option in ("--dataset_name", "--finetune_mode", "--learning_rate", "--output_dir", "--help_all"):
        assert option in short, option
    assert "--fsdp" not in short and "--fsdp" in full and "TrainingArguments" in short.split("\n\n")[-1]
