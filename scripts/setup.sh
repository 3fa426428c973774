#!/usr/bin/env bash
# One-time set-up on a fresh machine: .venv with the tested versions (constraints.txt), this
# project editable, with the test tools and Gradio (`sweeps.serve`). Re-running is cheap; it reinstalls only when pyproject.toml or
# constraints.txt changed.
# Where there is no GPU, torch's CPU build is installed first (a plain `torch` would pull CUDA).
# --tests: also Debian's chromium, for the test that checks the MLflow UI in a real browser.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat .venv/.sweeps-installed 2>/dev/null)" != "$stamp" ] || ! .venv/bin/python -c "import sweeps, trainables, ray.dashboard" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  command -v nvidia-smi >/dev/null 2>&1 || .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -c constraints.txt -e ".[test,ui]"
  echo "$stamp" > .venv/.sweeps-installed
fi
if [ "${1:-}" = "--tests" ] && ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "note: no apt-get; install chromium yourself or the MLflow UI browser test is skipped" >&2
  fi
fi
