# cluster/lib.sh: helpers the node scripts share (sourced, not run).

# The venv every node runs from: scripts/setup.sh makes it ($SWEEPS_VENV, else the project's .venv).
PROJECT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${SWEEPS_VENV:-$PROJECT/.venv}

# The address this node registers with Ray. Reached over SSH (`ray up`, the autoscaler), it is
# the address we were reached at: the one the cluster file names, which Ray's launcher uses to
# tell its nodes apart (so several nodes can share one host, each on its own address).
node_ip() {
  if [ -n "${SSH_CONNECTION:-}" ]; then set -- $SSH_CONNECTION; echo "$3"
  else hostname -I | awk '{print $1}'; fi
}

# Stop the Ray node on this address (a re-run of `ray up` restarts it), and only that one:
# `ray stop` would end every Ray process on the host, other nodes' included.
stop_ray_node() {
  local ip=$1 pattern pids i
  pattern="(--node[-_]ip[-_]address|--monitor-ip)[= ]$ip( |$)"
  pids=$(pgrep -f -- "$pattern" || true)
  [ -z "$pids" ] && return 0
  kill $pids 2>/dev/null || true
  for i in $(seq 20); do pgrep -f -- "$pattern" >/dev/null || return 0; sleep 0.5; done
  pkill -9 -f -- "$pattern" || true
}

# Ray and its workers keep many sockets and files open.
raise_open_files() { ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; }
