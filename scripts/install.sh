#!/usr/bin/env bash
# Installs the project into .venv from requirements.lock with uv (plain pip refuses tfx 1.16 on
# Python 3.11: tfx declares Requires-Python <3.11 but runs on it; uv ignores that upper bound).
# Idempotent: a second call only re-syncs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
UV_VERSION=0.5.11
if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  UV=("$PYTHON" -m uv)
else
  UV=(uv)
fi
[ -x .venv/bin/python ] || "${UV[@]}" venv --python "$PYTHON" .venv
VIRTUAL_ENV="$PWD/.venv" "${UV[@]}" pip sync --quiet requirements.lock
VIRTUAL_ENV="$PWD/.venv" "${UV[@]}" pip install --quiet --no-deps -e .
