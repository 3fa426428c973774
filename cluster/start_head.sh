#!/usr/bin/env bash
# cluster/start_head.sh: start (or restart) the head node, on any provider. The head runs MLflow
# (behind its basic-auth app, on the node's own address) and Ray's head (GCS, autoscaler,
# dashboard on 127.0.0.1 only), and holds the trial drivers.
#
#   bash cluster/start_head.sh --storage PATH --artifacts DEST
#     --storage    where Ray Tune keeps results and checkpoints; every node must reach it
#                  (s3://..., or a folder on a file system all nodes mount)
#     --artifacts  where MLflow stores artifacts (s3://..., or a folder on the head)
#
# The provider's set-up step writes what differs per provider, before this runs:
#   ~/mlflow/backend-uri     MLflow's database (PostgreSQL that outlives the cluster, or SQLite)
#   ~/mlflow/admin-password  MLflow's admin password (mode 600; never on a command line)
# Node resources (CPU 0 and the trial_driver slot) come from the cluster file's node type:
# Ray's launcher passes them in the environment.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
STORAGE="" ARTIFACTS="" MLFLOW_PORT=${MLFLOW_PORT:-5000}
while [ $# -gt 0 ]; do
  case "$1" in
    --storage) STORAGE=$2; shift 2 ;;
    --artifacts) ARTIFACTS=$2; shift 2 ;;
    *) echo "start_head.sh: unknown argument $1 (use --storage PATH --artifacts DEST)" >&2; exit 2 ;;
  esac
done
[ -n "$STORAGE" ] && [ -n "$ARTIFACTS" ] || { echo "start_head.sh: give --storage PATH and --artifacts DEST" >&2; exit 2; }
for f in backend-uri admin-password; do
  [ -s ~/mlflow/$f ] || { echo "start_head.sh: ~/mlflow/$f is missing: the provider's head set-up writes it" >&2; exit 2; }
done
IP=$(node_ip)

stop_ray_node "$IP"
# MLflow runs in a process group of its own (setsid below): end it with its uvicorn workers
if [ -f ~/mlflow/server.pid ]; then kill -- "-$(cat ~/mlflow/server.pid)" 2>/dev/null || true; rm -f ~/mlflow/server.pid; sleep 1; fi

# MLflow: basic auth (admin password from the file above), bound to this node's address only.
# A port someone else holds would let their server answer the health check below: refuse.
"$VENV/bin/python" - "$IP" "$MLFLOW_PORT" <<'PY'
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: a closed one's TIME_WAIT is no owner
    try:
        s.bind((sys.argv[1], int(sys.argv[2])))
    except OSError:
        sys.exit(f"start_head.sh: {sys.argv[1]}:{sys.argv[2]} is taken by another process: stop it, or set MLFLOW_PORT")
PY
umask 077
BACKEND=$(cat ~/mlflow/backend-uri)
printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = %s\nadmin_username = admin\nadmin_password = %s\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n' \
  "$BACKEND" "$(cat ~/mlflow/admin-password)" > ~/mlflow/auth.ini
# the basic-auth app's CSRF key: made once per head, kept so sessions survive a restart
[ -s ~/mlflow/flask-secret ] || "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32), end="")' > ~/mlflow/flask-secret
printf 'MLFLOW_TRACKING_USERNAME=admin\nMLFLOW_TRACKING_PASSWORD=%s\n' "$(cat ~/mlflow/admin-password)" > ~/mlflow/client.env
umask 022
# MLflow 3's job runner (huey consumers for GenAI jobs, which sweeps never submit) is off: it
# costs CPU the head's trial drivers need.
MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat ~/mlflow/flask-secret) \
MLFLOW_AUTH_CONFIG_PATH=$HOME/mlflow/auth.ini MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
  nohup setsid "$VENV/bin/mlflow" server --app-name basic-auth --backend-store-uri "$BACKEND" \
  --artifacts-destination "$ARTIFACTS" --host "$IP" --port "$MLFLOW_PORT" \
  --allowed-hosts "$IP:$MLFLOW_PORT,localhost:$MLFLOW_PORT,127.0.0.1:$MLFLOW_PORT" > ~/mlflow/server.log 2>&1 &
echo $! > ~/mlflow/server.pid
"$VENV/bin/python" - "$IP" "$MLFLOW_PORT" "$(cat ~/mlflow/server.pid)" <<'PY'
import os, sys, time, urllib.request
url, pid = f"http://{sys.argv[1]}:{sys.argv[2]}/health", int(sys.argv[3])
for _ in range(120):
    try:
        urllib.request.urlopen(url, timeout=2)
        sys.exit(0)
    except Exception:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(f"MLflow server exited at start: see ~/mlflow/server.log on the head")
        time.sleep(1)
sys.exit(f"MLflow did not answer {url} within 2 minutes: see ~/mlflow/server.log on the head")
PY
echo "MLflow at http://$IP:$MLFLOW_PORT (basic auth, user admin)"

# Ray: every trial and job started from here gets the venv, MLflow and the storage path in its env.
set -a; . ~/mlflow/client.env; set +a
export PATH=$VENV/bin:$PATH RAY_AUTH_MODE=token MLFLOW_TRACKING_URI=http://$IP:$MLFLOW_PORT SWEEPS_STORAGE_PATH=$STORAGE
raise_open_files
"$VENV/bin/ray" start --head --node-ip-address="$IP" --port=6379 --dashboard-host=127.0.0.1 \
  --autoscaling-config="$HOME/ray_bootstrap_config.yaml" --disable-usage-stats
# what the autoscaler may launch, where drivers (and Ray Data) look for it: `ray up` never says
"$VENV/bin/python" -m sweeps.tuning.node_types --address "$IP:6379" "$HOME/ray_bootstrap_config.yaml"
