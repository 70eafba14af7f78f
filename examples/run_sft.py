#!/usr/bin/env python
"""Fine-tune a natural-image backbone with CDTM on a medical image set: scratch, LP, FFT or staged (SFT).

    accelerate launch examples/run_sft.py --backbone vitb16.laion2b --dataset breakhis \
        --dataset_config malignant_200x --data_dir BreaKHis_v1.tar.gz --finetune_mode sft --output_dir out/vitb-sft

Evaluate a saved model without training (HF style):

    python examples/run_sft.py --do_train False --model_name_or_path out/vitb-sft --dataset breakhis ... \
        --output_dir out/vitb-sft-rescored

Also runs as plain `python examples/run_sft.py ...`, with one JSON/YAML file of arguments, or as the installed
`cdtm-train`; this file is a shell over `cdtm_hf.cli.train`. Every option: `python examples/run_sft.py --help`.
Several GPUs or machines, FSDP, DeepSpeed, two CPU processes: `accelerate launch --config_file
examples/accelerate/<setup>.yaml examples/run_sft.py ...` (docs/distributed.md).
"""

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from cdtm_hf.cli.train import build_parser, parse  # noqa: E402
from cdtm_hf.cli.train import train as main  # noqa: E402  (returns the test_results.json dict)

__all__ = ["build_parser", "main", "parse"]

if __name__ == "__main__":
    from cdtm_hf.cli.train import main as cli_main  # one line and exit 2 on bad input (issue 17)

    sys.exit(cli_main(sys.argv[1:]))
