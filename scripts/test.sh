#!/usr/bin/env bash
# README command 2: install, check the architecture, lint and types, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-deps.sh
bash scripts/check.sh
exec .venv/bin/python -m pytest "$@"
