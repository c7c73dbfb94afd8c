#!/usr/bin/env bash
# Installs the project into .venv from requirements.lock with uv (plain pip refuses tfx 1.16 on
# Python 3.11: tfx declares Requires-Python <3.11 but runs on it; uv ignores that upper bound).
# Idempotent: a second call only re-syncs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
UV_VERSION=0.5.11
if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  UV=("$PYTHON" -m uv)
else
  UV=(uv)
fi
[ -x .venv/bin/python ] || "${UV[@]}" venv --python "$PYTHON" .venv
# --python, not VIRTUAL_ENV: run as `python -m uv` (a fresh machine), uv 0.5 prefers the interpreter
# that spawned it over VIRTUAL_ENV and would install into the system Python, leaving .venv empty.
VENV_PYTHON="$PWD/.venv/bin/python"
"${UV[@]}" pip sync --quiet --python "$VENV_PYTHON" requirements.lock
"${UV[@]}" pip install --quiet --python "$VENV_PYTHON" --no-deps -e .
# Fail here, not in the first import: the environment must hold the locked stack and this project
# (imported first, as every entry point does: core/environment.py). TensorFlow's start-up log is
# not needed for that (a failed import still prints its traceback).
TF_CPP_MIN_LOG_LEVEL=3 "$VENV_PYTHON" -c "import pipeline, tfx, tensorflow, tf_keras"
