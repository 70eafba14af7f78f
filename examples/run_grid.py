#!/usr/bin/env python
"""Run an experiment grid: every cell x seed through run_finetuning, then results.csv and results.md.

    python examples/run_grid.py examples/grids/cdtm_table8.yaml
    python examples/run_grid.py examples/grids/cdtm_table8.yaml --dry_run          # validate, list cells
    python examples/run_grid.py examples/grids/cdtm_table6.yaml --set num_train_epochs=1 --max_cells 2
    accelerate launch examples/run_grid.py examples/grids/transfer_study.yaml --only 'dinov2*'

Run it again after an interruption: finished runs are skipped, interrupted ones resume from their last
checkpoint. Every option: `python examples/run_grid.py --help`; the grid format: docs/experiments.md. This file is a
shell over `cdtm_hf.cli.grid` (installed as `cdtm-grid`).
"""

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None):
    from cdtm_hf.cli.grid import main as grid_main

    return grid_main(argv)


if __name__ == "__main__":
    sys.exit(main())
