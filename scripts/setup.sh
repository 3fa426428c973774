#!/usr/bin/env bash
# One-time set-up on a fresh machine: .venv with the tested versions (constraints.txt), this
# project editable, with the test tools and Gradio (`sweeps.serve`). Re-running is cheap; it reinstalls only when pyproject.toml or
# constraints.txt changed.
# Where there is no GPU, torch's CPU build is installed first (a plain `torch` would pull CUDA).
# --tests: also Debian's chromium (the test that checks the MLflow UI in a real browser), and
#   openssh-server + rsync (the test that boots a cluster with `ray up` over SSH on loopback).
# SWEEPS_VENV=DIR: the venv lives there instead of .venv (cluster/node_setup.sh passes it through).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SWEEPS_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
stamp="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$VENV/.sweeps-installed" 2>/dev/null)" != "$stamp" ] || ! "$VENV/bin/python" -c "import sweeps, trainables, ray.dashboard" 2>/dev/null; then
  "$VENV/bin/pip" install -q --upgrade pip
  command -v nvidia-smi >/dev/null 2>&1 || "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q -c constraints.txt -e ".[test,ui]"
  echo "$stamp" > "$VENV/.sweeps-installed"
fi
if [ "${1:-}" = "--tests" ]; then
  missing=""
  command -v chromium >/dev/null 2>&1 || missing="chromium"
  { [ -x /usr/sbin/sshd ] && command -v rsync >/dev/null 2>&1; } || missing="$missing openssh-server rsync"
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    if command -v apt-get >/dev/null 2>&1; then
      $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
    else
      echo "note: no apt-get; install $missing yourself or the tests that need them are skipped" >&2
    fi
  fi
fi
