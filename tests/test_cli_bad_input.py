"""Issue 17: every console entry point on a set of bad inputs gives exactly one stderr line, exit status 2, and no
traceback; `--debug` / `CDTM_DEBUG=1` give the traceback back, and a bug (an unexpected exception) keeps its own."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _entry(name: str):
    import importlib

    return importlib.import_module(f"cdtm_hf.cli.{name}").main


def _cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(entry point, argv, a word the one line must hold)."""
    (tmp / "bad.yaml").write_text("output_dir: [unclosed\n")
    (tmp / "bad.json").write_text('{"output_dir": "o", ')
    (tmp / "grid.yaml").write_text("axes: {recipe: [\n")
    damaged = tmp / "damaged"
    damaged.mkdir(exist_ok=True)
    (damaged / "config.json").write_text("{")
    out = str(tmp / "out")
    return [
        ("train", ["--backbone", "no_such_net", "--output_dir", out], "unknown backbone 'no_such_net'"),
        ("train", ["--bakbone", "test_vit", "--output_dir", out], "did you mean --backbone?"),
        ("train", ["--num_train_epochs", "many", "--output_dir", out], "invalid float value: 'many'"),
        ("train", ["--backbone", "test_vit"], "--output_dir"),
        ("train", [str(tmp / "bad.yaml")], "bad.yaml"),
        ("train", [str(tmp / "bad.json")], "bad.json"),
        ("train", [str(tmp / "missing.json")], "missing.json"),
        ("train", ["--learning_rate", "0", "--data_dir", str(tmp), "--output_dir", out], "learning_rate must be > 0"),
        ("train", ["--data_dir", str(tmp / "nope"), "--output_dir", out, "--backbone", "test_vit",
                   "--no_backbone_pretrained", "--image_size", "32", "--report_to", "none"], "does not exist"),
        ("grid", [str(tmp / "no_grid.yaml")], "does not exist"),
        ("grid", [str(tmp / "grid.yaml")], "not valid YAML"),
        ("grid", [str(tmp / "grid.yaml"), "--max_cells", "x"], "invalid int value"),
        ("predict", [str(tmp / "no_model_dir") + "/", "x.png"], "no such folder"),
        ("predict", ["m", "x.png", "--batch_size", "0"], "--batch_size must be >= 1"),
        ("predict", [str(damaged), str(tmp)], "config.json is damaged"),
        ("predict", [str(damaged), str(tmp), "--output", str(tmp)], "is a folder"),
        ("hub", ["push", str(tmp / "no_run"), "me/model"], "does not exist"),
        ("hub", ["publish"], "invalid choice: 'publish'"),
        ("hub", ["push", str(tmp / "no_run"), "me/bad..name"], "me/bad..name"),
        ("efficiency", ["--backbone", "no_such_net"], "unknown backbone 'no_such_net'"),
        ("efficiency", ["--num_labels", "four"], "invalid int value: 'four'"),
        ("export", [str(tmp / "no_model_dir") + "/", str(tmp / "m.onnx")], "no such folder"),
        ("export", [str(damaged), str(tmp / "m.onnx")], "config.json is damaged"),
    ]


def run_in_process(name: str, argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = _entry(name)(argv)
        except SystemExit as exit_:  # argparse exits itself
            code = exit_.code
    return code, err.getvalue()


def test_every_entry_point_refuses_bad_input_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CDTM_DEBUG", raising=False)
    failures = []
    for name, argv, word in _cases(tmp_path):
        code, err = run_in_process(name, argv)
        lines = [line for line in err.splitlines() if line.strip()]
        ok = code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0]
        if not ok or "Traceback" in err:
            failures.append(f"cdtm-{name} {argv}: exit {code}, stderr {err!r}")
    assert not failures, "\n".join(failures)


def test_debug_and_cdtm_debug_show_the_traceback(tmp_path, monkeypatch):
    from cdtm_hf.cli.predict import main

    missing = str(tmp_path / "no_model_dir") + "/"
    with pytest.raises(FileNotFoundError, match="no such folder"):
        main([missing, "x.png", "--debug"])
    monkeypatch.setenv("CDTM_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        main([missing, "x.png"])


def test_an_unexpected_exception_keeps_its_traceback(tmp_path, monkeypatch):
    import cdtm_hf.hub.checkpoint
    from cdtm_hf.cli.predict import main

    def bug(name):
        raise ZeroDivisionError("a bug, not bad input")

    monkeypatch.setattr(cdtm_hf.hub.checkpoint, "check_model_source", bug)
    with pytest.raises(ZeroDivisionError):
        main([str(tmp_path), "x.png"])


def test_debug_value_of_training_arguments_is_left_to_them():
    from cdtm_hf.cli.boundary import _pop_debug

    assert _pop_debug(["--debug", "underflow_overflow", "--x"]) == (["--debug", "underflow_overflow", "--x"], False)
    assert _pop_debug(["--x", "1", "--debug"]) == (["--x", "1"], True)
    assert _pop_debug(["--debug", "--x", "1"]) == (["--x", "1"], True)


def test_the_console_gives_one_line_and_exit_status_2(tmp_path):
    command = [str(REPO / "examples" / "run_sft.py"), "--backbone", "no_such_net", "--output_dir", "out"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    env.pop("CDTM_DEBUG", None)
    result = subprocess.run([sys.executable, *command], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_the_parser_records_every_option_it_has(capsys):
    """`CDTMArgumentParser.arguments` (what `add_argument` returned; argparse has no public list) holds every option
    `--help_all` prints, and nothing else: the unknown-flag hint and the bool spellings see them all."""
    import re

    from cdtm_hf.cli.train import build_parser

    parser = build_parser()
    recorded = {s for action in parser.arguments for s in action.option_strings}
    with pytest.raises(SystemExit):
        parser.parse_args(["--help_all"])
    printed = set(re.findall(r"^\s{2}(-{1,2}[\w-]+)", capsys.readouterr().out, flags=re.M))
    assert len(recorded) > 250 and {"--backbone", "--learning_rate", "--no_stage2_from_best", "--help_all", "-h"} <= recorded
    # each option's first spelling is printed (the dashed aliases and --no_ twins share its line)
    assert {action.option_strings[0] for action in parser.arguments} <= printed
    assert printed <= recorded
