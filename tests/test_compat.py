"""The 0.2 import paths keep working for one release, with a FutureWarning that names the new home."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings

import pytest

MOVED = [
    ("cdtm_hf.configuration_cdtm", "CDTMConfig", "cdtm_hf.core.configuration_cdtm"),
    ("cdtm_hf.modeling_cdtm", "CDTMForImageClassification", "cdtm_hf.core.modeling_cdtm"),
    ("cdtm_hf.backbones", "BackboneAdapter", "cdtm_hf.core.backbones"),
    ("cdtm_hf.image_processing_cdtm", "to_rgb_image", "cdtm_hf.core.image_processing_cdtm"),
    ("cdtm_hf.presets", "BACKBONE_PRESETS", "cdtm_hf.core.presets"),
    ("cdtm_hf.trainer", "CDTMTrainer", "cdtm_hf.training.trainer"),
    ("cdtm_hf.trainer", "CDTMTrainingArguments", "cdtm_hf.training.arguments"),
    ("cdtm_hf.trainer", "prune_optimizer_states", "cdtm_hf.training.output_dir"),
    ("cdtm_hf.training_args", "stage_plan", "cdtm_hf.training.stages"),
    ("cdtm_hf.run_args", "ModelArguments", "cdtm_hf.training.run_arguments"),
    ("cdtm_hf.run_args", "clear_output_dir", "cdtm_hf.training.output_dir"),
    ("cdtm_hf.recipe", "run_finetuning", "cdtm_hf.run"),
    ("cdtm_hf.recipe", "build_model", "cdtm_hf.training.model_builder"),
    ("cdtm_hf.recipe", "attach_transforms", "cdtm_hf.data.transforms"),
    ("cdtm_hf.recipe", "stratified_subset", "cdtm_hf.data.splits"),
    ("cdtm_hf.feature_cache", "build_feature_cache", "cdtm_hf.training.feature_cache"),
    ("cdtm_hf.metrics", "evaluation_report", "cdtm_hf.evaluation.metrics"),
    ("cdtm_hf.reporting", "markdown_table", "cdtm_hf.evaluation.reporting"),
    ("cdtm_hf.efficiency", "efficiency_row", "cdtm_hf.evaluation.efficiency"),
    ("cdtm_hf.explain", "plot_cluster_usage", "cdtm_hf.evaluation.explain_plots"),
    ("cdtm_hf.export", "export_onnx", "cdtm_hf.evaluation.export"),
    ("cdtm_hf.predict", "predict_images", "cdtm_hf.evaluation.predict"),
    ("cdtm_hf.predict", "main", "cdtm_hf.cli.predict"),
    ("cdtm_hf.evaluate_metrics", "CLASSIFICATION_METRIC_PATH", "cdtm_hf.evaluation.evaluate_metrics"),
    ("cdtm_hf.checkpoint", "validate_checkpoint", "cdtm_hf.hub.checkpoint"),
    ("cdtm_hf.cards", "write_model_card", "cdtm_hf.hub.cards"),
    ("cdtm_hf.cards", "split_facts", "cdtm_hf.hub.card_sections"),
    ("cdtm_hf.pipeline", "CDTMImageClassificationPipeline", "cdtm_hf.hub.pipeline"),
    ("cdtm_hf.published", "PUBLISHED_RECIPES", "cdtm_hf.paper.recipes"),
    ("cdtm_hf.published", "write_recipe_cards", "cdtm_hf.hub.recipe_cards"),
    ("cdtm_hf.hub", "push_checkpoint", "cdtm_hf.hub.push"),
    ("cdtm_hf.paper", "paper_row", "cdtm_hf.paper.numbers"),
    ("cdtm_hf.experiments.grid", "RECIPE_FIELDS", "cdtm_hf.experiments.spec"),
    ("cdtm_hf.experiments.runner", "parse_set", "cdtm_hf.cli.grid"),
]


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("old, name, new", MOVED, ids=lambda v: v if "." in str(v) else None)
def test_an_old_path_gives_the_same_object(old, name, new):
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)


def test_old_paths_warn_once_naming_the_new_home():
    code = (
        "import warnings; warnings.simplefilter('error', FutureWarning)\n"
        "import cdtm_hf\n"
        "try:\n    from cdtm_hf.recipe import run_finetuning\nexcept FutureWarning as w:\n    print(w)\n"
        "try:\n    import cdtm_hf.trainer\nexcept FutureWarning as w:\n    print(w)\n"
        "try:\n    from cdtm_hf.data import split_manifest_of\nexcept FutureWarning as w:\n    print(w)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "cdtm_hf.recipe moved to cdtm_hf.run" in out
    assert "cdtm_hf.trainer moved to cdtm_hf.training.trainer" in out
    assert "cdtm_hf.data.split_manifest_of is deprecated" in out and "goes in 0.4" in out


def test_a_moved_module_is_the_new_module_so_patching_the_old_name_patches_it(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old = importlib.import_module("cdtm_hf.metrics")
    import cdtm_hf.evaluation.metrics as new

    assert old is new
    monkeypatch.setattr("cdtm_hf.metrics.METRIC_DISPLAY_NAMES", {"f1": "patched"})
    assert new.METRIC_DISPLAY_NAMES == {"f1": "patched"}


def test_the_new_public_api_imports_without_warnings():
    code = ("import warnings; warnings.simplefilter('error')\n"
            "import cdtm_hf\n"
            "names = [getattr(cdtm_hf, n) for n in cdtm_hf.__all__]\n"
            "import cdtm_hf.data, cdtm_hf.training, cdtm_hf.evaluation, cdtm_hf.hub, cdtm_hf.paper, cdtm_hf.experiments\n"
            "for m in (cdtm_hf.data, cdtm_hf.training, cdtm_hf.evaluation, cdtm_hf.hub, cdtm_hf.paper, "
            "cdtm_hf.experiments):\n    [getattr(m, n) for n in m.__all__]\n"
            "print('ok', len(names))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.startswith("ok"), result.stderr[-2000:]


def test_a_bad_backbone_is_refused_while_the_arguments_are_parsed_before_any_data_library_is_imported(tmp_path):
    """`--backbone not_a_model` through the command line's parser: refused before `datasets` or a builder loads,
    so before any image of a (large) imagefolder is read. From the second check on (timm's and open_clip's names are
    remembered then: tests/test_backbone_names.py) it is refused before torch, transformers or timm are imported too
    (issue 16)."""
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "x.png").write_bytes(b"not an image: it must never be read")
    code = (
        "import sys\n"
        "from cdtm_hf.cli.train import parse\n"
        "try:\n"
        f"    parse(['--backbone', 'not_a_model', '--data_dir', {str(tmp_path / 'data')!r}, '--output_dir', 'o'])\n"
        "except ValueError as err:\n"
        "    print('refused:', err.field, str(err)[:60])\n"
        "print('datasets imported:', 'datasets' in sys.modules, '| builders imported:', 'cdtm_hf.data.breakhis' in "
        "sys.modules)\n"
        "print('imported:', [m for m in ('torch', 'transformers', 'timm', 'open_clip') if m in sys.modules])\n"
    )
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"))
    for first in (True, False):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                             env=env)
        assert "refused: backbone unknown backbone 'not_a_model'" in out.stdout, out.stderr[-2000:]
        assert "datasets imported: False | builders imported: False" in out.stdout
        assert ("imported: []" in out.stdout) is not first, out.stdout  # the first asked timm's own registry
