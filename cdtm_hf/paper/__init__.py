"""The papers: their reported numbers (`paper_results.json`, read by `numbers.py`) and the published recipes."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["load_paper_results", "paper_row"], ".numbers"),
    **dict.fromkeys(["PUBLISHED_RECIPES", "Recipe", "paper_reference_for", "recipe_command"], ".recipes"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
