#!/usr/bin/env bash
# A virtualenv in .venv with the project installed (and its extras, e.g. "[test]").
# Sourced by serve.sh and test.sh, run by the Dockerfile.  It installs again only when
# pyproject.toml or the extras change, so a second start costs nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
EXTRAS="${1:-}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.metering-installed-$(cat pyproject.toml <(echo "$EXTRAS") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${EXTRAS}"
  rm -f .venv/.metering-installed-*
  touch "$stamp"
fi
