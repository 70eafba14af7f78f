"""cdtm_hf: Cross-Domain Transfer Module (CDTM) and Staged Fine-Tuning (SFT) for HuggingFace, timm and open_clip."""

from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

from .configuration_cdtm import CDTM_VARIANTS, CDTMConfig
from .image_processing_cdtm import CDTMImageProcessor, to_rgb_image
from .modeling_cdtm import (
    CDTMForImageClassification,
    CDTMPreTrainedModel,
    ClusterCenterAttention,
    CrossDomainTransferModule,
)
from .presets import BACKBONE_PRESETS, BackbonePreset

__version__ = "0.2.0"

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

__all__ = [
    "BACKBONE_PRESETS",
    "BackbonePreset",
    "CDTM_VARIANTS",
    "CDTMConfig",
    "CDTMForImageClassification",
    "CDTMImageProcessor",
    "CDTMPreTrainedModel",
    "ClusterCenterAttention",
    "CrossDomainTransferModule",
    "to_rgb_image",
]
