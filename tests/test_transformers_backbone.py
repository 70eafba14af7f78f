"""`--backbone_library transformers` end to end (issue 20): a tiny transformers ViT trains both SFT stages through
examples/run_sft.py, saves, and reloads with identical logits through `from_pretrained`, remote code (cdtm_hf not
importable) and `pipeline()`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from cdtm_hf import CDTMForImageClassification, CDTMImageProcessor
from tests.helpers import run_without_cdtm_hf, write_imagefolder
from tests.test_run_sft import STAGES, run_sft

TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
            "image_size": 32, "patch_size": 8}
ARGV = ["--backbone", "vit", "--backbone_library", "transformers", "--backbone_kwargs", json.dumps(TINY_VIT),
        "--no_backbone_pretrained", "--image_size", "32", "--num_centers", "3", "--report_to", "none",
        "--disable_tqdm", "True"]


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_backbone")
    data = write_imagefolder(root / "data")
    out = root / "out"
    report = run_sft.main([*ARGV, *STAGES, "--data_dir", str(data), "--output_dir", str(out)])
    return root, out, report


def test_both_stages_train_a_transformers_backbone(hf_run):
    _, out, report = hf_run
    stages = report["training"]["stages"]
    assert [(s["stage"], s["backbone"], s["method"]) for s in stages] == [(1, "frozen", "frozen"), (2, "trained", "full")]
    config = json.loads((out / "config.json").read_text())
    assert config["backbone_library"] == "transformers" and config["backbone_kwargs"]["hidden_size"] == 32
    assert (config["num_tokens"], config["hidden_size"], config["num_prefix_tokens"]) == (16, 32, 1)


def test_reloads_with_identical_logits_everywhere(hf_run):
    root, out, _ = hf_run
    model = CDTMForImageClassification.from_pretrained(out).eval()
    assert type(model.backbone.model).__name__ == "ViTModel"
    image = Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype("uint8"))
    image.save(root / "probe.png")
    x = CDTMImageProcessor.from_pretrained(out)(image)["pixel_values"]
    torch.save(x, root / "x.pt")
    with torch.no_grad():
        logits = model(pixel_values=x).logits
    local = {r["label"]: r["score"] for r in pipeline("image-classification", model=str(out))(image, top_k=2)}
    expected = {model.config.id2label[i]: float(p) for i, p in enumerate(logits.softmax(-1)[0])}
    assert local == pytest.approx(expected, abs=1e-6)

    script = f"""
import json, torch
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline
model = AutoModelForImageClassification.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    torch.save(model(pixel_values=torch.load({str(root / 'x.pt')!r}, weights_only=True)).logits, {str(root / 'remote.pt')!r})
classify = pipeline("image-classification", model={str(out)!r}, trust_remote_code=True)
print("SCORES", json.dumps({{r["label"]: r["score"] for r in classify(Image.open({str(root / 'probe.png')!r}), top_k=2)}}))
"""
    result = run_without_cdtm_hf(script, root, HF_MODULES_CACHE=str(root / "modules"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.equal(torch.load(root / "remote.pt", weights_only=True), logits)
    remote = json.loads(result.stdout.split("SCORES ", 1)[1])
    assert remote == pytest.approx(expected, abs=1e-6)
