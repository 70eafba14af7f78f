"""The model of a run, from its `ModelArguments`: a new one (pretrained backbone weights through `from_backbone`), or
a saved checkpoint with a head for the data's classes."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.configuration_cdtm import CDTMConfig
from ..core.modeling_cdtm import CDTMForImageClassification
from .knobs import model_backbone_kwargs
from .run_arguments import ModelArguments

__all__ = ["build_model"]


def build_model(
    model_args: ModelArguments, names: Sequence[str], multi_label: bool = False
) -> CDTMForImageClassification:
    """A new model (pretrained backbone weights through `from_backbone` unless `backbone_pretrained=False`), or the
    checkpoint `model_name_or_path` with a head for `names`.

    Args:
        model_args (`ModelArguments`): the model to build or continue from (`resolve_model_args` has reconciled it
            with a checkpoint).
        names (`Sequence[str]`): the class names, in id order.
        multi_label (`bool`, *optional*, defaults to `False`): multi-hot labels (sigmoid, BCE).
    """
    id2label = dict(enumerate(names))
    label2id = {n: i for i, n in id2label.items()}
    problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    if model_args.model_name_or_path:
        extra = {}
        if model_args.drop_path_rate is not None:  # training-only: the saved weights are unchanged
            saved = CDTMConfig.from_pretrained(model_args.model_name_or_path, **model_args.hub_kwargs()).backbone_kwargs
            extra["backbone_kwargs"] = {**saved, "drop_path_rate": model_args.drop_path_rate}
        return CDTMForImageClassification.from_pretrained(
            model_args.model_name_or_path, num_labels=len(names), id2label=id2label, label2id=label2id,
            problem_type=problem_type, ignore_mismatched_sizes=True, **model_args.hub_kwargs(), **extra,
        )
    config = CDTMConfig(
        backbone=model_args.backbone, backbone_library=model_args.backbone_library,
        backbone_pretrained_tag=model_args.backbone_pretrained_tag,
        backbone_pretrained_file=model_args.backbone_pretrained_file, use_cdtm=model_args.use_cdtm,
        cdtm_variant=model_args.cdtm_variant, num_centers=model_args.num_centers,
        num_cdtm_blocks=model_args.num_cdtm_blocks, head_type=model_args.head_type,
        mha_num_heads=model_args.mha_num_heads, image_size=model_args.image_size,
        num_labels=len(names), id2label=id2label, label2id=label2id, problem_type=problem_type,
        backbone_kwargs=model_backbone_kwargs(model_args),
        cdtm_token_grid=model_args.cdtm_token_grid, cdtm_max_parameters=model_args.cdtm_max_parameters,
    )
    # offline without the weights, the core names the backbone and the remedies (BackboneWeightsError)
    return CDTMForImageClassification.from_backbone(config, pretrained=model_args.backbone_pretrained)
