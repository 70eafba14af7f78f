"""Test settings: nothing reaches the network, and models are tiny."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_OPEN_CLIP = "cdtm-test-vit"


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory):
    """Register a tiny open_clip ViT architecture (open_clip's own config format) and return its name."""
    import open_clip

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
    }
    path = tmp_path_factory.mktemp("open_clip_cfg") / f"{TINY_OPEN_CLIP}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return TINY_OPEN_CLIP


def _hf_logging_state():
    import logging

    import datasets
    from transformers.utils import logging as hf_logging

    return (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled(),
            hf_logging.get_logger().propagate, logging.getLogger("datasets").propagate)


_SESSION_LOGGING_STATE = _hf_logging_state()


@pytest.fixture(autouse=True)
def _hf_logging_state_restored():
    """Each test ends with the libraries' logging state as the session began: a CLI run in-process (the demo's `main`
    in a module fixture, a run's `setup_logging`) sets process-wide verbosity and progress bars, as a command should,
    and that must not leak into the next test."""
    import datasets
    from transformers.utils import logging as hf_logging

    def restore():
        import cdtm_hf.logging

        cdtm_hf.logging.set_verbosity(None)  # cdtm_hf's logger follows transformers' again (a demo run sets its own)
        verbosity, bars, datasets_bars, propagates, datasets_propagates = _SESSION_LOGGING_STATE
        hf_logging.set_verbosity(verbosity)
        (hf_logging.enable_propagation if propagates else hf_logging.disable_propagation)()
        (datasets.utils.logging.enable_propagation if datasets_propagates
         else datasets.utils.logging.disable_propagation)()
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
        (datasets.enable_progress_bars if datasets_bars else datasets.disable_progress_bars)()

    restore()
    yield
    restore()
