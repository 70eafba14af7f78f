"""The numbers the papers report, read from one data file (`paper_results.json`, percentages as printed)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from ..core.presets import BACKBONE_PRESETS


@lru_cache(maxsize=1)
def load_paper_results() -> dict[str, Any]:
    """cdtm_hf/paper/paper_results.json: {"tables": {name: {"source", "dataset", "metrics", "rows": [...]}}} (in %)."""
    return json.loads(resources.files(__package__).joinpath("paper_results.json").read_text())


def paper_row(table: str | None, backbone: str | None, recipe: str) -> dict[str, Any] | None:
    """The paper's row for a backbone preset and a canonical recipe in `table`, matched by (family, pretraining,
    recipe); None where the paper reports none (or the backbone is not a preset)."""
    if table is None or backbone not in BACKBONE_PRESETS:
        return None
    preset = BACKBONE_PRESETS[backbone]
    for row in load_paper_results()["tables"][table]["rows"]:
        if (row["family"], row["pretraining"], row["recipe"]) == (preset.family, preset.pretraining, recipe):
            return row
    return None
