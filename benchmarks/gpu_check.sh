#!/usr/bin/env bash
# GPU check of the staged trainer: a short bf16 SFT (both stages) on ViT-B/16 with random weights, against HF Trainer +
# TimmWrapperForImageClassification, with torch.compile off and on. Prints the step-time ratio and the peak memory.
#
#   bash benchmarks/gpu_check.sh                 # defaults: vit_base_patch16_224, batch 32, 24 steps per stage
#   bash benchmarks/gpu_check.sh --batch 64 --compile off
#
# Then the large-backbone case (issue 20): ViT-L/16 with UNI's architecture at random weights, SFT stage 2 full vs
# LoRA vs full with gradient checkpointing: peak memory and step time (GPU_CHECK_LARGE=0 skips it;
# GPU_CHECK_LARGE_ARGS passes its own arguments, e.g. "--batch 16 --large_backbone virchow2").
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
if [ "${GPU_CHECK_LARGE:-1}" != "0" ]; then
    # shellcheck disable=SC2086
    python benchmarks/gpu_check.py --large ${GPU_CHECK_LARGE_ARGS:-}
fi
