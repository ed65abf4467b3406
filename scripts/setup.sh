#!/usr/bin/env bash
# Create .venv with the pinned dependencies (idempotent: re-runs only when requirements change).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.edgeopt-installed
want=$(cat requirements.txt constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import edgeopt" 2>/dev/null; then
  exit 0
fi
echo "setup: creating .venv and installing pinned dependencies (about a minute on a fresh machine)" >&2
"$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=24"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
# the optional extra the tests exercise (build matrices on Ray), from the same lock
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[ray]' -c constraints.txt
.venv/bin/python -m pip check >&2
echo "$want" > "$stamp"
