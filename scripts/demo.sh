#!/usr/bin/env bash
# README command 1: install, build the bundled MNIST example for the default target (this machine), benchmark it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/edgeopt build "$@"
.venv/bin/edgeopt bench --target local
