"""Hub integration: model cards, checkpoint validation, push (mocked HfApi), remote-code loading, recipe cards.

Nothing here reaches the network: HfApi is replaced by a mock and loading uses local folders or a local HF cache
under HF_HUB_OFFLINE=1.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS, RepoUrl
from huggingface_hub.utils import filter_repo_objects
from PIL import Image

from cdtm_hf import CDTMConfig, CDTMForImageClassification, CDTMImageProcessor
from cdtm_hf import hub
from tests.helpers import run_without_cdtm_hf
from cdtm_hf.hub import (
    RECIPES,
    CheckpointError,
    InvalidRepoIdError,
    MissingTokenError,
    checkpoint_files,
    generate_model_card,
    push_checkpoint,
    recipe_command,
    render_recipe_card,
    validate_checkpoint,
    write_model_card,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "org/vitb-laion2b-cdtm-breakhis"
LABELS = ["DC", "LC", "MC", "PC"]
RESULTS = {
    "dataset": "breakhis", "dataset_config": "malignant_200x", "split_strategy": "paper", "seed": 42,
    "backbone": "test_vit", "backbone_preset": None, "finetune_mode": "sft", "use_cdtm": True, "labels": LABELS,
    "metrics": {"accuracy": 0.9424, "precision": 0.9274, "recall": 0.9108, "f1": 0.9191, "loss": 0.2},
    "per_class": {label: {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10 + i}
                  for i, label in enumerate(LABELS)},
    "confusion_matrix": [[9, 1, 0, 0], [1, 9, 1, 0], [0, 0, 11, 1], [0, 1, 0, 12]], "num_test_examples": 46,
    "training": {"stage1_epochs": 25, "stage2_epochs": 50, "learning_rate": 1e-4, "stage2_learning_rate": 1e-5,
                 "batch_size": 16, "weight_decay": 1e-3, "optimizer": "AdamW", "image_size": 64,
                 "metric_for_best_model": "f1"},
    "efficiency": {"params_m": 102.88, "added_params": 17074368, "gmacs": 17.93, "lp_trainable_pct": 16.6},
}
# The paper's numbers (Tables IV and V), typed in from the paper independently of hub.RECIPES.
PAPER_NUMBERS = {
    "vitb-laion2b-cdtm-breakhis": ("92.74", "91.08", "94.24", "91.91"),
    "convnextb-laion2b-cdtm-breakhis": ("93.09", "87.14", "92.45", "90.02"),
    "convnextb-laion2b-cdtm-hcrf": ("99.30", "99.29", "99.29", "99.29"),
    "vitb-laion2b-cdtm-hcrf": ("94.32", "94.29", "94.29", "94.30"),
}


def tiny_model():
    torch.manual_seed(0)
    config = CDTMConfig(backbone="test_vit", image_size=64, num_centers=6, num_labels=len(LABELS),
                        id2label=dict(enumerate(LABELS)), label2id={x: i for i, x in enumerate(LABELS)})
    return CDTMForImageClassification(config).eval()


def files_and_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A training output dir as the run leaves it: the best model plus Trainer state that must never be pushed."""
    root = tmp_path_factory.mktemp("hub")
    out = root / "run"
    model = tiny_model()
    model.save_pretrained(out)
    CDTMImageProcessor.from_model_config(model.config).save_pretrained(out)
    (out / "test_results.json").write_text(json.dumps(RESULTS, indent=2))
    Image.new("RGB", (8, 8), "white").save(out / "confusion_matrix.png")
    # Trainer leftovers: checkpoints, optimizer/scheduler/RNG state, TensorBoard runs, the pickled training args
    ckpt = out / "checkpoint-10"
    ckpt.mkdir()
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        (ckpt / name).write_bytes(b"x")
    (out / "runs" / "Nov24_22-00-00").mkdir(parents=True)
    (out / "runs" / "Nov24_22-00-00" / "events.out.tfevents.1.host").write_bytes(b"x")
    (out / "training_args.bin").write_bytes(b"pickle")
    (out / "all_results.json").write_text("{}")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(pixel_values=x).logits
    torch.save(x, root / "x.pt")
    return {"root": root, "dir": out, "x": x, "logits": logits}


@pytest.fixture
def run_copy(run_dir, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run_dir["dir"], dst)
    return dst


def expected_upload(folder: Path) -> list[str]:
    code = sorted(p.name for p in folder.glob("*.py"))  # what save_pretrained copied: the remote code
    assert {"configuration_cdtm.py", "modeling_cdtm.py", "image_processing_cdtm.py"} <= set(code)
    fixed = ["README.md", "config.json", "confusion_matrix.png", "model.safetensors", "preprocessor_config.json",
             "test_results.json"]
    return sorted(fixed + code)


# ---------------------------------------------------------------------------------------------------------------
# Model card
def test_card_parses_back_and_model_index_equals_test_results(run_copy):
    reference = {"precision": 92.74, "recall": 91.08, "accuracy": 94.24, "f1": 91.91, "table": "Table IV",
                 "model": "ViT-B-CDTM-SFT"}
    path = write_model_card(run_copy, repo_id=REPO_ID, paper_reference=reference)
    assert path == run_copy / "README.md"
    card = ModelCard.load(path)
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-classification"
    assert data.license == "apache-2.0" and data.datasets == ["breakhis"]
    assert {"cdtm", "histopathology", "medical-imaging", "timm", "image-classification"} <= set(data.tags)
    assert data.model_name == "vitb-laion2b-cdtm-breakhis"
    got = {r.metric_type: r.metric_value for r in data.eval_results}
    expected = json.loads((run_copy / "test_results.json").read_text())["metrics"]
    assert got == {k: expected[k] for k in ("accuracy", "precision", "recall", "f1")}
    assert {(r.dataset_type, r.dataset_config, r.dataset_split) for r in data.eval_results} == {
        ("breakhis", "malignant_200x", "test")}
    assert all(r.source_name is None for r in data.eval_results)  # ours, not copied from anywhere
    text = card.text
    assert "94.24 %" in text and "91.91 %" in text  # our results, as percentages
    assert "[!WARNING]" in text and "Patient leakage" in text
    assert "![Confusion matrix on the test split](confusion_matrix.png)" in text
    assert "## Reported in the paper (not this checkpoint)" in text and "the paper's numbers" in text
    assert "| 102.88 | 17,074,368 | 17.93 | 16.6 % |" in text
    assert "| 1 | CDTM + head (backbone frozen) | 25 | 0.0001 |" in text
    assert f'AutoModelForImageClassification.from_pretrained("{REPO_ID}", trust_remote_code=True)' in text
    assert f'pipeline("image-classification", model="{REPO_ID}", trust_remote_code=True)' in text
    assert "not** be used for diagnosis" in text
    assert "Embracing Large Natural Data" in text and "doi     = {10.1109/JBHI.2023.3343518}" in text
    # the paper's numbers never leak into the metadata
    assert "92.74" not in card.content.split("\n---\n", 1)[0]


def test_card_for_a_real_preset_patient_split_and_multi_label(tmp_path):
    CDTMConfig(backbone="vitb16.laion2b", backbone_pretrained=True, num_labels=2,
               problem_type="multi_label_classification",
               id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1}).save_pretrained(tmp_path)
    results = {"dataset": "breakhis", "dataset_config": "binary_200x", "split_strategy": "patient", "seed": 1,
               "finetune_mode": "sft", "use_cdtm": True, "labels": ["a", "b"],
               "metrics": {"accuracy": 0.5, "precision": 0.25, "recall": 0.75, "f1": 0.375, "auroc": 0.625}}
    card = generate_model_card(tmp_path, results, paper_reference={"f1": 91.91})
    assert card.data.base_model == "timm/vit_base_patch16_clip_224.laion2b"
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {
        "accuracy": 0.5, "precision": 0.25, "recall": 0.75, "f1": 0.375, "roc_auc": 0.625}
    assert "pretrained on LAION-2B" in card.text
    assert "Patient leakage" not in card.text and "patient-grouped split" in card.text
    assert "not directly comparable" in card.text
    assert "Confusion matrix" not in card.text
    assert "Measure GMACs with `python -m cdtm_hf.efficiency --backbone vitb16.laion2b`" in card.text


def test_card_for_other_data_sets_and_runs_from_scratch(tmp_path):
    CDTMConfig(backbone="vitb16.laion2b", backbone_pretrained=True, num_labels=2).save_pretrained(tmp_path)
    results = {"dataset": "imagefolder", "split_strategy": "patient", "finetune_mode": "scratch",
               "metrics": {"accuracy": 0.5, "f1": 0.5, "auroc": float("nan")}}
    card = generate_model_card(tmp_path, results)
    assert "histopathology" not in card.data.tags and card.data.base_model is None  # no pretrained weights used
    assert [r.metric_type for r in card.data.eval_results] == ["accuracy", "f1"]  # NaN never reaches the Hub
    assert "split strategy `patient`." in card.text and "pretraining: none" in card.text
    card = generate_model_card(tmp_path, {**results, "dataset": "chexpert", "finetune_mode": "lp"})
    assert {"radiology", "chest-x-ray"} <= set(card.data.tags) and "histopathology" not in card.data.tags
    assert card.data.base_model == "timm/vit_base_patch16_clip_224.laion2b"


def test_card_without_test_results_has_no_model_index(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    card = generate_model_card(tmp_path)
    assert card.data.eval_results is None and "model-index" not in card.content
    assert "has not been evaluated" in card.text


# ---------------------------------------------------------------------------------------------------------------
# Push (HfApi mocked at the library boundary)
def test_push_uploads_exactly_the_checkpoint_files(run_copy):
    with mock.patch.object(hub, "HfApi") as api_cls:
        api = api_cls.return_value
        api.create_repo.return_value = RepoUrl(f"https://huggingface.co/{REPO_ID}")
        url = push_checkpoint(run_copy, REPO_ID, token="hf_test", private=True)
    assert url == f"https://huggingface.co/{REPO_ID}"
    api_cls.assert_called_once_with(token="hf_test")
    api.create_repo.assert_called_once_with(REPO_ID, exist_ok=True, private=True)
    api.upload_folder.assert_called_once()
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == REPO_ID and Path(kwargs["folder_path"]) == run_copy
    # resolve the upload list the way upload_folder does (every file under the folder, filtered by the patterns)
    on_disk = [p.relative_to(run_copy).as_posix() for p in sorted(run_copy.glob("**/*")) if p.is_file()]
    uploaded = sorted(filter_repo_objects(on_disk, allow_patterns=kwargs["allow_patterns"],
                                          ignore_patterns=kwargs["ignore_patterns"] + DEFAULT_IGNORE_PATTERNS))
    assert uploaded == expected_upload(run_copy) == checkpoint_files(run_copy)
    assert not [f for f in uploaded if f.endswith((".bin", ".pt", ".pth")) or "/" in f]
    card = ModelCard.load(run_copy / "README.md")  # generated because it was missing
    assert card.data.model_name == "vitb-laion2b-cdtm-breakhis"


def test_push_keeps_an_existing_card_and_the_cli_reports_errors(run_copy, capsys):
    (run_copy / "README.md").write_text("---\nlicense: mit\n---\n# mine\n")
    with mock.patch.object(hub, "HfApi") as api_cls:
        api_cls.return_value.create_repo.return_value = RepoUrl(f"https://huggingface.co/{REPO_ID}")
        assert hub.main(["push", str(run_copy), REPO_ID, "--token", "hf_test"]) == 0
    assert (run_copy / "README.md").read_text() == "---\nlicense: mit\n---\n# mine\n"
    assert f"pushed {run_copy} to https://huggingface.co/{REPO_ID}" in capsys.readouterr().out
    assert hub.main(["push", str(run_copy), "org/bad--name", "--token", "hf_test"]) == 2
    assert "invalid Hub repo id 'org/bad--name'" in capsys.readouterr().err
    assert hub.main(["card", str(run_copy), "--repo_id", REPO_ID]) == 0
    assert ModelCard.load(run_copy / "README.md").data.model_name == "vitb-laion2b-cdtm-breakhis"


# ---------------------------------------------------------------------------------------------------------------
# Loading what was pushed, where cdtm_hf is not importable: from the folder and from an offline HF cache
def populate_hf_cache(cache: Path, repo_id: str, folder: Path, files: list[str]) -> None:
    """Lay the files out the way snapshot_download does: blobs/<hash>, snapshots/<commit>/<file> -> blob, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name in files:
        data = (folder / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture(scope="module")
def loaded_elsewhere(run_dir):
    root = run_dir["root"]
    pushed = root / "pushed"
    pushed.mkdir()
    files = checkpoint_files(run_dir["dir"])
    for name in files:
        shutil.copy2(run_dir["dir"] / name, pushed / name)
    populate_hf_cache(root / "hf_cache", REPO_ID, pushed, files)
    script = f"""
import json
import torch
torch.set_num_threads({torch.get_num_threads()})
from transformers import AutoModelForImageClassification, pipeline
x = torch.load({str(root / 'x.pt')!r}, weights_only=True)
for source, name in (({str(pushed)!r}, "folder"), ({REPO_ID!r}, "cache")):
    model = AutoModelForImageClassification.from_pretrained(source, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        torch.save(model(pixel_values=x).logits, {str(root)!r} + f"/logits_{{name}}.pt")
classifier = pipeline("image-classification", model={REPO_ID!r}, trust_remote_code=True)
image = (x[0].permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).numpy()
from PIL import Image
print("LABELS", json.dumps(sorted(p["label"] for p in classifier(Image.fromarray(image), top_k=4))))
"""
    result = run_without_cdtm_hf(
        script, root, TRANSFORMERS_OFFLINE="1", HF_HUB_CACHE=str(root / "hf_cache"), HF_HOME=str(root / "hf_home"),
        HF_MODULES_CACHE=str(root / "modules"),
    )
    return result


def test_pushed_folder_loads_with_trust_remote_code_without_cdtm_hf(run_dir, loaded_elsewhere):
    assert loaded_elsewhere.returncode == 0, loaded_elsewhere.stderr[-3000:]
    assert torch.equal(torch.load(run_dir["root"] / "logits_folder.pt", weights_only=True), run_dir["logits"])


def test_loads_from_offline_hf_cache_by_repo_id(run_dir, loaded_elsewhere):
    assert loaded_elsewhere.returncode == 0, loaded_elsewhere.stderr[-3000:]
    assert torch.equal(torch.load(run_dir["root"] / "logits_cache.pt", weights_only=True), run_dir["logits"])
    assert f"LABELS {json.dumps(sorted(LABELS))}" in loaded_elsewhere.stdout


# ---------------------------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing touched
def test_push_without_token_fails_before_touching_anything(run_copy, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    before = files_and_bytes(run_copy)
    with mock.patch.object(hub, "get_token", return_value=None), mock.patch.object(hub, "HfApi") as api_cls:
        with pytest.raises(MissingTokenError, match=r"hf auth login.*HF_TOKEN") as err:
            push_checkpoint(run_copy, REPO_ID)
    assert "Nothing was uploaded" in str(err.value)
    api_cls.assert_not_called()
    assert files_and_bytes(run_copy) == before  # no README.md written, nothing changed
    with mock.patch.object(hub, "get_token", return_value=None):  # the pre-flight check before training
        with pytest.raises(MissingTokenError, match="hf auth login"):
            hub.check_push_ready(REPO_ID)
        with pytest.raises(InvalidRepoIdError, match="contains '--' or '..'"):
            hub.check_push_ready("org/bad--name", token="hf_test")
        assert hub.check_push_ready(REPO_ID, token="hf_test") == "hf_test"


@pytest.mark.parametrize("repo_id, rule", [
    ("org/bad--name", "contains '--' or '..'"),
    ("a/b/c", "more than one '/'"),
    ("org/my model", "character(s) ' '"),
    ("org/name.git", "ends with '.git'"),
    ("org/-name", "starts or ends with '-' or '.'"),
    ("org/" + "x" * 97, "the maximum is 96"),
])
def test_invalid_repo_id_names_the_rule(run_copy, repo_id, rule):
    before = files_and_bytes(run_copy)
    with mock.patch.object(hub, "HfApi") as api_cls:
        with pytest.raises(InvalidRepoIdError, match="invalid Hub repo id") as err:
            push_checkpoint(run_copy, repo_id, token="hf_test")
    assert rule in str(err.value)
    api_cls.assert_not_called()
    assert files_and_bytes(run_copy) == before


def test_missing_weights_config_or_remote_code_is_named(run_copy):
    (run_copy / "backbones.py").unlink()
    with pytest.raises(CheckpointError, match=r"lacks the remote-code file\(s\) backbones.py"):
        validate_checkpoint(run_copy)
    (run_copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        push_checkpoint(run_copy, REPO_ID, token="hf_test")
    (run_copy / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        validate_checkpoint(run_copy)
    with pytest.raises(CheckpointError, match="does not exist"):
        validate_checkpoint(run_copy / "nope")


@pytest.mark.parametrize("pickle_name", ["pytorch_model.bin", "model.pt", "weights.pkl"])
def test_pickle_in_the_folder_is_refused(run_copy, pickle_name):
    (run_copy / pickle_name).write_bytes(b"\x80\x04pickle")
    with mock.patch.object(hub, "HfApi") as api_cls:
        with pytest.raises(CheckpointError, match=rf"{pickle_name}: refusing, no pickle is ever pushed or loaded"):
            push_checkpoint(run_copy, REPO_ID, token="hf_test")
    api_cls.assert_not_called()
    assert not (run_copy / "README.md").exists()


# ---------------------------------------------------------------------------------------------------------------
# The published recipes' cards
def test_recipe_cards_state_the_papers_numbers_and_the_command():
    folders = sorted(p.name for p in (REPO_ROOT / "model_cards").iterdir() if p.is_dir())
    assert folders == sorted(PAPER_NUMBERS) == sorted(r.name for r in RECIPES)
    for recipe in RECIPES:
        path = REPO_ROOT / "model_cards" / recipe.name / "README.md"
        card = ModelCard.load(path)
        assert path.read_text(encoding="utf-8") == str(render_recipe_card(recipe)), (
            f"{path} is stale: regenerate with `python -m cdtm_hf.hub recipes`")
        assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-classification"
        assert card.data.eval_results is None and "model-index" not in card.content  # no claim of results
        assert {"cdtm", "histopathology", "medical-imaging"} <= set(card.data.tags)
        flat = " ".join(card.text.replace("\\\n", " ").split())
        assert recipe_command(recipe) in flat
        assert f"--hub_model_id org/{recipe.name}" in flat and "--split_strategy paper" in flat
        assert "--dataset hcrf" in flat if "hcrf" in recipe.name else "--dataset breakhis" in flat
        precision, recall, accuracy, f1 = PAPER_NUMBERS[recipe.name]
        assert f"| {precision} | {recall} | {accuracy} | {f1} |" in card.text
        assert "THE PAPER'S" in card.text and "(the paper's numbers)" in card.text
        assert "We have not yet trained and published this checkpoint" in card.text
