#!/usr/bin/env bash
# Static checks (seconds): the import contracts of the package layout, lint, types. Configured in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "check: lint-imports (layers and independence contracts)" >&2
.venv/bin/lint-imports --no-cache
echo "check: ruff" >&2
.venv/bin/ruff check --no-cache edgeopt tests bench
echo "check: mypy" >&2
.venv/bin/mypy
