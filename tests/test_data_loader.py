import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import pytest  # noqa: E402

try:
    from data_fixtures import make_breakhis_tree, make_hcrf_tree
except ImportError:  # tests/ is a package
    from tests.data_fixtures import make_breakhis_tree, make_hcrf_tree

from cdtm_hf.data import (  # noqa: E402
    DATASET_BUILDERS,
    MANIFEST_FILENAME,
    BreakHis,
    CBISDDSM,
    HCRF,
    get_builder_class,
    label_names,
    load_medical_dataset,
    read_manifest,
)

datasets.disable_progress_bars()


def test_registry_and_aliases():
    assert set(DATASET_BUILDERS) == {"breakhis", "hcrf", "isic2019", "aptos2019", "cbis_ddsm", "chexpert"}
    assert all(issubclass(c, datasets.GeneratorBasedBuilder) for c in DATASET_BUILDERS.values())
    assert get_builder_class("BreakHis") is BreakHis
    assert get_builder_class("CBIS-DDSM") is CBISDDSM
    with pytest.raises(ValueError, match="unknown medical dataset 'mnist'.*breakhis"):
        get_builder_class("mnist")


def test_load_medical_dataset(tmp_path):
    info = make_breakhis_tree(tmp_path / "bh")
    ds, returned = load_medical_dataset("breakhis", tmp_path / "bh", cache_dir=str(tmp_path / "cache"))
    assert isinstance(ds, datasets.DatasetDict) and list(ds) == ["train", "validation", "test"]
    assert isinstance(ds["train"].features["label"], datasets.ClassLabel)
    assert isinstance(ds["train"].features["image"], datasets.Image)
    assert label_names(ds) == ["ductal_carcinoma", "lobular_carcinoma", "mucinous_carcinoma", "papillary_carcinoma"]
    n200 = sum(n for (c, mag), n in info["counts"].items() if mag == 200 and c in {"DC", "LC", "MC", "PC"})
    assert sum(len(ds[s]) for s in ds) == n200
    manifests = list((tmp_path / "cache").rglob(MANIFEST_FILENAME))
    assert len(manifests) == 1
    m = read_manifest(manifests[0])
    assert m == returned  # the builder returns the manifest it wrote, with the label facts
    assert m["split_strategy"] == "patient" and m["seed"] == 42 and m["config"] == "malignant_200x"
    assert (m["label_column"], m["multi_label"], m["class_names"]) == ("label", False, label_names(ds))
    assert m["grouping"] == "patient" and m["has_patient_ids"] and "class_counts" not in m
    # second call reuses the prepared cache (same manifest, no regeneration)
    mtime = manifests[0].stat().st_mtime_ns
    ds2, _ = load_medical_dataset("breakhis", tmp_path / "bh", cache_dir=str(tmp_path / "cache"))
    assert manifests[0].stat().st_mtime_ns == mtime
    assert ds2["test"]["file"] == ds["test"]["file"]


def test_options_pass_through(tmp_path):
    make_hcrf_tree(tmp_path / "hcrf", n_normal=10, n_abnormal=10)
    ds, manifest = load_medical_dataset(
        "hcrf", tmp_path / "hcrf", config="full", split_strategy="paper", seed=1, cache_dir=str(tmp_path / "c"),
        ratios=(3, 1, 1),
    )
    assert [len(ds[s]) for s in ds] == [12, 4, 4]
    assert manifest["grouping"] == "random" and "not grouped by patient" in manifest["description"]
    # embed_images stores the bytes in the Arrow files; force_redownload rebuilds
    ds_embed, _ = load_medical_dataset(
        "hcrf", tmp_path / "hcrf", config="full", cache_dir=str(tmp_path / "c"), embed_images=True
    )
    raw = ds_embed["train"].cast_column("image", datasets.Image(decode=False))[0]["image"]
    assert raw["bytes"] and raw["path"].endswith(".png")
    again, _ = load_medical_dataset(
        "hcrf", tmp_path / "hcrf", config="full", cache_dir=str(tmp_path / "c"), embed_images=True,
        download_mode="force_redownload",
    )
    assert again["test"]["file"] == ds_embed["test"]["file"]
    with pytest.raises(ValueError, match="split_strategy"):
        load_medical_dataset("hcrf", tmp_path / "hcrf", split_strategy="random", cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="official"):
        HCRF(data_dir=str(tmp_path / "hcrf"), cache_dir=str(tmp_path / "c"), split_strategy="official")
