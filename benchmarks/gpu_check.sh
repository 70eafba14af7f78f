#!/usr/bin/env bash
# GPU check of the staged trainer: a short bf16 SFT (both stages) on ViT-B/16 with random weights, against HF Trainer +
# TimmWrapperForImageClassification, with torch.compile off and on. Prints the step-time ratio and the peak memory.
#
#   bash benchmarks/gpu_check.sh                 # defaults: vit_base_patch16_224, batch 32, 24 steps per stage
#   bash benchmarks/gpu_check.sh --batch 64 --compile off
#
# Exits 0 with a message where no CUDA device is available. Needs no network (random weights).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing measured."
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python benchmarks/gpu_check.py "$@"
