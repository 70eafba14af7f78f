"""CCA explanations: centre scores, m_cd maps on the backbone's grid, PNG writers, dataset-level cluster usage."""

import json

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cdtm_hf import CDTMConfig, CDTMForImageClassification
from cdtm_hf.evaluation.explain import cca_explanations, cluster_usage, denormalize_pixels, explain_dataset, token_grid
from cdtm_hf.evaluation.explain_plots import plot_cluster_usage

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_model(**overrides):
    torch.manual_seed(0)
    kwargs = dict(backbone="test_vit", image_size=64, num_labels=3, num_centers=6)
    kwargs.update(overrides)
    return CDTMForImageClassification(CDTMConfig(**kwargs)).eval()


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, path
    with Image.open(path) as image:
        image.verify()


@pytest.fixture(scope="module")
def vit():
    return tiny_model()


def test_explanation_of_a_batch(vit):
    x = torch.randn(3, 3, 64, 64)
    exp = cca_explanations(vit, x)
    assert exp.grid == (4, 4) and exp.num_prefix_tokens == 0
    (s_r,), (m_cd,), (received,), (sent,) = exp.centre_scores, exp.mixing, exp.received_mass, exp.sent_mass
    assert s_r.shape == (3, 6)
    torch.testing.assert_close(s_r.sum(-1), torch.ones(3))  # Eq. 6: a softmax per image
    assert m_cd.shape == (3, 16, 16)
    torch.testing.assert_close(m_cd, torch.einsum("bn,npq->bpq", s_r, vit.transfer.blocks[0].attn.bases))  # Eq. 7
    assert received.shape == sent.shape == (3, 4, 4)
    torch.testing.assert_close(received, m_cd.abs().sum(2).reshape(3, 4, 4))
    torch.testing.assert_close(sent, m_cd.abs().sum(1).reshape(3, 4, 4))
    with torch.no_grad():
        out = vit(pixel_values=x, output_attentions=True)
    torch.testing.assert_close(exp.logits, out.logits)
    torch.testing.assert_close(s_r, out.attentions[0])
    assert exp.top_centres(2).shape == (3, 2)
    assert not vit.training


@pytest.mark.parametrize(
    "overrides, grid",
    [
        (dict(backbone="test_convnext", image_size=96), (3, 3)),  # CNN: the last feature map's h x w
        (dict(backbone="test_mambaout"), (2, 2)),  # NHWC feature map
        (dict(backbone_kwargs={"patch_size": (16, 8)}), (4, 8)),  # non-square ViT patch grid
    ],
)
def test_maps_follow_the_backbone_grid(overrides, grid):
    model = tiny_model(**overrides)
    assert token_grid(model) == grid
    size = model.config.image_size
    exp = cca_explanations(model, torch.randn(2, 3, size, size))
    assert exp.received_mass[0].shape == (2, *grid)
    assert exp.mixing[0].shape == (2, grid[0] * grid[1], grid[0] * grid[1])


def test_maps_of_a_pooled_token_grid_are_on_the_grid_cdtm_reads():
    """With `cdtm_token_grid` 2 the CCA reads the 4 x 4 patch grid pooled to 2 x 2 (issue 20): the explanation runs the
    CCA on those pooled tokens (it failed with "CCA got 16 tokens" before), its maps are 2 x 2, and its S_r and
    logits are the forward pass's."""
    model = tiny_model(cdtm_token_grid=2)
    assert token_grid(model) == (2, 2) and model.backbone.grid_size == (4, 4)
    x = torch.randn(2, 3, 64, 64)
    exp = cca_explanations(model, x)
    (m_cd,), (received,) = exp.mixing, exp.received_mass
    assert exp.grid == (2, 2) and m_cd.shape == (2, 4, 4) and received.shape == (2, 2, 2)
    torch.testing.assert_close(received, m_cd.abs().sum(2).reshape(2, 2, 2))
    with torch.no_grad():
        out = model(pixel_values=x, output_attentions=True)
    torch.testing.assert_close(exp.logits, out.logits)
    torch.testing.assert_close(exp.centre_scores[0], out.attentions[0])
    with torch.no_grad():
        features = model.backbone_features(x)
    patches = features[:, model.config.num_prefix_tokens:]  # the official variant drops the prefix tokens
    pooled = torch.nn.functional.adaptive_avg_pool2d(  # the pooled tokens, by torch's own pooling
        patches.transpose(1, 2).reshape(2, -1, 4, 4), 2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(model.cdtm_tokens(features), pooled)


def test_prefix_rows_and_columns_are_dropped_from_the_maps():
    model = tiny_model(cdtm_variant="paper", num_cdtm_blocks=2)  # keep_prefix_tokens: p = 1 + 16
    exp = cca_explanations(model, torch.randn(2, 3, 64, 64))
    assert exp.num_prefix_tokens == 1 and len(exp.mixing) == 2
    for m_cd, received in zip(exp.mixing, exp.received_mass):
        assert m_cd.shape == (2, 17, 17)
        torch.testing.assert_close(received, m_cd[:, 1:, 1:].abs().sum(2).reshape(2, 4, 4))


def test_explain_dataset_writes_pngs_and_usage(vit, tmp_path):
    data = [{"pixel_values": torch.randn(3, 64, 64), "labels": i % 3} for i in range(5)]
    result = explain_dataset(vit, data, tmp_path / "explain", max_images=2, batch_size=2)
    assert result["num_images"] == 5 and len(result["images"]) == 2 and result["grid"] == [4, 4]
    for record in result["images"]:
        assert len(record["top_centres"][0]) == 5
        for path in record["centre_scores_png"] + record["mixing_overlay_png"]:
            assert_png(path)
    (block,) = result["blocks"]
    assert_png(block["cluster_usage_png"])
    assert sum(block["argmax_counts"]) == 5  # every image counted once
    assert sum(block["mean_scores"]) == pytest.approx(1.0)
    assert 1.0 <= block["effective_centres"] <= 6.0
    assert result["images"][0]["label"] == vit.config.id2label[0]
    assert json.loads((tmp_path / "explain" / "summary.json").read_text()) == json.loads(json.dumps(result))
    assert len(list((tmp_path / "explain").glob("*.png"))) == 2 * 2 + 1


def test_explain_dataset_takes_a_dataloader_of_a_cnn(tmp_path):
    model = tiny_model(backbone="test_convnext", image_size=96)
    data = [{"pixel_values": torch.randn(3, 96, 96), "labels": torch.tensor(i % 3)} for i in range(3)]
    result = explain_dataset(model, DataLoader(data, batch_size=2), tmp_path, max_images=1, max_usage_images=3)
    assert result["grid"] == [3, 3] and len(result["images"]) == 1
    assert sum(result["blocks"][0]["argmax_counts"]) == 3
    assert_png(result["images"][0]["mixing_overlay_png"][0])


def test_cluster_usage_reveals_collapse(tmp_path):
    collapsed = cluster_usage(torch.eye(6)[[2] * 10])
    assert collapsed.argmax_counts == [0, 0, 10, 0, 0, 0] and collapsed.top_centres[0] == 2
    assert collapsed.effective_centres == pytest.approx(1.0)
    spread = cluster_usage(torch.eye(6).repeat(2, 1))
    assert spread.effective_centres == pytest.approx(6.0)
    assert spread.mean_image_effective_centres == pytest.approx(1.0)  # one-hot scores: one centre per image
    uniform = cluster_usage(torch.full((4, 6), 1 / 6))
    assert uniform.mean_image_effective_centres == pytest.approx(6.0)
    assert_png(plot_cluster_usage(collapsed.argmax_counts, tmp_path / "usage.png"))


def test_denormalize_restores_the_image():
    image = torch.rand(3, 8, 8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    normalized = (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(denormalize_pixels(normalized, mean, std), image)


def test_explanations_need_the_cca(tmp_path):
    model = tiny_model(use_cdtm=False)
    with pytest.raises(ValueError, match="use_cdtm"):
        cca_explanations(model, torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="use_cdtm"):
        explain_dataset(model, [{"pixel_values": torch.randn(3, 64, 64)}], tmp_path)
