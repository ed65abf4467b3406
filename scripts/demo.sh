#!/usr/bin/env bash
# README command 1: install, then build the bundled MNIST example for the default target (this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/edgeopt build "$@"
