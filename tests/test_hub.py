"""Hub integration (cdtm_hf.hub): pre-flight check, push (mocked HfApi), CLI, remote-code loading.

Nothing here reaches the network: HfApi is replaced by a mock and loading uses local folders or a local HF cache
under HF_HUB_OFFLINE=1. Card content is tested in test_cards.py, folder validation in test_checkpoint.py.
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
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS, RepoUrl
from huggingface_hub.utils import filter_repo_objects
from PIL import Image

from cdtm_hf import CDTMConfig, CDTMForImageClassification, CDTMImageProcessor
from cdtm_hf.cli import hub as hub_cli
from cdtm_hf.hub import push as hub
from cdtm_hf.hub.checkpoint import CheckpointError, checkpoint_files
from cdtm_hf.hub.push import HubUnreachableError, InvalidRepoIdError, MissingTokenError, check_push_ready, push_checkpoint
from tests.helpers import run_without_cdtm_hf

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "org/vitb-laion2b-cdtm-breakhis"
LABELS = ["DC", "LC", "MC", "PC"]
RESULTS = {
    "dataset": "breakhis", "dataset_config": "malignant_200x", "split": {"strategy": "paper"}, "seed": 42,
    "backbone": "test_vit", "backbone_preset": None, "finetune_mode": "sft", "use_cdtm": True, "labels": LABELS,
    "metrics": {"accuracy": 0.9424, "precision": 0.9274, "recall": 0.9108, "f1": 0.9150, "f1_eq12": 0.9191},
    "per_class": {label: {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10 + i}
                  for i, label in enumerate(LABELS)},
    "confusion_matrix": [[9, 1, 0, 0], [1, 9, 1, 0], [0, 0, 11, 1], [0, 1, 0, 12]], "num_test_examples": 46,
    "training": {"finetune_mode": "sft", "optimizer": "adamw_torch_fused", "batch_size": 16, "weight_decay": 1e-3,
                 "image_size": 64, "metric_for_best_model": "f1",
                 "stages": [{"stage": 1, "backbone": "frozen", "epochs": 25.0, "learning_rate": 1e-4},
                            {"stage": 2, "backbone": "trained", "epochs": 50.0, "learning_rate": 1e-5}],
                 "selected_stage": 2},
    "efficiency": {"params_m": 102.88, "added_params": 17074368, "gmacs": 17.93, "lp_trainable_pct": 16.6},
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
        assert hub_cli.main(["push", str(run_copy), REPO_ID, "--token", "hf_test"]) == 0
    assert (run_copy / "README.md").read_text() == "---\nlicense: mit\n---\n# mine\n"
    assert f"pushed {run_copy} to https://huggingface.co/{REPO_ID}" in capsys.readouterr().out
    assert hub_cli.main(["push", str(run_copy), "org/bad--name", "--token", "hf_test"]) == 2
    assert "invalid Hub repo id 'org/bad--name'" in capsys.readouterr().err
    assert hub_cli.main(["card", str(run_copy), "--repo_id", REPO_ID]) == 0
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
        with pytest.raises(MissingTokenError, match="Nothing was trained or uploaded yet"):
            check_push_ready(REPO_ID)  # the pre-flight check before training
    api_cls.assert_not_called()
    assert files_and_bytes(run_copy) == before  # no README.md written, nothing changed


# ---------------------------------------------------------------------------------------------------------------
# The pre-flight check: repo id, token, and that the Hub answers, before any training
WRITE_TOKEN_ANSWER = {"name": "me", "auth": {"accessToken": {"role": "write"}}}


def test_preflight_asks_the_hub_once_and_returns_the_token():
    with mock.patch.object(hub, "HfApi") as api_cls:
        api_cls.return_value.whoami.return_value = WRITE_TOKEN_ANSWER
        assert check_push_ready(REPO_ID, token="hf_test") == "hf_test"
    api_cls.assert_called_once_with(token="hf_test")
    api_cls.return_value.whoami.assert_called_once_with()
    with mock.patch.object(hub, "HfApi") as api_cls:
        with pytest.raises(InvalidRepoIdError, match="contains '--' or '..'"):
            check_push_ready("org/bad--name", token="hf_test")
    api_cls.assert_not_called()  # a bad repo id fails before any network call


def _slow_whoami(*args, **kwargs):
    import time

    time.sleep(5)
    return WRITE_TOKEN_ANSWER


@pytest.mark.parametrize("failure, what", [
    (OfflineModeIsEnabled("offline mode is enabled"), "did not answer (OfflineModeIsEnabled"),
    (ConnectionError("[Errno -2] Name or service not known"), "did not answer (ConnectionError"),
    (_slow_whoami, "did not answer (TimeoutError: no answer within 0.2 s"),
    (HfHubHTTPError("401 Unauthorized", response=mock.Mock(status_code=401, headers={})), "rejected the token"),
    ({"name": "me", "auth": {"accessToken": {"role": "read"}}}, "is read-only"),
])
def test_preflight_fails_before_training_when_the_hub_cannot_take_the_push(monkeypatch, failure, what):
    monkeypatch.setattr(hub, "HUB_TIMEOUT_S", 0.2)
    with mock.patch.object(hub, "HfApi") as api_cls:
        if isinstance(failure, dict):
            api_cls.return_value.whoami.return_value = failure
        else:
            api_cls.return_value.whoami.side_effect = failure
        with pytest.raises(HubUnreachableError) as err:
            check_push_ready(REPO_ID, token="hf_test")
    message = str(err.value)
    assert what in message
    assert REPO_ID in message and hub.constants.ENDPOINT in message  # the repo and the endpoint
    assert "drop --push_to_hub" in message and f"cdtm-hub push OUTPUT_DIR {REPO_ID}" in message  # the remedy
    assert "Nothing was trained or uploaded yet" in message


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


def test_an_incomplete_folder_is_refused_before_anything_is_sent(run_copy):
    (run_copy / "model.safetensors").unlink()
    with mock.patch.object(hub, "HfApi") as api_cls:
        with pytest.raises(CheckpointError, match="has no model.safetensors"):
            push_checkpoint(run_copy, REPO_ID, token="hf_test")
    api_cls.assert_not_called()
    assert not (run_copy / "README.md").exists()


@pytest.mark.parametrize("pickle_name", ["pytorch_model.bin", "model.pt", "weights.pkl"])
def test_pickle_in_the_folder_is_refused(run_copy, pickle_name):
    (run_copy / pickle_name).write_bytes(b"\x80\x04pickle")
    with mock.patch.object(hub, "HfApi") as api_cls:
        with pytest.raises(CheckpointError, match=rf"{pickle_name}: refusing, no pickle is ever pushed or loaded"):
            push_checkpoint(run_copy, REPO_ID, token="hf_test")
    api_cls.assert_not_called()
    assert not (run_copy / "README.md").exists()
