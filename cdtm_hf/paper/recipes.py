"""The published recipes: the runs behind the checkpoints of `model_cards/`, and the paper's numbers for them.

`recipe_command` is the command that reproduces a recipe; `paper_reference_for` finds the paper's numbers for the
setting of any run, for its model card. The recipes' cards are rendered by `cdtm_hf.hub.recipe_cards`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .numbers import paper_row


@dataclass(frozen=True)
class Recipe:
    """One published recipe: the run that produces a checkpoint, and the row of the paper that reports it."""

    name: str  # the repository name, e.g. "vitb-laion2b-cdtm-breakhis"
    backbone: str  # a key of BACKBONE_PRESETS
    dataset: str  # a builder name (cdtm_hf.data.get_builder_class)
    dataset_config: str
    data_dir: str  # the placeholder path shown in the command
    paper_table: str  # "Table IV" or "Table V"
    paper_model: str  # the row name in the paper's table
    split_strategy: str = "paper"
    finetune_mode: str = "sft"
    namespace: str = "org"

    @property
    def paper_metrics(self) -> dict[str, float]:
        """The paper's precision, recall, accuracy and F1 (Eq. 12) in percent, from `paper_results.json`."""
        table = {"Table IV": "table4", "Table V": "table5"}[self.paper_table]
        row = paper_row(table, self.backbone, "sft_cdtm" if self.finetune_mode == "sft" else self.finetune_mode)
        if row is None:
            raise KeyError(f"paper_results.json has no {self.paper_table} row for {self.backbone} {self.finetune_mode}")
        return {k: row[k] for k in ("precision", "recall", "accuracy", "f1")}


PUBLISHED_RECIPES: tuple[Recipe, ...] = (
    Recipe("vitb-laion2b-cdtm-breakhis", "vitb16.laion2b", "breakhis", "malignant_200x", "/path/to/BreaKHis_v1.tar.gz",
           "Table IV", "ViT-B-CDTM-SFT"),
    Recipe("convnextb-laion2b-cdtm-breakhis", "convnextb.laion2b", "breakhis", "malignant_200x",
           "/path/to/BreaKHis_v1.tar.gz", "Table IV", "ConvNeXt-B-CDTM-SFT"),
    Recipe("convnextb-laion2b-cdtm-hcrf", "convnextb.laion2b", "hcrf", "balanced", "/path/to/HCRF", "Table V",
           "ConvNeXt-B-CDTM-SFT"),
    Recipe("vitb-laion2b-cdtm-hcrf", "vitb16.laion2b", "hcrf", "balanced", "/path/to/HCRF", "Table V",
           "ViT-B-CDTM-SFT"),
)


def paper_reference_for(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The paper's numbers (percent) for the setting of a run, or None where the paper reports none.

    Args:
        report (`Mapping`): the run report; matched on backbone preset, data set and configuration, CDTM and SFT
            against `PUBLISHED_RECIPES`.

    Returns:
        `dict | None`: `precision`, `recall`, `accuracy`, `f1` (the paper's Eq. 12 F1), `table` and `model`.
    """
    if report.get("finetune_mode") != "sft" or report.get("use_cdtm") is False:
        return None
    for recipe in PUBLISHED_RECIPES:
        if (report.get("backbone_preset"), report.get("dataset")) == (recipe.backbone, recipe.dataset) and (
            report.get("dataset_config") in (None, recipe.dataset_config)
        ):
            return {**recipe.paper_metrics, "table": recipe.paper_table, "model": recipe.paper_model}
    return None


def recipe_command(recipe: Recipe) -> str:
    """The one-line command that trains, evaluates and pushes the checkpoint of `recipe`."""
    return " ".join([
        "accelerate launch examples/run_sft.py", f"--backbone {recipe.backbone}", f"--dataset {recipe.dataset}",
        f"--dataset_config {recipe.dataset_config}", f"--data_dir {recipe.data_dir}",
        f"--split_strategy {recipe.split_strategy}", f"--finetune_mode {recipe.finetune_mode}",
        f"--output_dir outputs/{recipe.name}", "--push_to_hub", f"--hub_model_id {recipe.namespace}/{recipe.name}",
    ])


__all__ = ["PUBLISHED_RECIPES", "Recipe", "paper_reference_for", "recipe_command"]
