"""CDTMForImageClassification: save/load, Auto classes, remote code, pipeline, real sizes, errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForImageClassification, pipeline

from cdtm_hf import CDTMConfig, CDTMForImageClassification, CDTMImageProcessor
from tests.helpers import run_without_cdtm_hf

LABELS = {0: "ductal", 1: "lobular", 2: "mucinous"}


def tiny_model(**overrides):
    torch.manual_seed(0)
    kwargs = dict(backbone="test_vit", image_size=64, num_labels=3, num_centers=6,
                  id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    kwargs.update(overrides)
    return CDTMForImageClassification(CDTMConfig(**kwargs)).eval()


def save_checkpoint(model, path):
    model.save_pretrained(path)
    CDTMImageProcessor.from_model_config(model.config).save_pretrained(path)


@pytest.mark.parametrize("head_type", ["linear", "mha"])
def test_save_load_gives_bit_identical_logits(tmp_path, head_type):
    model = tiny_model(head_type=head_type)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(pixel_values=x).logits
    save_checkpoint(model, tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin")), "weights must be saved as safetensors only"
    for cls in (CDTMForImageClassification, AutoModelForImageClassification):
        loaded = cls.from_pretrained(tmp_path).eval()
        with torch.no_grad():
            assert torch.equal(loaded(pixel_values=x).logits, ref)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "cdtm"


def test_remote_code_loads_where_cdtm_hf_is_not_importable(tmp_path):
    model = tiny_model()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(pixel_values=x).logits
    save_checkpoint(model, tmp_path / "ckpt")
    torch.save(x, tmp_path / "x.pt")
    script = f"""
import torch
from transformers import AutoModelForImageClassification, AutoImageProcessor
model = AutoModelForImageClassification.from_pretrained({str(tmp_path / 'ckpt')!r}, trust_remote_code=True)
assert not type(model).__module__.startswith("cdtm_hf"), type(model).__module__
proc = AutoImageProcessor.from_pretrained({str(tmp_path / 'ckpt')!r}, trust_remote_code=True)
x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)
with torch.no_grad():
    torch.save(model.eval()(pixel_values=x).logits, {str(tmp_path / 'logits.pt')!r})
print("OK", type(model).__module__, type(proc).__name__)
"""
    result = run_without_cdtm_hf(script, tmp_path, HF_MODULES_CACHE=str(tmp_path / "modules"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK transformers_modules" in result.stdout
    assert torch.equal(torch.load(tmp_path / "logits.pt", weights_only=True), ref)


def test_pipeline_returns_labels_from_id2label(tmp_path):
    model = tiny_model()
    save_checkpoint(model, tmp_path)
    classifier = pipeline("image-classification", model=str(tmp_path))
    image = Image.fromarray((np.random.default_rng(0).random((80, 90, 3)) * 255).astype("uint8"))
    preds = classifier(image, top_k=3)
    assert {p["label"] for p in preds} == set(LABELS.values())
    assert sum(p["score"] for p in preds) == pytest.approx(1.0, abs=1e-4)
    # the pipeline's preprocessing is the backbone's data config: same logits as a manual pass
    pixel_values = CDTMImageProcessor.from_pretrained(tmp_path)(image)["pixel_values"]
    with torch.no_grad():
        probs = model(pixel_values=pixel_values).logits.softmax(-1)[0]
    assert preds[0]["label"] == LABELS[int(probs.argmax())]
    assert preds[0]["score"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_real_size_added_parameters_equal_table_vii():
    vit = CDTMForImageClassification(CDTMConfig(backbone="vitb16.laion2b", num_labels=4))
    assert vit.config.num_tokens == 196 and vit.config.hidden_size == 768
    assert vit.added_parameters() == 17_074_368
    del vit
    convnext = CDTMForImageClassification(CDTMConfig(backbone="convnextb.laion2b", num_labels=4))
    assert convnext.config.num_tokens == 49 and convnext.config.hidden_size == 1024
    assert convnext.added_parameters() == 10_479_020


def test_init_weights_never_overwrites_pretrained_backbone(tmp_path):
    import timm

    torch.manual_seed(123)
    source = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=64)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.5)  # values no initialiser would produce
    weights = tmp_path / "backbone.safetensors"
    save_file(source.state_dict(), weights)
    config_kwargs = dict(backbone="test_vit", image_size=64, num_labels=3, num_centers=6,
                         backbone_pretrained_file=str(weights))
    # __init__ never loads weights (it builds the backbone as the library initialises it) ...
    plain = CDTMForImageClassification(CDTMConfig(**config_kwargs))
    assert not torch.equal(plain.backbone.model.state_dict()["blocks.0.attn.proj.bias"],
                           load_file(weights)["blocks.0.attn.proj.bias"])
    assert not plain.config.backbone_pretrained  # a record: nothing was loaded
    # ... and from_backbone loads them through the one explicit path, which no initialiser overwrites: from a config
    # exactly as from a name (0.2 kept a config's backbone random)
    expected = load_file(weights)
    for model in (CDTMForImageClassification.from_backbone(CDTMConfig(**config_kwargs)),
                  CDTMForImageClassification.from_backbone(config_kwargs.pop("backbone"), **config_kwargs)):
        got = model.backbone.model.state_dict()
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            assert torch.equal(got[key], value), key
        assert model.config.backbone_pretrained and model.config.backbone_pretrained_file == str(weights)


def test_from_backbone_loads_only_when_asked_and_a_conflict_is_an_error(tmp_path):
    config = CDTMConfig(backbone="test_vit", image_size=32, num_labels=2, num_centers=3)
    torch.manual_seed(0)
    random = CDTMForImageClassification.from_backbone(config, pretrained=False)
    torch.manual_seed(0)
    assert torch.equal(random.backbone.model.pos_embed, CDTMForImageClassification(config).backbone.model.pos_embed)
    assert random.config.backbone_pretrained is False
    recorded = CDTMConfig(backbone="test_vit", image_size=32, num_labels=2, num_centers=3, backbone_pretrained=True)
    with pytest.raises(ValueError, match="records pretrained backbone weights"):
        CDTMForImageClassification.from_backbone(recorded, pretrained=False)


def test_an_explicit_switch_is_never_overridden_by_the_variant():
    assert CDTMConfig(backbone="test_vit", cdtm_variant="paper", cca_scale=True).cdtm_variant == "paper"
    with pytest.raises(ValueError, match=r"cdtm_variant='official' sets cca_scale=False.*but cca_scale=True was passed"):
        CDTMConfig(backbone="test_vit", cdtm_variant="official", cca_scale=True)
    custom = CDTMConfig(backbone="test_vit", cca_scale=True)  # no variant: the official code's, with one switch off
    assert custom.cca_scale and custom.cca_proj and custom.cdtm_variant is None


def test_backbone_keeps_its_library_initialisation():
    """CDTM's initialiser touches only the modules it adds: the backbone is exactly what timm builds."""
    import timm

    torch.manual_seed(7)
    reference = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=64)
    torch.manual_seed(7)
    model = CDTMForImageClassification(CDTMConfig(backbone="test_vit", image_size=64, num_labels=3, num_centers=6))
    for key, value in reference.state_dict().items():
        assert torch.equal(model.backbone.model.state_dict()[key], value), key
    attn = model.transfer.blocks[0].attn
    assert abs(float(attn.centers.detach().std()) - 1.0) < 0.3 and abs(float(attn.bases.detach().std()) - 1.0) < 0.1  # N(0, 1)


def test_offline_pretrained_backbone_error_names_the_model_and_the_remedy():
    from cdtm_hf.core.backbones import BackboneWeightsError

    config = CDTMConfig(backbone="vit_tiny_patch16_224.augreg_in21k", image_size=224, num_labels=2,
                        backbone_pretrained=True)
    with pytest.raises(BackboneWeightsError) as err:
        CDTMForImageClassification.from_backbone(config)
    message = str(err.value)
    assert "vit_tiny_patch16_224.augreg_in21k" in message
    assert "--backbone_pretrained_file" in message and "--no_backbone_pretrained" in message


def test_missing_weights_file_is_named(tmp_path):
    from cdtm_hf.core.backbones import BackboneWeightsError

    missing = tmp_path / "nope.safetensors"
    with pytest.raises(BackboneWeightsError, match="nope.safetensors"):
        CDTMForImageClassification.from_backbone(
            "test_vit", image_size=64, num_labels=2, backbone_pretrained_file=str(missing)
        )


def test_multi_label_loss_and_hidden_states():
    model = tiny_model(problem_type="multi_label_classification")
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    out = model(pixel_values=torch.randn(2, 3, 64, 64), labels=labels, output_hidden_states=True)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels.float())
    torch.testing.assert_close(out.loss, expected)
    assert out.hidden_states[1].shape == (2, 16, 64)


def test_single_label_loss_is_cross_entropy():
    model = tiny_model()
    labels = torch.tensor([2, 0])
    out = model(pixel_values=torch.randn(2, 3, 64, 64), labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


def test_baseline_without_cdtm_uses_cls_for_vit_and_mean_for_cnn():
    vit = tiny_model(use_cdtm=False)
    assert vit.transfer is None and vit.added_parameters() == 0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = vit.backbone_features(x)
        torch.testing.assert_close(vit(pixel_values=x).logits, vit.head.fc(feats[:, 0]))
    cnn = tiny_model(backbone="test_convnext", use_cdtm=False)
    with torch.no_grad():
        feats = cnn.backbone_features(x)
        torch.testing.assert_close(cnn(pixel_values=x).logits, cnn.head.fc(feats.mean(1)))


def test_frozen_backbone_stays_in_eval_and_keeps_no_graph():
    model = tiny_model()
    model.freeze_backbone(True)
    model.train()
    assert not model.backbone.training and model.transfer.training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    feats = model.backbone_features(torch.randn(1, 3, 64, 64))
    assert feats.grad_fn is None
    model.freeze_backbone(False)
    model.train()
    assert model.backbone.training


def test_open_clip_backbone_builds_and_round_trips(tmp_path, tiny_open_clip):
    model = tiny_model(backbone=tiny_open_clip, backbone_library="open_clip", image_size=32)
    assert model.config.num_tokens == 16 and model.config.num_prefix_tokens == 1
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(pixel_values=x).logits
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(CDTMForImageClassification.from_pretrained(tmp_path).eval()(pixel_values=x).logits, ref)


def test_open_clip_random_tower_is_open_clips_own_image_tower_without_a_misleading_warning(tiny_open_clip, caplog):
    """A random open_clip backbone is the image tower of open_clip's public `create_model` (same seed, same weights),
    built on the device models are built on (`from_pretrained`'s meta device), with no "No pretrained weights
    loaded" warning: random was asked for."""
    import logging

    import open_clip

    from cdtm_hf.core.backbones import _open_clip_visual

    torch.manual_seed(0)
    reference = open_clip.create_model(tiny_open_clip, force_image_size=32).visual.state_dict()
    caplog.set_level(logging.WARNING)
    caplog.clear()  # the reference's own warning
    torch.manual_seed(0)
    tower = _open_clip_visual(tiny_open_clip, 32)
    assert tower.state_dict().keys() == reference.keys()
    assert all(torch.equal(tensor, reference[key]) for key, tensor in tower.state_dict().items())
    assert not [r for r in caplog.records if "No pretrained weights" in r.getMessage()]
    with torch.device("meta"):
        assert next(_open_clip_visual(tiny_open_clip, 32).parameters()).is_meta


# ---------------------------------------------------------------------------------------------------------------
# Bad input: clear errors that name the problem
def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="unknown backbone 'vit_not_a_model': not a preset .* nor a timm model"):
        CDTMForImageClassification(CDTMConfig(backbone="vit_not_a_model"))  # the one check of a backbone name
    with pytest.raises(ValueError, match="unknown open_clip backbone 'NoSuchCLIP'"):
        CDTMForImageClassification(CDTMConfig(backbone="NoSuchCLIP", backbone_library="open_clip"))


def test_vmamba_is_refused_with_an_explanation():
    with pytest.raises(ValueError, match="VMamba is not available"):
        CDTMForImageClassification(CDTMConfig(backbone="vmamba_base"))


def test_image_size_that_disagrees_with_saved_token_count(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"image_size=96 gives 36 tokens .* num_tokens p=16"):
        CDTMForImageClassification.from_pretrained(tmp_path, image_size=96)


def test_pixel_values_of_the_wrong_size():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"do not match image_size=64"):
        model(pixel_values=torch.randn(1, 3, 96, 96))


def test_num_labels_below_two_for_single_label():
    with pytest.raises(ValueError, match="num_labels is 1: single-label classification needs at least 2"):
        CDTMConfig(backbone="test_vit", num_labels=1)
    CDTMConfig(backbone="test_vit", num_labels=1, problem_type="multi_label_classification")


def test_unknown_head_type_and_variant():
    with pytest.raises(ValueError, match="head_type 'mlp' is not one of: linear, mha"):
        CDTMConfig(backbone="test_vit", head_type="mlp")
    with pytest.raises(ValueError, match="cdtm_variant 'v2' is not one of: official, paper"):
        CDTMConfig(backbone="test_vit", cdtm_variant="v2")
    with pytest.raises(ValueError, match="backbone_library 'keras' is not one of"):
        CDTMConfig(backbone="test_vit", backbone_library="keras")


def test_config_round_trips_through_json(tmp_path):
    config = CDTMConfig(backbone="vitb16.laion400m", num_labels=4, cdtm_variant="paper")
    assert config.backbone == "ViT-B-16" and config.backbone_library == "open_clip"
    assert config.backbone_pretrained_tag == "laion400m_e32" and config.backbone_preset == "vitb16.laion400m"
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    again = CDTMConfig.from_pretrained(tmp_path)
    assert again.to_dict() == config.to_dict()
    assert data["cca_scale"] is True and data["keep_prefix_tokens"] is True
