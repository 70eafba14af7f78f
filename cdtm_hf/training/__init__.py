"""Training: the arguments (each checked once), the stage plan with its folders and the one resume resolver, the
output folder, the trainer and the frozen-stage feature cache."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["CDTMTrainingArguments"], ".arguments"),
    **dict.fromkeys(["build_model"], ".model_builder"),
    **dict.fromkeys(["clear_output_dir", "prune_optimizer_states"], ".output_dir"),
    **dict.fromkeys(["DataArguments", "ModelArguments", "RunArguments", "resolve_model_args"], ".run_arguments"),
    **dict.fromkeys(["FINETUNE_MODES", "ResumePoint", "Stage", "resolve_resume", "stage_plan"], ".stages"),
    **dict.fromkeys(["CDTMTrainer"], ".trainer"),
    **dict.fromkeys(["build_feature_cache"], ".feature_cache"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
