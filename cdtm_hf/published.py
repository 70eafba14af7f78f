"""The published recipes: the runs behind the checkpoints of `model_cards/`, their cards, and the paper's numbers.

A recipe card shows the command that reproduces a checkpoint and the paper's numbers for it, labelled as the paper's;
`paper_reference_for` finds the paper's numbers for the setting of any run, for its model card.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .cards import PAPER_CITATION, _builder, _dataset_link, _render, backbone_hub_id, split_facts
from .checkpoint import CARD_NAME
from .paper import paper_row
from .presets import BACKBONE_PRESETS
from .reporting import format_number, markdown_table


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


def render_recipe_card(recipe: Recipe, license: str = "apache-2.0") -> ModelCard:
    """The card of a published recipe: the command that reproduces it and the paper's numbers, labelled as such.

    Args:
        recipe (`Recipe`): one of `PUBLISHED_RECIPES`.
        license (`str`, *optional*, defaults to `"apache-2.0"`): the card's license identifier.
    """
    preset = BACKBONE_PRESETS[recipe.backbone]
    builder = _builder(recipe.dataset)
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag="image-classification", license=license,
        tags=["cdtm", "image-classification", *builder.TAGS, "medical-imaging", preset.library],
        datasets=[recipe.dataset], base_model=backbone_hub_id(preset.library, preset.model_name, preset.pretrained_tag),
    )
    report = {"dataset": recipe.dataset, "split": {"strategy": recipe.split_strategy}}
    paper = recipe.paper_metrics
    numbers = markdown_table(
        ["Source", "Model", "Precision", "Recall", "Accuracy", "F1 (Eq. 12)"],
        [[f"Li et al. 2024, {recipe.paper_table} (the paper's numbers)", recipe.paper_model,
          *(format_number(paper[k]) for k in ("precision", "recall", "accuracy", "f1"))]],
    )
    return _render(
        "recipe_card.md", card_data, name=recipe.name, family=preset.family, pretraining=preset.pretraining,
        model_name=preset.model_name, library=preset.library, backbone=recipe.backbone,
        dataset_name=builder.DISPLAY_NAME, dataset_link=_dataset_link(builder), dataset_config=recipe.dataset_config,
        dataset_description=builder.DESCRIPTION, domain=", ".join(builder.TAGS) or builder.MODALITY,
        data_dir=recipe.data_dir, split=split_facts(report),
        command_wrapped=recipe_command(recipe).replace(" --", " \\\n  --"), paper_table=recipe.paper_table,
        paper_model=recipe.paper_model, paper_numbers_table=numbers,
        efficiency=paper_row("table7", recipe.backbone, "sft_cdtm"), repo_id=f"{recipe.namespace}/{recipe.name}",
        citation=PAPER_CITATION,
    )


def write_recipe_cards(out_dir: str | Path = "model_cards") -> list[Path]:
    """Write `<out_dir>/<recipe.name>/README.md` for every recipe of `PUBLISHED_RECIPES`; return the paths."""
    paths = []
    for recipe in PUBLISHED_RECIPES:
        path = Path(out_dir) / recipe.name / CARD_NAME
        render_recipe_card(recipe).save(path)
        paths.append(path)
    return paths


__all__ = ["PUBLISHED_RECIPES", "Recipe", "paper_reference_for", "recipe_command", "render_recipe_card",
           "write_recipe_cards"]
