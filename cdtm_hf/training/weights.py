"""Loading the weights of a saved folder (`save_pretrained`'s safetensors, one file or shards) into a live model."""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

__all__ = ["load_saved_weights", "record_weights_provenance", "weights_file_provenance"]


def load_saved_weights(model: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Load `folder/model.safetensors` (or the shards its index names) into `model`, in place, strictly.

    Args:
        model (`torch.nn.Module`): the model whose `state_dict` the folder holds.
        folder (`str` or `os.PathLike`): a folder written by `save_pretrained` / `Trainer.save_model`.

    Raises:
        `FileNotFoundError`: the folder holds no safetensors weights.
        `RuntimeError`: a key is missing or unexpected (`load_state_dict(strict=True)`), naming them.
    """
    single = os.path.join(folder, SAFE_WEIGHTS_NAME)
    index = os.path.join(folder, SAFE_WEIGHTS_INDEX_NAME)
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            files = [os.path.join(folder, name) for name in sorted(set(json.load(f)["weight_map"].values()))]
    else:
        raise FileNotFoundError(f"{folder} holds no {SAFE_WEIGHTS_NAME} (nor {SAFE_WEIGHTS_INDEX_NAME})")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(file))
    model.load_state_dict(state, strict=True)


def weights_file_provenance(path: str | os.PathLike) -> dict[str, object]:
    """Issue 19: a local weights file's sha256, size and the metadata its safetensors header carries (if any)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    record: dict[str, object] = {"file_name": os.path.basename(path), "sha256": digest.hexdigest(),
                                 "bytes": os.path.getsize(path)}
    if str(path).endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata:
            record["metadata"] = dict(metadata)
    return record


def record_weights_provenance(config, pretrained_file: str | None, pretraining: str | None) -> None:
    """Issue 19: write where the backbone's weights came from into the model config (saved in config.json): the
    file's sha256 and safetensors metadata, and the pretraining the user named."""
    if pretrained_file and os.path.isfile(pretrained_file):
        config.backbone_pretrained_file_provenance = weights_file_provenance(pretrained_file)
    if pretraining:
        config.backbone_pretraining = pretraining
