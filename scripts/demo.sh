#!/usr/bin/env bash
# Install the demo's extras, then run the offline demo on real tissue: `bash scripts/demo.sh [--output_dir DIR]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh demo
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ "$#" -eq 0 ]; then set -- --output_dir demo_out; fi
exec python3 examples/demo "$@"
