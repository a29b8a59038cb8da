#!/usr/bin/env bash
# Create .venv and install pvchat with every extra. torch is pinned to the local CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[all]" -c constraints.txt
echo "pvchat installed in $(pwd)/.venv"
