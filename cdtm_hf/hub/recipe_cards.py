"""The model cards of the published recipes (`model_cards/<name>/README.md`): the command that reproduces each
checkpoint and the paper's numbers for it, labelled as the paper's."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..core.presets import BACKBONE_PRESETS
from ..evaluation.reporting import format_number, markdown_table
from ..paper.numbers import paper_row
from ..paper.recipes import PUBLISHED_RECIPES, Recipe, recipe_command
from .card_sections import backbone_hub_id, builder_of, dataset_link, split_facts
from .cards import PAPER_CITATION, render_card
from .checkpoint import CARD_NAME

__all__ = ["render_recipe_card", "write_recipe_cards"]


def render_recipe_card(recipe: Recipe, license: str = "apache-2.0") -> ModelCard:
    """The card of a published recipe: the command that reproduces it and the paper's numbers, labelled as such.

    Args:
        recipe (`Recipe`): one of `PUBLISHED_RECIPES`.
        license (`str`, *optional*, defaults to `"apache-2.0"`): the card's license identifier.
    """
    preset = BACKBONE_PRESETS[recipe.backbone]
    builder = builder_of(recipe.dataset)
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
    return render_card(
        "recipe_card.md", card_data, name=recipe.name, family=preset.family, pretraining=preset.pretraining,
        model_name=preset.model_name, library=preset.library, backbone=recipe.backbone,
        dataset_name=builder.DISPLAY_NAME, dataset_link=dataset_link(builder), dataset_config=recipe.dataset_config,
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
