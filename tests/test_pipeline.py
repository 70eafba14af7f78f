"""16-bit images through `pipeline()`: transformers' own pipeline clips them to white before the processor sees them;
`CDTMImageClassificationPipeline` and arrays decode them with `to_rgb_image`, as training and `cdtm-predict` do."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from cdtm_hf import CDTMConfig, CDTMForImageClassification, CDTMImageProcessor, to_rgb_image
from cdtm_hf.hub.pipeline import CDTMImageClassificationPipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    config = CDTMConfig(backbone="test_vit", image_size=32, num_centers=4, num_labels=3,
                        id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    model = CDTMForImageClassification(config).eval()
    model.save_pretrained(folder)
    CDTMImageProcessor.from_model_config(model.config).save_pretrained(folder)
    gray16 = folder / "gray16.png"
    pixels = (np.random.default_rng(0).random((40, 40)) * 3000 + 20000).astype(np.uint16)  # all above 255
    Image.fromarray(pixels).save(gray16)
    rgb = folder / "rgb.png"
    Image.fromarray((np.random.default_rng(1).random((40, 40, 3)) * 255).astype(np.uint8)).save(rgb)
    return folder, model, gray16, rgb


def _expected(model, folder, image):
    processor = CDTMImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        probs = model(**processor(to_rgb_image(image))).logits.softmax(-1)[0]
    return {model.config.id2label[i]: float(p) for i, p in enumerate(probs)}


def _scores(result):
    return {r["label"]: r["score"] for r in result}


def test_cdtm_pipeline_scales_16_bit_images_like_training(saved):
    folder, model, gray16, _ = saved
    assert Image.open(gray16).mode == "I;16"
    expected = _expected(model, folder, Image.open(gray16))
    classify = pipeline("image-classification", model=str(folder), trust_remote_code=False,
                        pipeline_class=CDTMImageClassificationPipeline)
    for given in (str(gray16), Image.open(gray16), np.asarray(Image.open(gray16))):
        got = _scores(classify(given, top_k=3))
        assert got == pytest.approx(expected, abs=1e-5)


def test_plain_pipeline_clips_16_bit_paths_but_not_arrays(saved):
    """Why the CDTM pipeline exists: transformers' load_image converts to RGB first (all white here)."""
    folder, model, gray16, _ = saved
    expected = _expected(model, folder, Image.open(gray16))
    white = _expected(model, folder, Image.new("RGB", (40, 40), (255, 255, 255)))
    plain = pipeline("image-classification", model=str(folder), trust_remote_code=False)
    assert _scores(plain(str(gray16), top_k=3)) == pytest.approx(white, abs=1e-5)
    assert _scores(plain(np.asarray(Image.open(gray16)), top_k=3)) == pytest.approx(expected, abs=1e-5)
    assert white != pytest.approx(expected, abs=1e-3)


def test_8_bit_images_are_unchanged(saved):
    folder, _, _, rgb = saved
    plain = pipeline("image-classification", model=str(folder), trust_remote_code=False)
    cdtm = pipeline("image-classification", model=str(folder), trust_remote_code=False,
                    pipeline_class=CDTMImageClassificationPipeline)
    assert _scores(cdtm(str(rgb), top_k=3)) == pytest.approx(_scores(plain(str(rgb), top_k=3)), abs=1e-6)


def test_processor_takes_a_2d_array_and_a_batch(saved):
    folder, _, gray16, _ = saved
    processor = CDTMImageProcessor.from_pretrained(folder)
    single = processor(np.asarray(Image.open(gray16)))["pixel_values"]
    assert single.shape == (1, 3, 32, 32) and float(single.std()) > 0.1  # not a constant (white) image
    batch = processor(np.zeros((2, 40, 40, 3), dtype=np.uint8))["pixel_values"]
    assert batch.shape == (2, 3, 32, 32)
