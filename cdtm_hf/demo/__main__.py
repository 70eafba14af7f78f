"""``python -m cdtm_hf.demo --output_dir demo_out``: the offline demo (see :mod:`cdtm_hf.demo.run`)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before the Hugging Face libraries read it (run.py re-applies it)
os.environ["HF_DATASETS_OFFLINE"] = "1"

from cdtm_hf.demo.run import main  # noqa: E402

if __name__ == "__main__":
    main()
