"""Helpers shared by the tests: fixture image folders and a Python process in which cdtm_hf is not importable."""

import os
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image

WITHOUT_CDTM_HF = """
import sys
sys.modules["cdtm_hf"] = None  # any import of cdtm_hf now fails
try:
    import cdtm_hf
    raise SystemExit("cdtm_hf is importable")
except ImportError:
    pass
"""


def write_imagefolder(root, per_class=(6, 3, 3), size=40):
    """`root/{train,validation,test}/{benign,malignant}/*.png`: two classes that differ in brightness."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "validation", "test"), per_class):
        for ci, name in enumerate(("benign", "malignant")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = (rng.random((size, size, 3)) * 100 + ci * 120).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def run_without_cdtm_hf(script, cwd, **env):
    """Run `script` in a fresh interpreter where `import cdtm_hf` fails, offline, with a clean PYTHONPATH."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_TOKEN")}
    clean.update(HF_HUB_OFFLINE="1", **env)
    code = WITHOUT_CDTM_HF + textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=clean, capture_output=True, text=True,
                          timeout=300)
