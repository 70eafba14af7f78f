"""The one check of a backbone name without importing the libraries (issue 16): timm's and open_clip's registries,
remembered per install in `<HF_HOME>/cdtm_hf/model_names`, answer as the libraries themselves do."""

import json
import os
import subprocess
import sys

import open_clip
import pytest
import timm
from huggingface_hub import constants

from cdtm_hf.core import backbone_names
from cdtm_hf.core.backbone_names import backbone_problem, registry_names

ODD_NAMES = ["not_a_model", "", ".", "vit_base_patch16_224.", ".augreg_in21k", "vit_base_patch16_224.augreg_in21k",
             "resnet50.a1_in1k", "hf-hub:timm/vit_base_patch16_224", "timm/vit_base_patch16_224", "ViT-B-16",
             "coca_ViT-B-32", "vit-base-patch16-224", "RESNET50", "vitb16.laion3b"]


def _run(code: str, hf_home, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def test_the_remembered_names_answer_as_timm_and_open_clip_do(tmp_path):
    """Every timm architecture, tagged names and odd strings: the answer from the remembered file (in a process that
    has not imported timm, open_clip or torch) is `timm.is_model`'s and `open_clip.list_models`' own."""
    names = [*timm.list_models(), *open_clip.list_models(), *ODD_NAMES]
    (tmp_path / "names.json").write_text(json.dumps(names))
    warm = _run("from cdtm_hf.core.backbone_names import backbone_problem; print(backbone_problem('not_a_model'))",
                tmp_path / "hf", tmp_path)  # the first check asks the libraries and remembers their names
    assert "unknown backbone 'not_a_model'" in warm.stdout, warm.stderr[-2000:]
    assert {p.name for p in (tmp_path / "hf" / "cdtm_hf" / "model_names").iterdir()} == {"timm.json", "open_clip.json"}
    code = (
        "import json, sys\n"
        "from cdtm_hf.core.backbone_names import is_open_clip_model, is_timm_model\n"
        "names = json.load(open('names.json'))\n"
        "answers = {n: [is_timm_model(n), is_open_clip_model(n)] for n in names}\n"
        "json.dump({'answers': answers, 'imported': [m for m in ('torch', 'timm', 'open_clip', 'transformers') "
        "if m in sys.modules]}, open('answers.json', 'w'))\n"
    )
    result = _run(code, tmp_path / "hf", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads((tmp_path / "answers.json").read_text())
    assert out["imported"] == []
    clip_models = set(open_clip.list_models())
    expected = {n: [timm.is_model(n), n in clip_models] for n in names}
    assert out["answers"] == expected
    assert sum(a[0] for a in expected.values()) > 1000 and sum(a[1] for a in expected.values()) > 50  # not vacuous


@pytest.fixture
def fake_library(tmp_path, monkeypatch):
    """An installed package `cdtm_fakelib` whose registry lists `NAMES`, and an empty HF_HOME."""
    package = tmp_path / "site" / "cdtm_fakelib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("NAMES = ['a', 'b']\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(backbone_names.REGISTRY_LISTS, "cdtm_fakelib", lambda module: module.NAMES)
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delitem(sys.modules, "cdtm_fakelib", raising=False)
    yield package
    sys.modules.pop("cdtm_fakelib", None)


def test_the_file_answers_until_the_install_changes(fake_library, monkeypatch):
    memo = fake_library.parents[1] / "hf" / "cdtm_hf" / "model_names" / "cdtm_fakelib.json"
    assert registry_names("cdtm_fakelib") == {"a", "b"}
    assert json.loads(memo.read_text())["names"] == ["a", "b"]

    def never(module):
        raise AssertionError("the registry was asked although the remembered names still hold")

    monkeypatch.setitem(backbone_names.REGISTRY_LISTS, "cdtm_fakelib", never)
    assert registry_names("cdtm_fakelib") == {"a", "b"}  # from the file

    monkeypatch.setitem(backbone_names.REGISTRY_LISTS, "cdtm_fakelib", lambda module: module.NAMES)
    init = fake_library / "__init__.py"
    init.write_text("NAMES = ['a', 'b', 'c']\n")  # an upgrade: a model more
    stat = init.stat()
    os.utime(init, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    sys.modules.pop("cdtm_fakelib", None)
    assert registry_names("cdtm_fakelib") == {"a", "b", "c"}
    assert json.loads(memo.read_text())["names"] == ["a", "b", "c"]

    (fake_library / "models.py").write_text("")  # a file more, same times: still a new key
    os.utime(fake_library / "models.py", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    monkeypatch.setitem(backbone_names.REGISTRY_LISTS, "cdtm_fakelib", lambda module: ["z"])
    assert registry_names("cdtm_fakelib") == {"z"}


def test_a_broken_or_unwritable_file_is_no_error(fake_library, monkeypatch, tmp_path):
    memo_dir = tmp_path / "hf" / "cdtm_hf" / "model_names"
    memo_dir.mkdir(parents=True)
    (memo_dir / "cdtm_fakelib.json").write_text('{"key": [')  # half-written by a process that died
    assert registry_names("cdtm_fakelib") == {"a", "b"}
    assert json.loads((memo_dir / "cdtm_fakelib.json").read_text())["names"] == ["a", "b"]

    (tmp_path / "not_a_folder").write_text("")
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "not_a_folder"))  # cannot hold the folder
    assert registry_names("cdtm_fakelib") == {"a", "b"}
    assert (tmp_path / "not_a_folder").read_text() == ""


def test_an_absent_library_says_what_to_install(monkeypatch):
    monkeypatch.setitem(backbone_names.INSTALL_HINTS, "cdtm_no_such_lib", "install it: pip install cdtm-no-such-lib")
    with pytest.raises(ImportError, match="pip install cdtm-no-such-lib"):
        registry_names("cdtm_no_such_lib")


def test_the_check_is_the_same_with_the_libraries_imported():
    """In this process timm and open_clip are imported: the check asks them directly (models registered at run time
    count), with the messages the command line prints."""
    assert backbone_problem("vit_base_patch16_224.augreg_in21k") is None
    assert backbone_problem("ViT-B-16", "open_clip") is None
    assert "set backbone_library open_clip" in backbone_problem("ViT-B-16")
    assert "unknown backbone 'vitb16.laion3b'" in backbone_problem("vitb16.laion3b")
    assert "did you mean 'vitb16.laion2b'" in backbone_problem("vitb16.laion3b")


def test_remember_registries_writes_every_installed_library(fake_library, tmp_path):
    counts = backbone_names.remember_registries()
    assert counts["cdtm_fakelib"] == 2 and counts["timm"] == len(timm.list_models())
    assert counts["open_clip"] == len(open_clip.list_models())
    assert {p.stem for p in (tmp_path / "hf" / "cdtm_hf" / "model_names").glob("*.json")} == {
        "cdtm_fakelib", "open_clip", "timm"}


def test_the_command_line_checks_the_backbone_first_as_the_arguments_would(tmp_path, capsys):
    """`cdtm-train` runs `backbone_problem` on the given values before building its parser; what the early check
    cannot judge (--help, a checkpoint's backbone, a bad --backbone_library) is the full parser's, as before."""
    from cdtm_hf.cli.train import parse
    from cdtm_hf.core.configuration_cdtm import FieldError

    with pytest.raises(FieldError, match="unknown backbone 'not_clip': not a preset .* nor an open_clip model") as err:
        parse(["--backbone-library", "open_clip", "--backbone=not_clip", "--output_dir", "o"])  # dashed, `=` forms
    assert err.value.field == "backbone"
    (tmp_path / "args.yaml").write_text("backbone: vitb16.laion3b\noutput_dir: o\n")
    with pytest.raises(FieldError, match="did you mean 'vitb16.laion2b'"):
        parse([str(tmp_path / "args.yaml")])
    with pytest.raises(FieldError, match="backbone_library 'nope' is not one of"):
        parse(["--backbone", "not_a_model", "--backbone_library", "nope", "--output_dir", "o"])
    with pytest.raises(SystemExit) as help_exit:
        parse(["--backbone", "not_a_model", "--help"])
    assert help_exit.value.code == 0 and "--backbone" in capsys.readouterr().out
