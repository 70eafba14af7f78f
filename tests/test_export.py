"""ONNX export: onnxruntime logits match torch for several batch sizes from one file; the CLI on a checkpoint."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from cdtm_hf import CDTMConfig, CDTMForImageClassification
from cdtm_hf.evaluation.export import export_onnx, verify_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def tiny_model(**overrides):
    torch.manual_seed(0)
    kwargs = dict(backbone="test_vit", image_size=64, num_labels=3, num_centers=6)
    kwargs.update(overrides)
    return CDTMForImageClassification(CDTMConfig(**kwargs)).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model()
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_graph_has_a_dynamic_batch_axis(exported):
    _, path = exported
    graph = onnx.load(path).graph
    onnx.checker.check_model(onnx.load(path))
    assert [i.name for i in graph.input] == ["pixel_values"] and [o.name for o in graph.output] == ["logits"]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 64, 64]
    assert "Einsum" in {node.op_type for node in graph.node}  # Eq. 7, m_cd = sum_i s_ri m_i


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_logits_equal_torch(exported, batch):
    model, path = exported
    x = torch.randn(batch, 3, 64, 64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"pixel_values": x.numpy()})
    with torch.no_grad():
        expected = model(pixel_values=x).logits.numpy()
    assert got.shape == (batch, 3)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert verify_onnx(model, path, x, atol=1e-4) <= 1e-4


def test_verify_raises_past_the_tolerance(exported):
    model, path = exported
    other = tiny_model()
    torch.nn.init.ones_(other.head.fc.bias)  # different logits from the exported model
    with pytest.raises(AssertionError, match="atol"):
        verify_onnx(other, path, torch.randn(1, 3, 64, 64))


def test_cli_exports_and_verifies_a_checkpoint(tmp_path):
    tiny_model(backbone="test_convnext", image_size=96, head_type="mha", mha_num_heads=4).save_pretrained(
        tmp_path / "ckpt"
    )
    out = tmp_path / "out" / "model.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "cdtm_hf.cli.export", str(tmp_path / "ckpt"), str(out), "--verify"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.exists() and "verified batch 3" in result.stdout
