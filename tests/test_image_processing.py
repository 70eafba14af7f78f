"""CDTMImageProcessor builds its transform once; `to_rgb_image` is the one decode of 8-bit, 16-bit and float images."""

import json

import numpy as np
import pytest
import timm.data
from PIL import Image

from cdtm_hf import CDTMImageProcessor, to_rgb_image


def test_the_eval_transform_is_built_once_and_not_saved(tmp_path, monkeypatch):
    calls = []
    real = timm.data.create_transform
    monkeypatch.setattr(timm.data, "create_transform", lambda *a, **k: calls.append(k) or real(*a, **k))
    processor = CDTMImageProcessor(data_config={"input_size": (3, 32, 32)})
    image = Image.new("RGB", (40, 40), (10, 20, 30))
    for _ in range(3):
        assert processor(image)["pixel_values"].shape == (1, 3, 32, 32)
    assert len(calls) == 1
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert "val_transforms" not in saved and saved["data_config"]["input_size"] == [3, 32, 32]
    assert CDTMImageProcessor.from_pretrained(tmp_path).data_config == processor.data_config


def test_16_bit_images_keep_their_range_instead_of_turning_white():
    pixels = np.linspace(1000, 60000, 64 * 64).reshape(64, 64).astype(np.uint16)
    image = Image.fromarray(pixels)
    assert image.mode == "I;16"
    rgb = np.asarray(to_rgb_image(image))
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb[..., 0])) > 200  # scaled by its own range
    assert np.asarray(image.convert("RGB")).mean() > 250  # what a plain convert gives: white


def test_a_window_maps_a_documented_range_and_clips_outside_it():
    pixels = np.array([[0, 1000, 2000, 3000]], dtype=np.uint16)
    rgb = np.asarray(to_rgb_image(Image.fromarray(pixels), window=(1000, 2000)))[..., 0]
    assert rgb.tolist() == [[0, 0, 255, 255]]


def test_float_and_constant_images():
    floats = np.array([[-1.0, 0.0], [1.0, np.nan]], dtype=np.float32)
    rgb = np.asarray(to_rgb_image(Image.fromarray(floats, mode="F")))[..., 0]
    assert rgb.tolist() == [[0, 128], [255, 0]]  # NaN is drawn as the low end
    assert np.asarray(to_rgb_image(np.full((4, 4), 7, dtype=np.uint16))).max() == 0  # constant: black, no division


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "RGB"])
def test_8_bit_images_are_plain_rgb_conversions(mode):
    image = Image.fromarray((np.arange(48).reshape(4, 4, 3) * 5).astype(np.uint8)).convert(mode)
    assert np.array_equal(np.asarray(to_rgb_image(image)), np.asarray(image.convert("RGB")))
