"""Model cards (cdtm_hf.hub.cards): what the card states must be what the run recorded, and each fact has one home.

Cards are built from `config.json` alone (no weights), so these tests build no model.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from cdtm_hf import CDTMConfig
from cdtm_hf.hub import card_sections, cards
from cdtm_hf.hub import push as hub
from cdtm_hf.hub.cards import generate_model_card, write_model_card
from cdtm_hf.hub.recipe_cards import render_recipe_card
from cdtm_hf.paper.recipes import PUBLISHED_RECIPES, paper_reference_for, recipe_command
from cdtm_hf.data import get_builder_class

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "org/vitb-laion2b-cdtm-breakhis"
LABELS = ["DC", "LC", "MC", "PC"]
STAGES = [
    {"stage": 1, "backbone": "frozen", "epochs": 3.0, "learning_rate": 1e-4, "warmup_steps": 11,
     "backbone_norm_eval": False, "backbone_lr_multiplier": 1.0, "best_metric": 0.822, "best_checkpoint": "o/s1"},
    {"stage": 2, "backbone": "trained", "epochs": 7.0, "learning_rate": 1e-5, "warmup_steps": 5,
     "backbone_norm_eval": True, "backbone_lr_multiplier": 0.5, "best_metric": 0.465, "best_checkpoint": "o/s2"},
]
REPORT = {
    "dataset": "breakhis", "dataset_config": "malignant_200x", "seed": 42, "backbone": "test_vit",
    "backbone_preset": None, "finetune_mode": "sft", "use_cdtm": True, "cdtm_variant": "official", "labels": LABELS,
    "metrics": {"accuracy": 0.9424, "precision": 0.9274, "recall": 0.9108, "f1": 0.7012, "f1_eq12": 0.9191},
    "per_class": {x: {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10 + i} for i, x in enumerate(LABELS)},
    "confusion_matrix": [[9, 1, 0, 0], [1, 9, 1, 0], [0, 0, 11, 1], [0, 1, 0, 12]], "num_test_examples": 46,
    "training": {"finetune_mode": "sft", "optimizer": "adamw_torch_fused", "batch_size": 16, "weight_decay": 1e-3,
                 "betas": [0.9, 0.999], "lr_scheduler": "cosine", "image_size": 64, "metric_for_best_model": "f1",
                 "augment": True, "stages": STAGES, "selected_stage": 1},
    "split": {"strategy": "paper", "grouping": "patient", "description": "builder breakhis, paper split",
              "manifest": {"dataset": "BreakHis", "split_strategy": "paper", "grouping": "patient",
                           "counts": {"train": {"DC": 30, "LC": 5}, "validation": {"DC": 10, "LC": 2},
                                      "test": {"DC": 10, "LC": 3}},
                           "skipped": [{"path": "SOB_M_DC-14-1.png", "reason": "truncated"}], "num_skipped": 1}},
    "efficiency": {"params_m": 102.88, "added_params": 17074368, "gmacs": 17.93, "lp_trainable_pct": 16.6},
}
REFERENCE = {"precision": 92.74, "recall": 91.08, "accuracy": 94.24, "f1": 91.91, "table": "Table IV",
             "model": "ViT-B-CDTM-SFT"}
NO_PATIENT_CLAIM = "no patient contributes images to more than one split"


def save_config(folder: Path, **kwargs) -> Path:
    defaults = dict(backbone="test_vit", image_size=64, num_centers=6, num_labels=len(LABELS),
                    id2label=dict(enumerate(LABELS)), label2id={x: i for i, x in enumerate(LABELS)})
    CDTMConfig(**{**defaults, **kwargs}).save_pretrained(folder)
    return folder


def report_with(**changes) -> dict:
    report = copy.deepcopy(REPORT)
    for key, value in changes.items():
        report[key] = value
    return report


def test_card_parses_back_and_the_model_index_is_this_runs_metrics(tmp_path):
    save_config(tmp_path)
    path = write_model_card(tmp_path, REPORT, repo_id=REPO_ID, paper_reference=REFERENCE)
    card = ModelCard.load(path)
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-classification"
    assert data.datasets == ["breakhis"] and data.model_name == "vitb-laion2b-cdtm-breakhis"
    got = {(r.metric_name, r.metric_config): r.metric_value for r in data.eval_results}
    assert got == {("Accuracy", None): 0.9424, ("Precision (macro)", "macro"): 0.9274,
                   ("Recall (macro)", "macro"): 0.9108, ("Macro-F1", "macro"): 0.7012,
                   ("F1 (Eq. 12)", "harmonic_mean_of_macro_precision_and_recall"): 0.9191}
    assert all(r.source_name is None for r in data.eval_results)  # ours, not copied from anywhere
    assert "92.74" not in card.content.split("\n---\n", 1)[0]  # the paper's numbers never reach the metadata
    text = card.text
    assert "| 94.24 % | 92.74 % | 91.08 % | 70.12 % | 91.91 % |" in text
    assert "| Params (M) | Added by CDTM | GMACs (1 image) | Trainable in stage 1 / LP |" in text
    assert "| 102.88 | 17,074,368 | 17.93 | 16.6 % |" in text
    assert f'pipeline("image-classification", model="{REPO_ID}", trust_remote_code=True)' in text
    assert "doi     = {10.1109/JBHI.2023.3343518}" in text


def test_card_states_each_stages_real_hyperparameters_and_the_kept_stage(tmp_path):
    card = generate_model_card(save_config(tmp_path), REPORT)
    text = card.text
    assert "| 1 | frozen | 3 | 0.0001 | 11 | 1 | fixed (backbone frozen) | 0.8220 | yes |" in text
    assert "| 2 | trained | 7 | 1e-05 | 5 | 0.5 | fixed (eval mode) | 0.4650 |  |" in text
    kept = "The model kept is stage 1's best on the validation split (`f1` = 0.8220), chosen across both stages."
    assert kept in text
    assert "| `optimizer` | adamw_torch_fused |" in text and "AdamW" not in text
    stage2_kept = report_with(training={**REPORT["training"], "selected_stage": 2})
    assert "The model kept is stage 2's best" in generate_model_card(tmp_path, stage2_kept).text
    unknown = report_with(training={**REPORT["training"], "selected_stage": None})
    assert "Which stage's model was kept is not recorded." in generate_model_card(tmp_path, unknown).text


def test_our_eq12_f1_stands_beside_the_papers_f1(tmp_path):
    card = generate_model_card(save_config(tmp_path), REPORT, paper_reference=REFERENCE)
    text = card.text
    assert "| Source | Model | Precision | Recall | Accuracy | F1 (Eq. 12) |" in text
    paper = ("| Li et al. 2024, Table IV (the paper's numbers) | ViT-B-CDTM-SFT "
             "| 92.74 % | 91.08 % | 94.24 % | 91.91 % |")
    assert paper in text
    # ours: the Eq. 12 value (91.91), not sklearn's macro-F1 (70.12)
    assert f"| This checkpoint (ours) | {tmp_path.name} | 92.74 % | 91.08 % | 94.24 % | 91.91 % |" in text
    assert "Macro-F1 is sklearn's mean of the per-class F1 scores" in text


@pytest.mark.parametrize("strategy, grouping, several, claim, shown", [
    ("patient", "patient", 0, True, "patient-grouped split"),
    ("patient", "patient", 3, False, "split strategy `patient`"),  # the manifest shows a patient in two splits
    ("patient", "image", 0, False, "Not grouped by patient"),  # the builder fell back to one group per image
    ("paper", "patient", 0, False, "Patient leakage"),
    ("official", "patient", 0, False, "official train/test split, validation carved from train by patient"),
    (None, "folders", 0, False, "whether a patient appears in more than one of them was not checked"),
    (None, "random", 0, False, "a random image-level split"),
])
def test_the_card_states_what_the_split_really_was(tmp_path, strategy, grouping, several, claim, shown):
    # a free-text description can claim what the split did not do; the card must not repeat it
    split = {"strategy": strategy, "grouping": grouping, "description": f"grouped by patient: {NO_PATIENT_CLAIM}",
             "manifest": {"grouping": grouping, "groups_in_several_splits": several}}
    text = generate_model_card(save_config(tmp_path), report_with(dataset="isic2019", split=split)).text
    assert (NO_PATIENT_CLAIM in text) is claim
    assert shown in text


def test_split_counts_and_skipped_images_from_the_manifest(tmp_path):
    text = generate_model_card(save_config(tmp_path), REPORT).text
    assert "| Class | train | validation | test |" in text and "| **total** | 35 | 12 | 13 |" in text
    assert "1 image(s) were skipped as unreadable" in text


def test_dataset_facts_come_from_the_builder_class(tmp_path, monkeypatch):
    builder = get_builder_class("hcrf")
    monkeypatch.setattr(builder, "DESCRIPTION", "Sentinel gastric description.")
    monkeypatch.setattr(builder, "HOMEPAGE", "https://example.org/hcrf")
    monkeypatch.setattr(builder, "TAGS", ("sentinel-tag",))
    monkeypatch.setattr(builder, "MODALITY", "sentinel tissue tiles")
    monkeypatch.setattr(builder, "DEFAULT_RATIOS", (2, 1, 1))
    report = report_with(dataset="hcrf", dataset_config="balanced", split={"strategy": "paper"})
    card = generate_model_card(save_config(tmp_path), report)
    assert "sentinel-tag" in card.data.tags and "histopathology" not in card.data.tags
    assert "[HCRF](https://example.org/hcrf), configuration `balanced`. Sentinel gastric description." in card.text
    assert "images that are not\n  sentinel tissue tiles" in card.text or "not sentinel tissue tiles" in card.text
    assert "train/validation/test 2:1:1 at random" in card.text
    assert "HCRF publishes no patient ids" in card.text  # HAS_PATIENT_IDS = False on the builder
    recipe = next(r for r in PUBLISHED_RECIPES if r.dataset == "hcrf")
    recipe_text = render_recipe_card(recipe).text
    assert "Sentinel gastric description." in recipe_text and "2:1:1" in recipe_text


@pytest.mark.parametrize("kwargs, mode, expected", [
    (dict(backbone="vitb16.laion400m", backbone_pretrained=True), "sft",
     "timm/vit_base_patch16_clip_224.laion400m_e32"),  # open_clip preset, weights mirrored by timm
    (dict(backbone="convnextb.laion400m", backbone_pretrained=True), "lp",
     "laion/CLIP-convnext_base-laion400M-s13B-b51K"),
    (dict(backbone="vitb16.laion2b", backbone_pretrained=True), "sft", "timm/vit_base_patch16_clip_224.laion2b"),
    (dict(backbone="test_vit", backbone_pretrained=True), "sft", "timm/test_vit.r160_in1k"),  # timm's default tag
    (dict(backbone="test_vit", backbone_pretrained=True, backbone_pretrained_file="w.safetensors"), "sft", None),
    (dict(backbone="vitb16.laion2b", backbone_pretrained=True), "scratch", None),
    (dict(backbone="vitb16.laion2b", backbone_pretrained=False), "sft", None),
])
def test_base_model_comes_from_the_librarys_pretrained_cfg(tmp_path, kwargs, mode, expected):
    save_config(tmp_path, **kwargs)
    card = generate_model_card(tmp_path, report_with(finetune_mode=mode))
    assert card.data.base_model == expected


def test_card_without_a_report_has_no_model_index(tmp_path):
    card = generate_model_card(save_config(tmp_path))
    assert card.data.eval_results is None and "model-index" not in card.content
    assert "has not been evaluated" in card.text


def test_paper_reference_only_for_the_published_settings():
    report = {"finetune_mode": "sft", "use_cdtm": True, "backbone_preset": "vitb16.laion2b", "dataset": "breakhis",
              "dataset_config": "malignant_200x"}
    assert paper_reference_for(report) == REFERENCE
    assert paper_reference_for({**report, "dataset_config": "binary_200x"}) is None
    assert paper_reference_for({**report, "use_cdtm": False}) is None
    assert paper_reference_for({**report, "finetune_mode": "lp"}) is None


def test_one_name_per_concept_and_templates_are_package_data():
    from cdtm_hf.training.stages import FINETUNE_MODES

    for gone in ("DATASETS", "DatasetInfo", "RECIPES", "FINETUNE_MODES"):
        assert not any(hasattr(m, gone) for m in (cards, card_sections, hub)), gone
    assert set(card_sections.MODE_DESCRIPTIONS) == set(FINETUNE_MODES)
    folder = resources.files("cdtm_hf.hub").joinpath("templates")
    assert folder.joinpath("model_card.md").is_file() and folder.joinpath("recipe_card.md").is_file()


# The paper's numbers (Tables IV and V), typed in from the paper independently of paper_results.json.
PAPER_NUMBERS = {
    "vitb-laion2b-cdtm-breakhis": ("92.74", "91.08", "94.24", "91.91"),
    "convnextb-laion2b-cdtm-breakhis": ("93.09", "87.14", "92.45", "90.02"),
    "convnextb-laion2b-cdtm-hcrf": ("99.30", "99.29", "99.29", "99.29"),
    "vitb-laion2b-cdtm-hcrf": ("94.32", "94.29", "94.29", "94.30"),
}


def test_recipe_cards_are_current_and_state_the_papers_numbers_and_the_command():
    folders = sorted(p.name for p in (REPO_ROOT / "model_cards").iterdir() if p.is_dir())
    assert folders == sorted(PAPER_NUMBERS) == sorted(r.name for r in PUBLISHED_RECIPES)
    for recipe in PUBLISHED_RECIPES:
        path = REPO_ROOT / "model_cards" / recipe.name / "README.md"
        assert path.read_text(encoding="utf-8") == str(render_recipe_card(recipe)), (
            f"{path} is stale: regenerate with `cdtm-hub recipe-cards`")
        card = ModelCard.load(path)
        assert card.data.eval_results is None and "model-index" not in card.content  # no claim of results
        assert {"cdtm", "histopathology", "medical-imaging"} <= set(card.data.tags)
        assert card.data.base_model == {"vitb16.laion2b": "timm/vit_base_patch16_clip_224.laion2b",
                                        "convnextb.laion2b": "timm/convnext_base.clip_laion2b_augreg"}[recipe.backbone]
        flat = " ".join(card.text.replace("\\\n", " ").split())
        assert recipe_command(recipe) in flat and "--split_strategy paper" in flat
        precision, recall, accuracy, f1 = PAPER_NUMBERS[recipe.name]
        assert f"| {precision} | {recall} | {accuracy} | {f1} |" in card.text
        assert "| Source | Model | Precision | Recall | Accuracy | F1 (Eq. 12) |" in card.text
        assert "THE PAPER'S" in card.text and "We have not yet trained and published this checkpoint" in card.text
        assert ("can appear in both" in card.text) is (recipe.dataset == "hcrf")  # HCRF has no patient ids
