"""Every backbone preset names a real model id and pretrained tag; the unusual token layouts adapt."""

import open_clip
import pytest
import timm
import torch

from cdtm_hf import BACKBONE_PRESETS, CDTMConfig, CDTMForImageClassification


@pytest.mark.parametrize("name", sorted(n for n, p in BACKBONE_PRESETS.items() if p.weights_repo is None))
def test_preset_is_a_real_id(name):  # the foundation-model presets (weights_repo): tests/test_foundation_presets.py
    preset = BACKBONE_PRESETS[name]
    if preset.library == "timm":
        assert timm.is_model(preset.model_name)
        assert preset.model_name in timm.list_pretrained(preset.model_name)  # weights on timm's hub
    else:
        assert preset.model_name in open_clip.list_models()
        assert preset.pretrained_tag in open_clip.list_pretrained_tags_by_model(preset.model_name)


@pytest.mark.parametrize(
    "name,tokens,width,prefix",
    [("sam2.hiera_s", 49, 768, 0),  # hierarchical, channels-last feature map
     ("coca.vitb32", 49, 768, 1),  # open_clip ViT with an attentional pooler
     ("dinov2.vits14", 256, 384, 1)],  # patch 14 at 224 px
)
def test_unusual_backbones_give_tokens(name, tokens, width, prefix):
    model = CDTMForImageClassification(CDTMConfig(backbone=name, num_labels=3, num_centers=4)).eval()
    assert (model.config.num_tokens, model.config.hidden_size, model.config.num_prefix_tokens) == (tokens, width, prefix)
    h, w = model.backbone.grid_size  # the token grid, read once by the adapter
    assert h * w == tokens
    with torch.no_grad():
        assert model(pixel_values=torch.randn(1, 3, 224, 224)).logits.shape == (1, 3)
