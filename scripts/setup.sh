#!/usr/bin/env bash
# One-time set-up on a fresh machine: .venv with the tested versions (constraints.txt), this
# project editable.
# Where there is no GPU, torch's CPU build is installed first (a plain `torch` would pull CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c "import sweeps, trainables, ray.dashboard" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  command -v nvidia-smi >/dev/null 2>&1 || .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -c constraints.txt -e ".[test]"
fi
