#!/usr/bin/env bash
# cluster/start_worker.sh: start (or restart) a worker node, on any provider, joining the head at
# $RAY_HEAD_IP (Ray's launcher sets it). Workers run trial workers only; they never talk to MLflow.
#
#   bash cluster/start_worker.sh --storage PATH   (the same PATH the head got)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
STORAGE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --storage) STORAGE=$2; shift 2 ;;
    *) echo "start_worker.sh: unknown argument $1 (use --storage PATH)" >&2; exit 2 ;;
  esac
done
[ -n "$STORAGE" ] || { echo "start_worker.sh: give --storage PATH" >&2; exit 2; }
: "${RAY_HEAD_IP:?start_worker.sh: RAY_HEAD_IP is unset, the cluster launcher sets it}"
IP=$(node_ip)
stop_ray_node "$IP"
export PATH=$VENV/bin:$PATH RAY_AUTH_MODE=token SWEEPS_STORAGE_PATH=$STORAGE
raise_open_files
# dashboard agent on a free port: the fixed default (52365) clashes when nodes share a host
exec "$VENV/bin/ray" start --address="$RAY_HEAD_IP:6379" --node-ip-address="$IP" \
  --dashboard-agent-listen-port=0 --disable-usage-stats
