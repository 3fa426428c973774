#!/usr/bin/env bash
# cluster/node_setup.sh: what every node (head and workers, on any provider) runs once per `ray up`,
# after the project was copied to ~/peft-sweeps: the venv with the tested versions
# (scripts/setup.sh, the README's own set-up: constraints.txt, CPU torch where there is no GPU),
# and a shell profile that puts that venv and Ray's token auth on every later command on the
# node (`ray exec`, `ray attach`, the start scripts).
#
#   SWEEPS_VENV=DIR  keep the venv there (e.g. one venv on a file system all nodes share)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SWEEPS_VENV=$VENV bash "$PROJECT/scripts/setup.sh"
mkdir -p ~/.peft-sweeps
printf 'export PATH="%s/bin:$PATH" RAY_AUTH_MODE=token\n' "$VENV" > ~/.peft-sweeps/env
# first in ~/.bashrc: Debian's returns early for non-interactive shells
if ! grep -qs 'peft-sweeps/env' ~/.bashrc; then
  { echo '[ -f ~/.peft-sweeps/env ] && . ~/.peft-sweeps/env  # peft-sweeps: venv + Ray token auth'; cat ~/.bashrc 2>/dev/null || true; } > ~/.bashrc.new
  mv ~/.bashrc.new ~/.bashrc
fi
echo "node set up: venv $VENV, $("$VENV/bin/ray" --version)"
