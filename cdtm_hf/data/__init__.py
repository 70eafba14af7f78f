"""HuggingFace ``datasets`` builders for the medical image sets used with CDTM.

``datasets`` >= 4 has no loading scripts, so every set is an importable
``datasets.GeneratorBasedBuilder`` subclass::

    from cdtm_hf.data import BreakHis, load_medical_dataset

    builder = BreakHis(config_name="malignant_200x", data_dir="BreaKHis_v1.tar.gz", cache_dir="cache")
    builder.download_and_prepare()
    ds = builder.as_dataset()          # DatasetDict: train / validation / test
    print(builder.manifest_path)       # split_manifest.json: file -> split, seed, ratios, ...

    ds, manifest = load_medical_dataset("breakhis", "BreaKHis_v1.tar.gz", split_strategy="patient", seed=42)
    ds, manifest = load_imagefolder("my_images/")   # <class>/ or {train,validation,test}/<class>/ folders
    manifest["label_column"], manifest["multi_label"], manifest["class_names"]   # the label facts

See ``docs/datasets.md`` for sources, layouts, configs and split strategies.
"""

from __future__ import annotations

from .._lazy import lazy_exports

# public name -> the module that defines it; imported on first use, so that `import cdtm_hf.data` (and a command
# line's argument check) does not import `datasets` or a builder
_EXPORTS = {
    **dict.fromkeys(["APTOS2019"], ".aptos2019"),
    **dict.fromkeys(["BreakHis", "BreakHisConfig"], ".breakhis"),
    **dict.fromkeys(["MedicalImageBuilder", "MedicalImageConfig"], ".builder"),
    **dict.fromkeys(["CBISDDSM", "CBISDDSMConfig"], ".cbis_ddsm"),
    **dict.fromkeys(["CheXpert", "CheXpertConfig"], ".chexpert"),
    **dict.fromkeys([
        "CorruptImageError", "DataDirRequiredError", "DatasetLayoutError", "MedicalDatasetError",
        "MissingColumnError", "MissingDependencyError",
    ], ".errors"),
    **dict.fromkeys(["IMAGE_EXTENSIONS"], ".files"),
    **dict.fromkeys(["HCRF", "HCRFConfig"], ".hcrf"),
    **dict.fromkeys(["load_imagefolder"], ".imagefolder"),
    **dict.fromkeys(["ISIC2019", "ISIC2019Config"], ".isic2019"),
    **dict.fromkeys(["label_names", "load_medical_dataset", "load_splits"], ".loading"),
    **dict.fromkeys([
        "MANIFEST_FILENAME", "make_manifest", "manifest_summary", "read_manifest", "write_manifest",
    ], ".manifest"),
    **dict.fromkeys(["DATASET_BUILDERS", "IMAGEFOLDER", "data_source_problem", "get_builder_class"], ".registry"),
    **dict.fromkeys([
        "InsufficientSamplesError", "SPLIT_NAMES", "SPLIT_STRATEGIES", "SplitIndices", "patient_grouped_split",
        "stratified_split", "stratified_subset",
    ], ".splits"),
    **dict.fromkeys(["VERIFY_MODES", "verify_image"], ".verify"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
