"""`import cdtm_hf` is cheap and still makes transformers' Auto classes know CDTM (issue 16, `cdtm_hf/_auto.py`).

Each case is a fresh interpreter, since what is imported first is the point. The check reads transformers' mappings
before any cdtm_hf name is touched, so it is the import order alone that registered the classes.
"""

import subprocess
import sys

import pytest

CHECK = (
    "import sys\n"
    "from transformers import CONFIG_MAPPING, AutoConfig, AutoImageProcessor, AutoModelForImageClassification\n"
    "assert 'cdtm' in CONFIG_MAPPING, 'not registered'\n"
    "config = AutoConfig.for_model('cdtm', backbone='test_vit', image_size=32, num_centers=4, num_labels=2)\n"
    "model = AutoModelForImageClassification.from_config(config)\n"
    "model.save_pretrained('ckpt')\n"
    "from cdtm_hf import CDTMImageProcessor\n"
    "CDTMImageProcessor.from_model_config(config).save_pretrained('ckpt')\n"
    "processor = AutoImageProcessor.from_pretrained('ckpt')\n"
    "print('ok', type(config).__module__, type(model).__name__, type(processor).__name__, sorted(config.auto_map))\n"
)


@pytest.mark.parametrize("first", [
    "import cdtm_hf; import transformers",  # the package first, transformers later
    "import transformers; import cdtm_hf",  # transformers first: registered at once
    "import cdtm_hf.core.modeling_cdtm",  # a core module imports transformers part-way through its own import
    "import cdtm_hf; import open_clip",  # a library that imports transformers part-way through its own import
])
def test_the_auto_classes_know_cdtm_whatever_is_imported_first(first, tmp_path):
    result = subprocess.run([sys.executable, "-c", f"{first}\n{CHECK}"], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.stdout.startswith("ok cdtm_hf.core.configuration_cdtm CDTMForImageClassification CDTMImageProcessor"), (
        result.stderr[-3000:])
    assert "['AutoConfig', 'AutoModelForImageClassification']" in result.stdout
    assert {p.name for p in tmp_path.joinpath("ckpt").glob("*.py")} >= {"modeling_cdtm.py", "backbone_names.py"}


def test_importing_the_package_imports_neither_torch_nor_transformers():
    code = ("import sys, time\nstart = time.perf_counter()\nimport cdtm_hf\n"
            "print(sorted(m for m in ('torch', 'transformers', 'timm', 'datasets', 'open_clip') if m in sys.modules),"
            " cdtm_hf.__version__, 'CDTMConfig' in dir(cdtm_hf))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["[]", "0.3.0", "True"], result.stderr[-2000:]
