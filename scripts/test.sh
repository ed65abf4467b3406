#!/usr/bin/env bash
# README command 2: install, check the architecture, lint and types, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-deps.sh
bash scripts/check.sh
# ONNX -> TFLite (onnx2tf) runs in its own Python 3.12 venv: built once here (~3 min cold, cached by its pins)
bash scripts/onnx2tf-env.sh >/dev/null
exec .venv/bin/python -m pytest "$@"
