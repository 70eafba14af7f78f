"""`load_imagefolder`: the path most users take first, verified up front like the builders (issue 13, items 6-8)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import logging  # noqa: E402

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

try:
    from data_fixtures import corrupt_file, make_imagefolder_tree, write_16bit_image, write_image
except ImportError:  # tests/ is a package
    from tests.data_fixtures import corrupt_file, make_imagefolder_tree, write_16bit_image, write_image

from cdtm_hf.data import (  # noqa: E402
    IMAGE_EXTENSIONS,
    CorruptImageError,
    DatasetLayoutError,
    InsufficientSamplesError,
    load_imagefolder,
)
from cdtm_hf.core.image_processing_cdtm import to_rgb_image  # noqa: E402

datasets.disable_progress_bars()


def _load(root, tmp_path, **kwargs):
    return load_imagefolder(root, cache_dir=str(tmp_path / "cache"), **kwargs)


def test_split_folders_are_kept(tmp_path):
    tree = make_imagefolder_tree(tmp_path / "data", {"benign": 3, "malignant": 2}, splits=("train", "val", "test"))
    ds, manifest = _load(tree["root"], tmp_path)
    assert list(ds) == ["train", "validation", "test"]
    assert ds["train"].features["label"].names == ["benign", "malignant"]
    assert [len(ds[s]) for s in ds] == [5, 5, 5]
    assert manifest["grouping"] == "folders" and manifest["split_strategy"] == "folders"
    assert manifest["split_folders"] == {"train": "train", "validation": "val", "test": "test"}
    assert manifest["counts"]["validation"] == {"benign": 3, "malignant": 2}
    assert manifest["skipped"] == [] and manifest["num_skipped"] == 0
    assert manifest["files"]["val/malignant/malignant_001.png"] == "validation"


def test_flat_layout_is_split_stratified_and_seeded(tmp_path):
    tree = make_imagefolder_tree(tmp_path / "data", {"a": 10, "b": 5}, splits=None)
    ds, manifest = _load(tree["root"], tmp_path, seed=1)
    assert manifest["grouping"] == "random" and manifest["carved_splits"] == ["validation", "test"]
    assert manifest["counts"] == {"train": {"a": 6, "b": 3}, "validation": {"a": 2, "b": 1}, "test": {"a": 2, "b": 1}}
    assert sum(len(ds[s]) for s in ds) == 15
    _, again = _load(tree["root"], tmp_path, seed=1)
    _, other = _load(tree["root"], tmp_path, seed=2)
    assert again["files"] == manifest["files"] and other["files"] != manifest["files"]


def test_truncated_test_image_is_named_before_training(tmp_path, caplog):
    """Item 6: the truncated JPEG of the test split used to crash `predict` after both stages had trained."""
    tree = make_imagefolder_tree(tmp_path / "data", {"benign": 3, "malignant": 3}, ext=".jpg")
    bad_test = corrupt_file(tree["root"] / "test" / "malignant" / "malignant_001.jpg", keep=0.4)
    bad_train = corrupt_file(tree["root"] / "train" / "benign" / "benign_002.jpg", keep=0.4)
    with pytest.raises(CorruptImageError, match="skip_corrupt") as err:
        _load(tree["root"], tmp_path)
    assert str(bad_test) in str(err.value) and str(bad_train) in str(err.value)
    with caplog.at_level(logging.WARNING):
        ds, manifest = _load(tree["root"], tmp_path, skip_corrupt=True)
    assert str(bad_test) in caplog.text and str(bad_train) in caplog.text
    assert sorted(s["path"] for s in manifest["skipped"]) == ["test/malignant/malignant_001.jpg",
                                                              "train/benign/benign_002.jpg"]
    assert manifest["num_skipped"] == 2 and [len(ds[s]) for s in ds] == [5, 6, 5]
    for split in ds:  # every image left decodes
        assert all(image.size == (8, 8) for image in ds[split]["image"])


@pytest.mark.parametrize("splits", [None, ("train", "validation", "test")])
def test_single_class_is_a_one_line_error(tmp_path, splits):
    tree = make_imagefolder_tree(tmp_path / "data", {"tumour": 5}, splits=splits)
    with pytest.raises(DatasetLayoutError, match=r"single class 'tumour'.*add a folder per class") as err:
        _load(tree["root"], tmp_path)
    assert "\n" not in str(err.value)


def test_class_too_small_to_split_names_class_split_and_remedy(tmp_path):
    tree = make_imagefolder_tree(tmp_path / "data", {"common": 10, "rare": 1}, splits=None)
    with pytest.raises(InsufficientSamplesError, match=r"class 'rare' has 1 images, too few for the validation and "
                                                       r"test split.*add images of 'rare'") as err:
        _load(tree["root"], tmp_path)
    assert "\n" not in str(err.value)


def test_class_missing_from_a_split(tmp_path):
    tree = make_imagefolder_tree(tmp_path / "data", {"a": 2, "b": 2})
    for p in (tree["root"] / "test" / "b").iterdir():
        p.unlink()
    with pytest.raises(DatasetLayoutError, match=r"class 'b' has no images in the test split; add images to test/b/"):
        _load(tree["root"], tmp_path)


def test_misplaced_images_and_bad_arguments(tmp_path):
    tree = make_imagefolder_tree(tmp_path / "data", {"a": 2, "b": 2}, splits=None)
    write_image(tree["root"] / "a" / "patient1" / "x.png")
    with pytest.raises(DatasetLayoutError, match=r"not directly in a class folder.*a/patient1/x\.png"):
        _load(tree["root"], tmp_path)
    with pytest.raises(ValueError, match=r"verify_images must be one of \('fast', 'full', 'none'\), got 'quick'"):
        _load(tree["root"], tmp_path, verify_images="quick")
    with pytest.raises(ValueError, match="validation_fraction \\+ test_fraction must be below 1"):
        _load(tree["root"], tmp_path, validation_fraction=0.5, test_fraction=0.5)
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        _load(tmp_path / "nowhere", tmp_path)


def test_16bit_png_and_tiff_keep_their_range(tmp_path):
    """Item 7: 16-bit images load, pass verification and keep their dynamic range through to_rgb_image."""
    root = tmp_path / "data"
    make_imagefolder_tree(root, {"a": 3, "b": 3})
    write_16bit_image(root / "train" / "a" / "xray16.png")
    write_16bit_image(root / "train" / "b" / "micro16.tif")
    ds, manifest = _load(root, tmp_path, verify_images="full")
    assert manifest["num_skipped"] == 0 and manifest["counts"]["train"] == {"a": 4, "b": 4}
    deep = [image for image in ds["train"]["image"] if image.mode not in ("RGB", "L")]
    assert len(deep) == 2 and {image.mode for image in deep} <= {"I;16", "I"}
    for image in deep:
        rgb = np.asarray(to_rgb_image(image))
        assert rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb)) > 100


def test_webp_is_an_image_extension():
    assert ".webp" in IMAGE_EXTENSIONS
