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

Importing the package registers the CDTM classes with transformers' Auto classes. The core is imported here; every
other public name is imported on first use.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

from . import _compat
from . import logging as _package_logging
from ._lazy import lazy_exports
from .core.configuration_cdtm import CDTM_VARIANTS, CDTMConfig
from .core.image_processing_cdtm import CDTMImageProcessor, to_rgb_image
from .core.modeling_cdtm import (
    CDTMForImageClassification,
    CDTMPreTrainedModel,
    ClusterCenterAttention,
    CrossDomainTransferModule,
)
from .core.presets import BACKBONE_PRESETS, BackbonePreset

__version__ = "0.3.0"

AutoConfig.register("cdtm", CDTMConfig, exist_ok=True)
AutoModelForImageClassification.register(CDTMConfig, CDTMForImageClassification, exist_ok=True)
AutoImageProcessor.register(
    CDTMConfig, image_processor_classes={"pil": CDTMImageProcessor, "torchvision": CDTMImageProcessor}, exist_ok=True
)
# Saved checkpoints carry an auto_map and the code files, so they load with trust_remote_code=True
# in a process that never installed cdtm_hf.
CDTMConfig.register_for_auto_class()
CDTMForImageClassification.register_for_auto_class("AutoModelForImageClassification")
CDTMImageProcessor.register_for_auto_class("AutoImageProcessor")

_compat.install()
_package_logging.install()  # the cdtm_hf logger follows transformers' verbosity (cdtm_hf/logging.py)

# public name -> the module that defines it, imported on first use
_EXPORTS = {
    **dict.fromkeys(["load_imagefolder", "load_medical_dataset", "load_splits"], ".data"),
    **dict.fromkeys(["run_grid", "load_grid"], ".experiments"),
    **dict.fromkeys(["CDTMImageClassificationPipeline", "push_checkpoint", "write_model_card"], ".hub"),
    **dict.fromkeys(["run_evaluation", "run_finetuning"], ".run"),
    **dict.fromkeys([
        "CDTMTrainer", "CDTMTrainingArguments", "DataArguments", "ModelArguments", "RunArguments",
    ], ".training"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = [  # the core (imported above) and the names of _EXPORTS
    "BACKBONE_PRESETS", "BackbonePreset", "CDTM_VARIANTS", "CDTMConfig", "CDTMForImageClassification",
    "CDTMImageClassificationPipeline", "CDTMImageProcessor", "CDTMPreTrainedModel", "CDTMTrainer",
    "CDTMTrainingArguments", "ClusterCenterAttention", "CrossDomainTransferModule", "DataArguments", "ModelArguments",
    "RunArguments", "load_grid", "load_imagefolder", "load_medical_dataset", "load_splits", "push_checkpoint",
    "run_evaluation", "run_finetuning", "run_grid", "to_rgb_image", "write_model_card",
]
