"""Model cards of trained checkpoints: `ModelCardData` and `EvalResult`, rendered from a template.

Each card is a Jinja template shipped as package data (`cdtm_hf/hub/templates/model_card.md`, `recipe_card.md`),
rendered with `huggingface_hub.ModelCard.from_template`. This module assembles the card: its metadata (one
`EvalResult` per test metric) and the context the template words. `card_sections.py` builds the sections. Every fact
comes from its one home:

* the run: `config.json` and the run report `test_results.json` (metrics, `training.stages`, `selected_stage`, and
  `split` with its grouping and the split manifest);
* the data set: its builder class (`cdtm_hf.data.get_builder_class`: DISPLAY_NAME, DESCRIPTION, HOMEPAGE, MODALITY,
  TAGS, HAS_PATIENT_IDS, DEFAULT_RATIOS);
* the backbone: `cdtm_hf.core.presets`, and the Hub id of its pretrained weights from timm's or open_clip's own
  pretrained config;
* the paper: `cdtm_hf/paper/paper_results.json` through `cdtm_hf.paper`.

The published recipes' cards are `recipe_cards.py`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..evaluation.metrics import METRIC_DISPLAY_NAMES
from .card_sections import (
    METRICS,
    CardBackbone,
    builder_of,
    counts_table,
    dataset_link,
    details_table,
    efficiency_table,
    is_number,
    paper_table,
    results_context,
    split_facts,
    training_context,
)
from .card_results import statistics_context
from .checkpoint import CARD_NAME, CONFIG_NAME, CONFUSION_MATRIX_NAME, RESULTS_NAME, CheckpointError, read_json

__all__ = ["PAPER_CITATION", "eval_results", "generate_model_card", "load_report", "render_card", "write_model_card"]

PAPER_CITATION = """@article{li2024cdtm,
  author  = {Li, Qiankun and Huang, Xiaolong and Fang, Bo and Chen, Huabao and Ding, Siyuan and Liu, Xu},
  title   = {Embracing Large Natural Data: Enhancing Medical Image Analysis via Cross-domain Fine-tuning},
  journal = {IEEE Journal of Biomedical and Health Informatics},
  year    = {2024},
  doi     = {10.1109/JBHI.2023.3343518}
}"""

TEMPLATES = "templates"


def render_card(template: str, card_data: ModelCardData, **context: Any) -> ModelCard:
    """Render `cdtm_hf/templates/<template>` (package data) and fold runs of blank lines."""
    with resources.as_file(resources.files(__package__).joinpath(TEMPLATES, template)) as path:
        card = ModelCard.from_template(card_data, template_path=str(path), **context)
    return ModelCard(re.sub(r"\n{3,}", "\n\n", str(card)).rstrip("\n") + "\n")


def load_report(checkpoint_dir: Path, report: Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """The run report: the given dict, or the JSON file it names, or `test_results.json` of the folder ({} if none)."""
    if report is None:
        path = checkpoint_dir / RESULTS_NAME
        return read_json(path) if path.is_file() else {}
    if isinstance(report, (str, Path)):
        return read_json(Path(report))
    return dict(report)


def eval_results(report: Mapping[str, Any]) -> list[EvalResult] | None:
    """One `EvalResult` per finite test metric of the report, as fractions; None without a dataset or metrics."""
    dataset, metrics = report.get("dataset"), report.get("metrics") or {}
    if not dataset or not metrics:
        return None
    builder = builder_of(dataset)
    config = report.get("dataset_config")
    strategy = (report.get("split") or {}).get("strategy") or report.get("split_strategy")
    name = (builder.DISPLAY_NAME if builder else dataset) + (f" ({config})" if config else "")
    return [
        EvalResult(
            task_type="image-classification", task_name="Image Classification", dataset_type=dataset,
            dataset_name=name, dataset_config=config, dataset_split="test",
            dataset_args={"split_strategy": strategy, "seed": report.get("seed")},
            metric_type=METRICS[key][0], metric_name=METRIC_DISPLAY_NAMES[key], metric_config=METRICS[key][1],
            metric_value=metrics[key],
        )
        for key in METRICS
        if is_number(metrics.get(key))
    ] or None


def _card_data(report: Mapping[str, Any], backbone: CardBackbone, model_name: str, license: str) -> ModelCardData:
    dataset = report.get("dataset")
    builder = builder_of(dataset)
    tags = ["cdtm", "image-classification", *(builder.TAGS if builder else ()), "medical-imaging", backbone.library]
    if backbone.library == "open_clip" or "clip" in backbone.name.lower():
        tags.append("clip")
    results = eval_results(report)
    return ModelCardData(
        library_name="transformers", pipeline_tag="image-classification", license=license, tags=tags,
        datasets=[dataset] if dataset else None, base_model=backbone.hub_id,
        metrics=list(dict.fromkeys(r.metric_type for r in results or [])) or None,
        model_name=model_name if results else None, eval_results=results,
    )


def generate_model_card(
    checkpoint_dir: str | Path,
    report: Mapping[str, Any] | str | Path | None = None,
    repo_id: str | None = None,
    paper_reference: Mapping[str, Any] | None = None,
    license: str = "apache-2.0",
) -> ModelCard:
    """Build the model card of a trained checkpoint from `config.json` and the run report.

    Args:
        checkpoint_dir (`str` or `Path`): folder with `config.json` (and usually `test_results.json`,
            `confusion_matrix.png`).
        report (`Mapping`, `str` or `Path`, *optional*): the run report (`test_results.json` content, or its path);
            read from `checkpoint_dir` when omitted.
        repo_id (`str`, *optional*): the Hub repository the card is for (loading example, model-index name).
        paper_reference (`Mapping`, *optional*): the paper's numbers for the same setting, in percent (see
            `paper_reference_for`); shown beside this checkpoint's, labelled, and never in the model-index.
        license (`str`, *optional*, defaults to `"apache-2.0"`): the card's license identifier.

    Returns:
        `ModelCard`: metadata with a model-index of this checkpoint's test metrics as fractions, exactly as in the
        report; the body shows them as percentages.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / CONFIG_NAME).is_file():
        raise CheckpointError(f"{checkpoint_dir} has no {CONFIG_NAME}: cannot describe the model; pass a folder that "
                              "model.save_pretrained wrote")
    config = read_json(checkpoint_dir / CONFIG_NAME)
    report = load_report(checkpoint_dir, report)
    backbone = CardBackbone.from_config(config, report)
    id2label = config.get("id2label") or {}
    labels = list(report.get("labels") or [id2label[k] for k in sorted(id2label, key=int)])
    use_cdtm = report.get("use_cdtm", config.get("use_cdtm", True))
    model_name = (repo_id or checkpoint_dir.resolve().name).split("/")[-1]
    builder = builder_of(report.get("dataset"))
    manifest = (report.get("split") or {}).get("manifest") or {}
    return render_card(
        "model_card.md", _card_data(report, backbone, model_name, license), title=model_name, config=config,
        backbone=backbone, use_cdtm=use_cdtm, mode=report.get("finetune_mode"), dataset=report.get("dataset"),
        dataset_config=report.get("dataset_config"), builder=builder,
        dataset_link=dataset_link(builder) if builder else f"`{report.get('dataset')}`", split=split_facts(report),
        counts_table=counts_table(manifest),
        num_skipped=manifest.get("num_skipped", len(manifest.get("skipped") or [])),
        num_labels=len(labels), num_test_examples=report.get("num_test_examples", "?"),
        confusion_image=(checkpoint_dir / CONFUSION_MATRIX_NAME).is_file(),
        details_table=details_table(config, backbone, labels, use_cdtm),
        repo=repo_id or str(checkpoint_dir), top_k=min(3, max(1, len(labels))),
        hub_repo=repo_id, local_repo=checkpoint_dir.resolve().name,  # issue 19: a Hub id only where one is known
        label_list=", ".join(f"`{x}`" for x in labels) or "of its training set",
        input_kind=builder.MODALITY if builder and builder.MODALITY else "like its training images",
        paper_table=paper_table(report, paper_reference, model_name), efficiency_table=efficiency_table(report),
        gmacs_recorded=is_number((report.get("efficiency") or {}).get("gmacs")),
        citation=PAPER_CITATION,
        **results_context(report), **training_context(report), **statistics_context(report, checkpoint_dir),
    )


def write_model_card(
    output_dir: str | Path,
    report: Mapping[str, Any] | str | Path | None = None,
    repo_id: str | None = None,
    paper_reference: Mapping[str, Any] | None = None,
    license: str = "apache-2.0",
) -> Path:
    """Write the model card (`generate_model_card`) as `README.md` into `output_dir`; return its path.

    Args:
        output_dir (`str` or `Path`): the checkpoint folder.
        report (`Mapping`, `str` or `Path`, *optional*): the run report; `output_dir/test_results.json` when omitted.
        repo_id (`str`, *optional*): the Hub repository the card is for.
        paper_reference (`Mapping`, *optional*): the paper's numbers for the same setting (`paper_reference_for`).
        license (`str`, *optional*, defaults to `"apache-2.0"`): the card's license identifier.
    """
    path = Path(output_dir) / CARD_NAME
    card = generate_model_card(output_dir, report, repo_id=repo_id, paper_reference=paper_reference, license=license)
    card.save(path)
    return path
