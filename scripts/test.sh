#!/usr/bin/env bash
# Install everything the test suite uses, then run it offline: `bash scripts/test.sh [pytest arguments]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test onnx demo
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
set +e
python3 -m pytest -q tests "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$status"
