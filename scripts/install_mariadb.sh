#!/usr/bin/env bash
# Installs MariaDB's server from the Debian packages, for the tests that run ML Metadata on a
# MySQL-compatible server (tests/test_metadata_mysql.py starts its own mariadbd; no system service
# is started or needed). Idempotent: returns at once when mariadbd is already installed.
#
#   bash scripts/install_mariadb.sh
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
if command -v mariadbd >/dev/null 2>&1 && command -v mariadb-install-db >/dev/null 2>&1; then
  exit 0
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
  SUDO=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
# Without apt (or the right to use it) the server tests skip, saying why; the rest still runs.
if ! { "${SUDO[@]}" apt-get update -qq \
       && "${SUDO[@]}" apt-get install -y -qq --no-install-recommends mariadb-server >/dev/null; }; then
  echo "install_mariadb.sh: could not install mariadb-server; tests/test_metadata_mysql.py's" \
       "server tests will be skipped" >&2
fi
