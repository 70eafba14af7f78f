"""HF flags that were parsed and ignored are honoured or refused; a Hub checkpoint takes --model_revision and --token
(issue 18, item 6). The Hub is a local cache laid out as `snapshot_download` leaves it, and a mocked `HfApi`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from unittest import mock

import huggingface_hub
import pytest

from cdtm_hf.cli.train import main, parse, train
from tests.helpers import write_imagefolder

TINY = ["--backbone", "test_vit", "--backbone_library", "timm", "--no_backbone_pretrained", "--image_size", "32",
        "--num_centers", "3", "--report_to", "none", "--disable_tqdm", "True"]
HUB_ID = "someone/cdtm-tiny"


@pytest.mark.parametrize(("flags", "message"), [
    (["--do_eval", "False"], "do_eval False: a run evaluates on the validation split"),
    (["--no_do_eval"], "do_eval False"),
    (["--do_predict", "False"], "do_predict False: a run always tests the model it keeps"),
    (["--hub_strategy", "checkpoint"], "hub_strategy 'checkpoint': --push_to_hub uploads the kept model once"),
    (["--hub_strategy", "all_checkpoints"], "hub_strategy 'all_checkpoints'"),
    (["--hub_always_push"], "hub_always_push: the run pushes once"),
])
def test_flags_a_run_cannot_honour_are_refused_before_any_data_is_read(tmp_path, capsys, flags, message):
    status = main([*TINY, "--data_dir", str(tmp_path / "no_such_data"), "--output_dir", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_do_eval_and_do_predict_are_on_as_the_run_does():
    training_args = parse([*TINY, "--data_dir", "d", "--output_dir", "o", "--do_eval", "--do_predict"])[2]
    assert training_args.do_eval is True and training_args.do_predict is True
    assert parse([*TINY, "--data_dir", "d", "--output_dir", "o"])[2].do_predict is True


def save_checkpoint(folder: Path, image_size: int) -> list[str]:
    from cdtm_hf import CDTMConfig, CDTMForImageClassification
    from cdtm_hf.core.image_processing_cdtm import CDTMImageProcessor

    config = CDTMConfig(backbone="test_vit", backbone_library="timm", image_size=image_size, num_centers=3,
                        num_labels=2, id2label={0: "benign", 1: "malignant"}, label2id={"benign": 0, "malignant": 1})
    model = CDTMForImageClassification.from_backbone(config, pretrained=False)
    model.save_pretrained(folder)
    CDTMImageProcessor.from_model_config(model.config).save_pretrained(folder)
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def populate_hub_cache(cache: Path, repo_id: str, revisions: dict[str, Path]) -> None:
    """blobs/<sha256>, snapshots/<commit>/<file> -> blob, refs/<revision> -> commit: one snapshot per revision."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    for revision, folder in revisions.items():
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for file in folder.iterdir():
            data = file.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
        (repo / "refs" / revision).write_text(commit)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """`someone/cdtm-tiny` on the (offline) Hub: main at 48 px, branch v1 at 32 px."""
    for revision, size in (("main", 48), ("v1", 32)):
        save_checkpoint(tmp_path / revision, size)
    cache = tmp_path / "hub_cache"
    populate_hub_cache(cache, HUB_ID, {"main": tmp_path / "main", "v1": tmp_path / "v1"})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hub_checkpoint_with_revision_and_token_and_push_to_a_branch(hub, tmp_path, monkeypatch):
    import cdtm_hf.hub.push as push
    import cdtm_hf.run
    from cdtm_hf import CDTMConfig, CDTMForImageClassification

    seen = []
    for cls in (CDTMConfig, CDTMForImageClassification):  # record what reaches the Hub client's callers
        original = cls.from_pretrained.__func__

        def spy(klass, name, *args, _original=original, **kwargs):
            seen.append((klass.__name__, name, kwargs.get("revision"), kwargs.get("token")))
            return _original(klass, name, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    monkeypatch.setattr(cdtm_hf.run, "check_push_ready", lambda repo_id, token=None: token)
    data = write_imagefolder(tmp_path / "data", per_class=(2, 1, 1), size=32)
    out = tmp_path / "out"
    with mock.patch.object(push, "HfApi") as api_cls:
        api = api_cls.return_value
        api.create_repo.return_value = huggingface_hub.RepoUrl("https://huggingface.co/me/cdtm-ft")
        train(["--model_name_or_path", HUB_ID, "--model_revision", "v1", "--token", "hf_secret_read",
              "--report_to", "none", "--disable_tqdm", "True", "--finetune_mode", "fft", "--num_train_epochs", "1",
              "--data_dir", str(data), "--output_dir", str(out), "--push_to_hub", "--hub_model_id", "me/cdtm-ft",
              "--hub_token", "hf_secret_write", "--hub_revision", "experiment-1"])
    assert seen and all(s[1:] == (HUB_ID, "v1", "hf_secret_read") for s in seen)
    recorded = json.loads((out / "run_args.json").read_text())["model"]
    assert recorded["image_size"] == 32 and recorded["model_revision"] == "v1"  # v1's 32 px, not main's 48
    assert recorded["token"] == "<TOKEN>"
    for file in out.rglob("*"):
        if file.is_file() and file.suffix in (".json", ".md", ".txt"):
            assert "hf_secret" not in file.read_text(errors="replace"), file
    api.create_branch.assert_called_once_with("me/cdtm-ft", branch="experiment-1", exist_ok=True)
    assert api.upload_folder.call_args.kwargs["revision"] == "experiment-1"


def test_hub_checkpoint_at_another_revision_is_that_revision(hub, tmp_path):
    data = write_imagefolder(tmp_path / "data", per_class=(2, 1, 1), size=32)
    with pytest.raises(ValueError, match=r"--image_size 32 \(the checkpoint has 48\)"):
        train(["--model_name_or_path", HUB_ID, "--image_size", "32", "--data_dir", str(data),
              "--output_dir", str(tmp_path / "o"), "--report_to", "none"])
    train(["--model_name_or_path", HUB_ID, "--model_revision", "v1", "--image_size", "32", "--do_train", "False",
          "--data_dir", str(data), "--output_dir", str(tmp_path / "e"), "--report_to", "none"])
    assert (tmp_path / "e" / "test_results.json").is_file()
