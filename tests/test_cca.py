"""CCA and the CDTM block against a plain-Python loop reference of Eq. 1-8 (both variants, three backbones)."""

import math

import pytest
import torch

from cdtm_hf import CDTMConfig, CDTMForImageClassification


def layer_norm_loop(x, ln):
    """LayerNorm of each token, written out."""
    out = torch.empty_like(x)
    for j in range(x.shape[0]):
        v = x[j]
        mu = sum(v.tolist()) / v.numel()
        var = sum((a - mu) ** 2 for a in v.tolist()) / v.numel()
        out[j] = (v - mu) / math.sqrt(var + ln.eps) * ln.weight + ln.bias
    return out


def cca_loop(x, cca, scale):
    """Eq. 3-8 for one sample x (p, d), one centre and one token at a time."""
    p, d = x.shape
    x_g = torch.zeros(d, dtype=x.dtype)
    for j in range(p):  # Eq. 3 (sum; same cosine as the mean)
        x_g = x_g + x[j]
    s_a = []
    for c in cca.centers:  # Eq. 4-5
        cos = float(torch.dot(x_g, c)) / (float(x_g.norm()) * float(c.norm()))
        s_a.append(cos / math.sqrt(d) if scale else cos)
    z = sum(math.exp(a) for a in s_a)
    s_r = [math.exp(a) / z for a in s_a]  # Eq. 6
    m_cd = torch.zeros(p, p, dtype=x.dtype)
    for i, m_i in enumerate(cca.bases):  # Eq. 7
        m_cd = m_cd + s_r[i] * m_i
    mixed = torch.zeros_like(x)
    for a in range(p):  # the p x p matrix mixes the tokens
        for b in range(p):
            mixed[a] = mixed[a] + m_cd[a, b] * x[b]
    return mixed, torch.tensor(s_r, dtype=x.dtype)


def cdtm_loop(tokens, model):
    """LN -> [CCA(LN x), (+) MLP(LN x)] -> LN, per sample, from the backbone tokens."""
    cfg = model.config
    outs, scores = [], []
    for x in tokens:
        x = layer_norm_loop(x, model.transfer.norm_pre)
        for block in model.transfer.blocks:
            mixed, s_r = cca_loop(layer_norm_loop(x, block.norm1), block.attn, cfg.cca_scale)
            if cfg.cca_proj:
                mixed = mixed @ block.attn.proj.weight.t() + block.attn.proj.bias
            h = layer_norm_loop(mixed, block.norm2)
            h = torch.nn.functional.gelu(h @ block.mlp.fc1.weight.t() + block.mlp.fc1.bias)
            h = h @ block.mlp.fc2.weight.t() + block.mlp.fc2.bias
            x = mixed + h if cfg.mlp_residual else h
            scores.append(s_r)
        outs.append(layer_norm_loop(x, model.transfer.norm_post))
    return torch.stack(outs), torch.stack(scores)


def _build(backbone, library, image_size, variant):
    torch.manual_seed(0)
    config = CDTMConfig(
        backbone=backbone, backbone_library=library, image_size=image_size, num_labels=3, num_centers=5,
        cdtm_variant=variant,
    )
    return CDTMForImageClassification(config).double().eval()


@pytest.mark.parametrize("variant", ["official", "paper"])
@pytest.mark.parametrize(
    "backbone,library,image_size",
    [("test_vit", "timm", 64), ("test_convnext", "timm", 96), ("open_clip", "open_clip", 32)],
)
def test_cdtm_matches_loop_reference(backbone, library, image_size, variant, tiny_open_clip):
    if backbone == "open_clip":
        backbone = tiny_open_clip
    model = _build(backbone, library, image_size, variant)
    pixel_values = torch.randn(2, 3, image_size, image_size, dtype=torch.float64)
    with torch.no_grad():
        out = model(pixel_values=pixel_values, output_hidden_states=True, output_attentions=True)
        features, cdtm_out = out.hidden_states
        k = model.config.num_prefix_tokens
        tokens = features if model.config.keep_prefix_tokens else features[:, k:]
        ref, ref_scores = cdtm_loop(tokens, model)
    assert cdtm_out.shape == ref.shape
    torch.testing.assert_close(cdtm_out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.attentions[0], ref_scores, atol=1e-5, rtol=1e-5)
    # the linear head sees the mean over tokens
    torch.testing.assert_close(out.logits, model.head.fc(ref.mean(1)), atol=1e-5, rtol=1e-5)


def test_variants_differ_where_the_papers_text_and_code_differ():
    official = _build("test_vit", "timm", 64, "official")
    paper = _build("test_vit", "timm", 64, "paper")
    assert official.config.num_tokens == 16 and paper.config.num_tokens == 17  # CLS dropped vs kept
    assert official.transfer.blocks[0].attn.score_scale == 1.0
    assert paper.transfer.blocks[0].attn.score_scale == pytest.approx(1 / math.sqrt(64))
    assert isinstance(paper.transfer.blocks[0].attn.proj, torch.nn.Identity)
    assert official.config.cdtm_variant == "official" and paper.config.cdtm_variant == "paper"


def test_scores_are_a_distribution_over_centres():
    model = _build("test_vit", "timm", 64, "official")
    with torch.no_grad():
        out = model(pixel_values=torch.randn(3, 3, 64, 64, dtype=torch.float64), output_attentions=True)
    s_r = out.attentions[0]
    assert s_r.shape == (3, 5)
    torch.testing.assert_close(s_r.sum(-1), torch.ones(3, dtype=torch.float64))
    assert (s_r > 0).all()


def test_centres_and_bases_start_from_standard_normal():
    torch.manual_seed(0)
    model = CDTMForImageClassification(CDTMConfig(backbone="test_convnext", image_size=224, num_labels=2))
    bases = model.transfer.blocks[0].attn.bases
    assert bases.shape == (300, 49, 49)
    assert abs(bases.mean().item()) < 0.01 and abs(bases.std().item() - 1) < 0.01
