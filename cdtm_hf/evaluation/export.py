"""ONNX export of a CDTM classifier: ``pixel_values`` (B, 3, H, W) -> ``logits`` (B, num_labels), B dynamic.

    cdtm-export <checkpoint_dir> <out.onnx> [--verify] [--opset 18] [--static-batch]    # cdtm_hf.cli.export

The export uses torch's ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``, which needs
``onnxscript``; the TorchScript exporter is deprecated in torch 2.14) with a ``torch.export.Dim`` batch axis. The CCA's
``einsum`` (Eq. 7) and ``bmm`` (the token mixing) export as ONNX ops with a symbolic batch. H and W are fixed at
``config.image_size``: the CCA base matrices are p x p, so p, hence the image size, is part of the model.
`verify_onnx` compares onnxruntime's logits with torch's.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from ..core.modeling_cdtm import CDTMForImageClassification

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "logits"


class LogitsOnly(nn.Module):
    """``forward(pixel_values) -> logits``: the model's keyword-only forward as the single-input graph ONNX needs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, return_dict=True).logits


def _load(model_or_dir) -> CDTMForImageClassification:
    if isinstance(model_or_dir, (str, Path)):
        return CDTMForImageClassification.from_pretrained(model_or_dir)
    return model_or_dir


def export_onnx(model_or_dir, output_path: str | Path, opset: int = 18, dynamic_batch: bool = True) -> Path:
    """Export a model (or a ``save_pretrained`` directory) to ``output_path``; returns the path.

    The graph's input is ``pixel_values`` (B, 3, image_size, image_size) and its output ``logits``; with
    ``dynamic_batch`` B is a symbolic ``batch`` axis, otherwise it is fixed at 1.
    """
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:  # torch's dynamo exporter builds the graph with onnxscript and writes it with onnx
        raise ImportError(f"export_onnx needs {' and '.join(missing)}: pip install 'cdtm_hf[onnx]'")
    model = _load(model_or_dir)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    param = next(model.parameters())
    size = model.config.image_size
    # Trace with B = 2 so that no op specialises on a batch of 1.
    example = torch.zeros(2 if dynamic_batch else 1, 3, size, size, device=param.device, dtype=param.dtype)
    shapes = {"pixel_values": {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
    was_training = model.training
    model.eval()
    try:
        program = torch.onnx.export(
            LogitsOnly(model).eval(),
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=shapes,
            optimize=True,
            verbose=False,
        )
        program.save(str(output_path))
    finally:
        model.train(was_training)
    return output_path


def verify_onnx(model_or_dir, onnx_path: str | Path, pixel_values: torch.Tensor, atol: float = 1e-4) -> float:
    """Run ``pixel_values`` through onnxruntime (CPU) and the torch model; return the max abs logit difference.

    Raises:
        AssertionError: the difference exceeds ``atol``.
    """
    try:
        import onnxruntime as ort
    except ImportError as err:  # pragma: no cover - exercised only where onnxruntime is absent
        raise ImportError("verify_onnx needs onnxruntime: pip install 'cdtm_hf[onnx]'") from err
    model = _load(model_or_dir)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(pixel_values=pixel_values.to(param.device), return_dict=True).logits.float().cpu()
    finally:
        model.train(was_training)
    inputs = {INPUT_NAME: pixel_values.detach().to(param.dtype).cpu().numpy()}
    (got,) = session.run([OUTPUT_NAME], inputs)
    diff = float((torch.from_numpy(got).float() - expected).abs().max())
    if not diff <= atol:
        raise AssertionError(f"ONNX logits differ from torch by {diff:.3g} > atol={atol:g} ({onnx_path})")
    return diff


__all__ = ["LogitsOnly", "export_onnx", "verify_onnx"]


