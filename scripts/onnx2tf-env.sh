#!/usr/bin/env bash
# Build (once) the onnx2tf tool venv that converts ONNX models to TensorFlow SavedModels (NCHW -> NHWC).
# onnx2tf needs Python >= 3.12 and pins every dependency exactly, so it gets its own venv, built from
# edgeopt/tools/onnx2tf-requirements.txt under <edgeopt cache root>/tools/onnx2tf-<hash of that file>. Idempotent and safe to run
# concurrently (a lock; the venv is built under a temporary name and renamed when complete).
# Python 3.12 is found as $EDGEOPT_PYTHON312, else python3.12 on PATH, else ~/.pyenv/versions/3.12*/bin/python3.12.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python - <<'PY'
import sys

from edgeopt.convert.onnx2tf import ensure_tool_venv
from edgeopt.errors import EdgeoptError

try:
    python = ensure_tool_venv(lambda line: print(line, file=sys.stderr))
except EdgeoptError as exc:
    print(f"error: {exc.one_line()}", file=sys.stderr)
    sys.exit(exc.exit_code)
print(python)
PY
