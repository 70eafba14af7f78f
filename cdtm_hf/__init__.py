"""cdtm_hf: Cross-Domain Transfer Module (CDTM) and Staged Fine-Tuning (SFT) for HuggingFace, timm and open_clip.

The package, by layer (a module imports only its own layer or below; `docs/architecture.md`):

    core/         the model: CDTMConfig, CDTMForImageClassification, backbones, image processing, presets
    data/         data sources (the medical builders, imagefolder), splits, the split manifest, transforms
    evaluation/   metrics, reporting tables, efficiency, CCA explanations, ONNX export, prediction
    paper/        the papers' numbers and the published recipes
    training/     the arguments, the stage plan, the output folder, CDTMTrainer, the feature cache
    hub/          checkpoint validation, model cards, the push, the pipeline class
    run.py        one run end to end
    experiments/  grids of runs
    cli/          the command lines

Importing the package is cheap: it imports neither transformers nor torch (`cdtm_hf/_auto.py`). The CDTM classes are
registered with transformers' Auto classes as soon as transformers is imported, before or after `cdtm_hf`. Every
public name, the core's included, is imported on first use.
"""

from . import _auto, _compat
from . import logging as _package_logging
from ._lazy import lazy_exports

__version__ = "0.3.0"

_auto.install()  # the Auto classes know "cdtm" from the moment transformers is imported (issue 16)
_compat.install()
_package_logging.install()  # the cdtm_hf logger follows transformers' verbosity (cdtm_hf/logging.py)

# public name -> the module that defines it, imported on first use
_EXPORTS = {
    **dict.fromkeys(["CDTM_VARIANTS", "CDTMConfig"], ".core.configuration_cdtm"),
    **dict.fromkeys(["CDTMImageProcessor", "to_rgb_image"], ".core.image_processing_cdtm"),
    **dict.fromkeys([
        "CDTMForImageClassification", "CDTMPreTrainedModel", "ClusterCenterAttention", "CrossDomainTransferModule",
    ], ".core.modeling_cdtm"),
    **dict.fromkeys(["BACKBONE_PRESETS", "BackbonePreset"], ".core.presets"),
    **dict.fromkeys(["load_imagefolder", "load_medical_dataset", "load_splits"], ".data"),
    **dict.fromkeys(["run_grid", "load_grid"], ".experiments"),
    **dict.fromkeys(["CDTMImageClassificationPipeline", "push_checkpoint", "write_model_card"], ".hub"),
    **dict.fromkeys(["run_evaluation", "run_finetuning"], ".run"),
    **dict.fromkeys([
        "CDTMTrainer", "CDTMTrainingArguments", "DataArguments", "ModelArguments", "RunArguments",
    ], ".training"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = [  # the names of _EXPORTS
    "BACKBONE_PRESETS", "BackbonePreset", "CDTM_VARIANTS", "CDTMConfig", "CDTMForImageClassification",
    "CDTMImageClassificationPipeline", "CDTMImageProcessor", "CDTMPreTrainedModel", "CDTMTrainer",
    "CDTMTrainingArguments", "ClusterCenterAttention", "CrossDomainTransferModule", "DataArguments", "ModelArguments",
    "RunArguments", "load_grid", "load_imagefolder", "load_medical_dataset", "load_splits", "push_checkpoint",
    "run_evaluation", "run_finetuning", "run_grid", "to_rgb_image", "write_model_card",
]
