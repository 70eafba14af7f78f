#!/usr/bin/env python
"""The offline CDTM demo: real ImageNet weights -> real histology tiles, every fine-tuning mode, a reload.

    python examples/demo.py --output_dir demo_out          # same as: python -m cdtm_hf.demo --output_dir demo_out
    python examples/demo.py --output_dir demo_out --quick  # a smoke run

Every option: `python examples/demo.py --help`. What it shows: docs/demo.md.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded; set before any Hugging Face import
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if __name__ == "__main__":
    from cdtm_hf.demo.run import main

    main()
