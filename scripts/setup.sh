#!/usr/bin/env bash
# One-time set-up on a fresh machine: .venv with the tested versions, this project editable.
# Where there is no GPU, torch's CPU build is installed first (a plain `torch` would pull CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c "import sweeps, trainables, ray.dashboard" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  command -v nvidia-smi >/dev/null 2>&1 || .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e ".[test]" "ray[default,tune,train]==2.60.0" transformers==5.23.0 peft==0.21.2 \
    bitsandbytes==0.50.2 datasets==5.2.0 evaluate==0.4.6 optuna==5.0.0 mlflow==3.17.2 scikit-learn==1.9.1 accelerate==1.15.0
fi
