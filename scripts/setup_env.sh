#!/usr/bin/env bash
# Create .venv (if missing) and install decaf into it, editable, with the given extras.
# Usage: scripts/setup_env.sh EXTRAS      e.g. "pretrained,demo" or "pretrained,demo,test"
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-pretrained}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# Editable, so that `python -m pytest` and the decaf command both see the compiled extension built here.
.venv/bin/python -m pip install -q -e ".[${extras}]"
