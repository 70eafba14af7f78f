"""`python examples/demo --output_dir demo_out`: the offline demo (docs/demo.md); `--help` lists every option."""

import os
import sys
from pathlib import Path

# Nothing is downloaded: set before any Hugging Face library is imported (an example may; the library never does).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/, so that `demo` is importable

from demo.run import main  # noqa: E402

if __name__ == "__main__":
    main()
