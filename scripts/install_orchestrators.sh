#!/usr/bin/env bash
# Installs the project with Airflow and the Kubeflow Pipelines SDK into .venv-orchestrators, from
# requirements-orchestrators.lock, with uv; .venv (scripts/install.sh) is left as it is.
# Idempotent: a second call only re-syncs.
#
#   bash scripts/install_orchestrators.sh          # install or re-sync .venv-orchestrators
#   bash scripts/install_orchestrators.sh --lock   # regenerate requirements-orchestrators.lock
#
# The orchestrator lock is requirements.lock plus what Airflow and kfp add: every version of
# requirements.lock is a constraint except those in RELAXED, which Airflow 2.10 cannot use
# (werkzeug 3, rich 14+); tests/test_orchestrators.py checks that nothing else differs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
UV_VERSION=0.5.11
RELAXED=(werkzeug rich)
if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  UV=("$PYTHON" -m uv)
else
  UV=(uv)
fi

if [ "${1:-}" = "--lock" ]; then
  constraints=$(mktemp)
  trap 'rm -f "$constraints"' EXIT
  relaxed=()
  for name in "${RELAXED[@]}"; do relaxed+=(-e "^$name=="); done
  grep -v "${relaxed[@]}" requirements.lock > "$constraints"
  "${UV[@]}" pip compile --quiet requirements-orchestrators.in -c "$constraints" \
    --python-version 3.11 \
    --custom-compile-command "bash scripts/install_orchestrators.sh --lock" \
    -o requirements-orchestrators.lock
  # The constraints file is temporary: keep it out of the "# via" annotations.
  sed -i "\\|^ *#   -c $constraints\$|d" requirements-orchestrators.lock
  exit 0
fi

[ -x .venv-orchestrators/bin/python ] || "${UV[@]}" venv --python "$PYTHON" .venv-orchestrators
# --python, not VIRTUAL_ENV: see scripts/install.sh.
VENV_PYTHON="$PWD/.venv-orchestrators/bin/python"
"${UV[@]}" pip sync --quiet --python "$VENV_PYTHON" requirements-orchestrators.lock
"${UV[@]}" pip install --quiet --python "$VENV_PYTHON" --no-deps -e .
# Fail here, not in the first DAG parse. Importing airflow writes a config and logs under
# AIRFLOW_HOME (default ~/airflow): point it at a throw-away directory for this check.
airflow_home=$(mktemp -d)
AIRFLOW_HOME="$airflow_home" TF_CPP_MIN_LOG_LEVEL=3 "$VENV_PYTHON" -W ignore::FutureWarning \
  -c "import pipeline, tfx, tensorflow, tf_keras, airflow, kfp"
rm -rf "$airflow_home"
