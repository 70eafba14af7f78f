"""The pathology / medical foundation-model presets (issue 20): the published token layout at random weights, their
normalisation, and their weights fetched from one Hub repo through `load_pretrained` (the Hub client mocked)."""

from __future__ import annotations

from unittest import mock

import httpx2
import huggingface_hub
import pytest
import torch
from huggingface_hub import errors
from safetensors.torch import save_file

from cdtm_hf import CDTMConfig, CDTMForImageClassification, CDTMImageProcessor
from cdtm_hf.core.backbones import BackboneWeightsError, GatedWeightsError
from cdtm_hf.core.presets import FOUNDATION_PRESETS, IMAGENET_NORM

# The published layout at 224 px: (p patch tokens, d, prefix tokens = CLS + registers, backbone parameters in M).
# Sources: each model's Hub card / config (see the comments in core/presets.py) and the papers' parameter counts.
PUBLISHED = {
    "uni": (196, 1024, 1, 303),
    "uni2-h": (256, 1536, 9, 681),
    "virchow2": (256, 1280, 5, 631),
    "h-optimus-0": (256, 1536, 5, 1135),
    "h-optimus-1": (256, 1536, 5, 1135),
    "prov-gigapath": (196, 1536, 1, 1135),
    "phikon": (196, 768, 1, 86),
    "phikon-v2": (196, 1024, 1, 303),
    "biomedclip": (196, 768, 1, 86),
}
H_OPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)


def test_every_foundation_preset_has_a_published_layout():
    assert set(PUBLISHED) == set(FOUNDATION_PRESETS)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_builds_offline_at_full_size_on_the_meta_device(name):
    """The full architecture, built on torch.device('meta') (no memory, no weights): p, d, k and the size."""
    p, d, k, params_m = PUBLISHED[name]
    with torch.device("meta"):
        model = CDTMForImageClassification(CDTMConfig(backbone=name, num_labels=2))
    cfg = model.config
    assert (cfg.num_tokens, cfg.hidden_size, cfg.num_prefix_tokens) == (p, d, k)
    assert model.backbone_parameters() / 1e6 == pytest.approx(params_m, rel=0.01)
    assert model.backbone.grid_size[0] * model.backbone.grid_size[1] == p
    assert cfg.backbone_preset == name and cfg.backbone_library == FOUNDATION_PRESETS[name].library


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_processor_takes_the_presets_normalisation(name):
    preset = FOUNDATION_PRESETS[name]
    config = CDTMConfig(backbone=name, num_labels=2)
    processor = CDTMImageProcessor.from_model_config(config)
    expected = H_OPTIMUS_MEAN if name.startswith("h-optimus") else preset.data_config["mean"]
    assert tuple(processor.data_config["mean"]) == pytest.approx(expected)
    assert tuple(processor.data_config["input_size"]) == (3, 224, 224)
    if name in ("uni", "uni2-h", "virchow2", "prov-gigapath", "phikon", "phikon-v2"):
        assert tuple(processor.data_config["std"]) == pytest.approx(IMAGENET_NORM["std"])


def _reduced(name: str) -> CDTMConfig:
    """The preset at depth 1 (one block instead of 24-40) and 4 centres: small enough to build and load on a CPU."""
    preset = FOUNDATION_PRESETS[name]
    depth = {"num_hidden_layers": 1} if preset.library == "transformers" else {"depth": 1}
    return CDTMConfig(backbone=name, num_labels=2, num_centers=4, backbone_kwargs=depth)


def _fake_hub(tmp_path, source_state: dict, calls: list):
    """A stand-in for `huggingface_hub.hf_hub_download` that serves one safetensors file (and a config)."""

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        path = tmp_path / filename
        if filename == "config.json":
            return str(path)  # written below, next to the weights
        if not filename.endswith(".safetensors"):
            raise AssertionError(f"asked for {filename} after a safetensors file was served")
        save_file(source_state, str(path))
        return str(path)

    return download


@pytest.mark.parametrize("name", ["uni", "virchow2", "h-optimus-0", "phikon", "biomedclip"])
def test_load_pretrained_asks_for_the_presets_repo(name, tmp_path):
    torch.manual_seed(0)
    model = CDTMForImageClassification(_reduced(name))
    donor = CDTMForImageClassification(_reduced(name)).backbone.model  # different random weights
    state = {k: v.clone().contiguous() for k, v in donor.state_dict().items()}
    preset = FOUNDATION_PRESETS[name]
    if preset.weights_format == "open_clip":  # an open_clip checkpoint: the timm tower under visual.trunk.
        state = {f"visual.trunk.{k}": v for k, v in state.items()}
        state["text.token_embedding.weight"] = torch.zeros(2, 2)
    if preset.weights_format == "transformers":
        donor.config.save_pretrained(tmp_path)
    calls: list = []
    with mock.patch.object(huggingface_hub, "hf_hub_download", _fake_hub(tmp_path, state, calls)):
        model.load_backbone_weights()
    assert {repo for repo, _ in calls} == {preset.weights_repo}
    assert model.config.backbone_pretrained is True
    for key, value in donor.state_dict().items():
        assert torch.equal(model.backbone.model.state_dict()[key], value), key


def _gated() -> errors.GatedRepoError:
    request = httpx2.Request("GET", "https://huggingface.co/MahmoodLab/UNI/resolve/main/model.safetensors")
    return errors.GatedRepoError("403 Client Error: access to model MahmoodLab/UNI is restricted",
                                 response=httpx2.Response(403, request=request))


def test_gated_repo_without_access_names_the_repo_the_page_and_the_login():
    model = CDTMForImageClassification(_reduced("uni"))
    with mock.patch.object(huggingface_hub, "hf_hub_download", side_effect=_gated()):
        with pytest.raises(GatedWeightsError) as caught:
            model.load_backbone_weights()
    message = str(caught.value)
    for part in ("'MahmoodLab/UNI'", "https://huggingface.co/MahmoodLab/UNI", "huggingface-cli login", "HF_TOKEN"):
        assert part in message
    assert model.config.backbone_pretrained is False  # nothing recorded that did not happen


@pytest.mark.parametrize("error", [errors.LocalEntryNotFoundError("no cached file and outgoing traffic disabled"),
                                   errors.OfflineModeIsEnabled("HF_HUB_OFFLINE=1")])
def test_offline_without_cached_weights_says_so(error):
    model = CDTMForImageClassification(_reduced("virchow2"))
    with mock.patch.object(huggingface_hub, "hf_hub_download", side_effect=error):
        with pytest.raises(BackboneWeightsError, match=r"'paige-ai/Virchow2'.*offline.*--backbone_pretrained_file"):
            model.load_backbone_weights()


def test_saved_preset_model_reloads_without_the_preset(tmp_path):
    """config.json holds the architecture (timm name + backbone_kwargs, layer names as strings): it rebuilds."""
    torch.manual_seed(0)
    model = CDTMForImageClassification(_reduced("uni2-h")).eval()
    model.save_pretrained(tmp_path)
    assert model.config.to_dict()["backbone_kwargs"]["mlp_layer"] == "SwiGLUPacked"
    again = CDTMForImageClassification.from_pretrained(tmp_path).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x).logits, again(pixel_values=x).logits)
    assert type(again.backbone.model.blocks[0].mlp).__name__ == "GluMlp"  # what timm builds for SwiGLUPacked


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_every_preset_asks_for_its_own_repo(name):
    """Each preset's weights come from one Hub repo: the first thing load_pretrained asks the Hub client for."""
    with torch.device("meta"):
        model = CDTMForImageClassification(CDTMConfig(backbone=name, num_labels=2))
    asked = []

    def gated(repo_id, filename, **kwargs):
        asked.append(repo_id)
        raise _gated()

    with mock.patch.object(huggingface_hub, "hf_hub_download", gated):
        with pytest.raises(GatedWeightsError, match=f"https://huggingface.co/{FOUNDATION_PRESETS[name].weights_repo}"):
            model.load_backbone_weights()
    assert asked == [FOUNDATION_PRESETS[name].weights_repo]
