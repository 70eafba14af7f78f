"""CDTM at large token counts (issue 20): the pooled token grid, the parameter estimate and the size limit."""

from __future__ import annotations

import pytest
import torch

from cdtm_hf import CDTMConfig, CDTMForImageClassification
from cdtm_hf.core.configuration_cdtm import FieldError, estimate_cdtm_parameters
from cdtm_hf.training.run_arguments import ModelArguments


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_estimate_equals_the_built_module(variant):
    model = CDTMForImageClassification(CDTMConfig("test_vit", image_size=64, num_centers=5, num_cdtm_blocks=2,
                                                  cdtm_variant=variant))
    cfg = model.config
    assert estimate_cdtm_parameters(cfg.hidden_size, cfg.num_tokens, 5, 2, cfg.mlp_ratio, cfg.cca_proj) == \
        model.added_parameters()


def test_issue_counts():
    """The numbers of the issue: the bases n*p^2 for ViT-B/16 at 224, p = 256 and p = 1,024 (n = 300)."""
    for p, bases in ((196, 11_524_800), (256, 19_660_800), (1024, 314_572_800)):
        assert estimate_cdtm_parameters(1024, p, 300) - estimate_cdtm_parameters(1024, 0, 300) == bases


def test_token_grid_pools_the_grid_before_cdtm():
    torch.manual_seed(0)
    model = CDTMForImageClassification(CDTMConfig("test_vit", image_size=64, num_centers=3, num_labels=2,
                                                  cdtm_token_grid=2)).eval()
    assert model.backbone.grid_size == (4, 4) and model.config.num_tokens == 4  # 16 tokens -> 2 x 2
    assert model.transfer.blocks[0].attn.bases.shape == (3, 4, 4)
    x = torch.randn(2, 3, 64, 64)
    seen = {}
    model.transfer.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    with torch.no_grad():
        model(pixel_values=x)
        tokens = model.backbone(x).tokens  # (B, 16, d), row-major 4 x 4
    d = tokens.shape[-1]
    by_hand = tokens.reshape(2, 2, 2, 2, 2, d).mean(dim=(2, 4)).reshape(2, 4, d)  # each 2 x 2 patch averaged
    torch.testing.assert_close(seen["x"], by_hand)


def test_token_grid_is_recorded_and_reloads(tmp_path):
    model = CDTMForImageClassification(CDTMConfig("test_vit", image_size=64, num_centers=3, cdtm_token_grid=2))
    model.save_pretrained(tmp_path)
    again = CDTMForImageClassification.from_pretrained(tmp_path)
    assert (again.config.cdtm_token_grid, again.config.num_tokens) == (2, 4)


def test_token_grid_larger_than_the_grid_is_refused():
    with pytest.raises(ValueError, match=r"cdtm_token_grid=5 is larger than the backbone's 4x4 token grid"):
        CDTMForImageClassification(CDTMConfig("test_vit", image_size=64, num_centers=3, cdtm_token_grid=5))


def test_cdtm_above_the_limit_is_refused_with_the_count_and_remedies():
    with pytest.raises(FieldError) as caught:
        CDTMForImageClassification(CDTMConfig("test_vit", image_size=64, num_centers=300, cdtm_max_parameters=80_000))
    message = str(caught.value)
    assert caught.value.field == "cdtm_max_parameters"
    count = estimate_cdtm_parameters(64, 16, 300)  # test_vit: d = 64, 4 x 4 tokens at 64 px
    assert f"{count:,} parameters" in message
    for remedy in ("--cdtm_token_grid", "--num_centers", "--image_size", "--cdtm_max_parameters"):
        assert remedy in message
    # the remedy works: a pooled grid fits
    CDTMForImageClassification(CDTMConfig("test_vit", image_size=64, num_centers=300, cdtm_max_parameters=80_000,
                                          cdtm_token_grid=1))


def test_default_limit_refuses_vit_l14_at_448_on_the_meta_device():
    with torch.device("meta"), pytest.raises(FieldError, match=r"314,572,800 in the n x p x p base matrices"):
        CDTMForImageClassification(CDTMConfig("dinov2.vitl14", image_size=448, num_labels=2))


def test_model_arguments_check_the_token_grid():
    with pytest.raises(FieldError, match="cdtm_token_grid must be >= 1"):
        ModelArguments(backbone="test_vit", cdtm_token_grid=0)
    with pytest.raises(FieldError, match="backbone_kwargs must be a JSON object"):
        ModelArguments(backbone="test_vit", backbone_kwargs="[1, 2]")
