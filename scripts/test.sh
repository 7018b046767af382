#!/usr/bin/env bash
# Set up (with test dependencies and PyPI's CPU build of PyTorch for cross-checks), then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh "pretrained,demo,test,serve,dist"
# torch==2.13.0 is the CPU build (a plain `pip install torch` would pull a multi-GB CUDA build).
.venv/bin/python -m pip install -q torch==2.13.0 || echo "torch not installed: cross-check tests will be skipped"
.venv/bin/python -m pytest -q "$@"
