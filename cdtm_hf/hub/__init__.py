"""The Hub: checkpoint validation (what may leave a folder), model cards and their templates, the push, and the
`pipeline()` class for 16-bit images."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["generate_model_card", "write_model_card"], ".cards"),
    **dict.fromkeys(["CheckpointError", "checkpoint_files", "validate_checkpoint"], ".checkpoint"),
    **dict.fromkeys(["CDTMImageClassificationPipeline"], ".pipeline"),
    **dict.fromkeys([
        "HubUnreachableError", "InvalidRepoIdError", "MissingTokenError", "check_push_ready", "push_checkpoint",
    ], ".push"),
    **dict.fromkeys(["render_recipe_card", "write_recipe_cards"], ".recipe_cards"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
