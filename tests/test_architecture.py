"""The layering of cdtm_hf, read from the source: the folders are the layers, the model core stands alone and no
module imports upwards.

The core (configuration, modeling, backbones, backbone names, image processing, presets) is copied into every saved checkpoint as
remote code, so it must import nothing else of cdtm_hf; every other module imports only its own layer or below.
"""

import ast
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cdtm_hf
from cdtm_hf import CDTMConfig, CDTMForImageClassification, CDTMImageProcessor

PACKAGE = Path(cdtm_hf.__file__).parent
FIXTURES = Path(__file__).parent / "fixtures"

CORE = {"configuration_cdtm", "modeling_cdtm", "backbones", "backbone_names", "image_processing_cdtm", "presets"}
# the layer of each top-level folder (or module) of cdtm_hf; the map in docs/architecture.md
LAYERS = {
    "core": 1,
    **dict.fromkeys(("data", "evaluation", "paper"), 2),
    **dict.fromkeys(("training", "hub"), 3),
    **dict.fromkeys(("run", "experiments"), 4),
    "cli": 5,
}
# package plumbing: `_lazy` (lazy exports) may be imported by every layer; `_compat` (the 0.2 import paths) reaches
# every layer by name, and only `__init__` files, `_lazy` and a module's `__getattr__` (names it lost) import it;
# `_auto` registers the core's classes with transformers' Auto classes (by module name, on import: issue 16)
PLUMBING = {"_lazy", "_compat", "_auto", "logging"}  # logging: the package logger and progress bars (issue 18)


def _module_name(path: Path) -> str:
    """The top-level unit of cdtm_hf a file belongs to: `data` for cdtm_hf/data/x.py, `hub` for cdtm_hf/hub.py."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def _imports_of(path: Path) -> set[str]:
    """The top-level cdtm_hf units a file imports (absolute `cdtm_hf.x` or relative `.x` / `..x`)."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PACKAGE)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = [node.module or ""]
            else:  # resolve the relative import against the file's package
                base = list(rel.parts[:-1])[: len(rel.parts) - node.level]
                module = [*base, *(node.module.split(".") if node.module else [])]
                names = [".".join(["cdtm_hf", *module])] if module else [f"cdtm_hf.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "cdtm_hf" and len(parts) > 1:
                found.add(parts[1])
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_ls_shows_the_layers():
    """Every top-level entry of the package is a layer's folder, `run.py`, or plumbing; the core holds its six."""
    entries = {p.stem for p in PACKAGE.iterdir() if p.name not in ("__init__.py", "__pycache__")}
    assert entries == set(LAYERS) | PLUMBING, sorted(entries ^ (set(LAYERS) | PLUMBING))
    assert {p.stem for p in (PACKAGE / "core").glob("*.py")} - {"__init__"} == CORE
    units = {_module_name(p) for p in SOURCES}
    assert units <= set(LAYERS) | PLUMBING, f"modules without a layer in the map: {sorted(units - set(LAYERS))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_its_own(path):
    unit = _module_name(path)
    for imported in _imports_of(path):
        if imported == "_compat":  # only a package __init__, _lazy, or a module's __getattr__ for names it lost
            shim = "def __getattr__" in path.read_text()
            assert path.name == "__init__.py" or unit == "_lazy" or shim, f"{path} imports the compatibility shims"
            continue
        if unit == "_compat" or imported in ("_lazy", "logging"):  # logging: plumbing every layer may use
            continue
        assert imported in LAYERS, f"{path.name} imports cdtm_hf.{imported}, which has no layer"
        assert LAYERS[imported] <= LAYERS[unit], (
            f"{path.relative_to(PACKAGE)} (layer {LAYERS[unit]}) imports cdtm_hf.{imported} (layer {LAYERS[imported]})"
        )
        if unit == "core":
            assert imported == "core", f"core module {path.name} imports cdtm_hf.{imported} outside the core"
    if unit == "core" and path.name != "__init__.py":  # the remote code: relative imports among its files only
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and (node.module or "") in CORE, f"{path.name}: from {'.' * node.level}{node.module}"


def test_the_demo_is_outside_the_library():
    assert not (PACKAGE / "demo").exists()
    for path in PACKAGE.rglob("*.py"):
        assert "demo" not in _imports_of(path), path


def test_the_import_checker_sees_upward_imports(tmp_path):
    """The checker itself: a relative import from a sub-package and an absolute one are both resolved."""
    sample = PACKAGE / "data" / "_probe_for_test.py"
    try:
        sample.write_text("from ..training.trainer import CDTMTrainer\nimport cdtm_hf.hub\nfrom . import splits\n")
        assert _imports_of(sample) == {"training", "hub", "data"}
    finally:
        sample.unlink()


def test_saved_remote_code_never_mentions_the_demo(tmp_path):
    model = CDTMForImageClassification(CDTMConfig(backbone="test_vit", image_size=32, num_centers=4, num_labels=2))
    model.save_pretrained(tmp_path)
    CDTMImageProcessor.from_model_config(model.config).save_pretrained(tmp_path)
    code = sorted(tmp_path.glob("*.py"))
    assert {p.stem for p in code} == CORE
    for path in code:
        assert "demo" not in path.read_text().lower(), path.name


@pytest.mark.parametrize("name", ["legacy_v0_1_vit", "legacy_v0_1_convnext_mha"])
def test_checkpoints_saved_by_0_1_load_with_identical_logits(name):
    """Tiny checkpoints written by cdtm_hf 0.1.0 (before the core was rebuilt) load and give the same logits."""
    folder = FIXTURES / name
    expected = load_file(folder / "expected_logits.safetensors")
    model = CDTMForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(pixel_values=expected["pixel_values"]).logits
    torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=1e-6)
    processor = CDTMImageProcessor.from_pretrained(folder)
    assert processor.data_config["input_size"] == [3, 32, 32]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    """No module over 400 lines and no function over 80, unless its docstring says why it is one subject."""
    text = path.read_text()
    module_doc = ast.get_docstring(ast.parse(text)) or ""
    assert len(text.splitlines()) <= 400 or "one subject" in module_doc, f"{path.name} has {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            assert length <= 80 or "one subject" in doc, f"{path.name}:{node.name} is {length} lines"
