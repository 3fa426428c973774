#!/usr/bin/env bash
# cluster/onprem_head_setup.sh: the on-prem provider's part of the head's set-up (the AWS file
# reads the same two things from SSM instead). Writes, once, on the head:
#   ~/mlflow/admin-password  a random MLflow admin password (mode 600; read it there to log in)
#   ~/mlflow/backend-uri     $MLFLOW_BACKEND_URI if given (e.g. postgresql://... on a database
#                            server), else SQLite in ~/mlflow: it stays on the head's disk, so the
#                            runs outlive `ray down`.
set -euo pipefail
mkdir -p ~/mlflow/artifacts && chmod 700 ~/mlflow
umask 077
[ -s ~/mlflow/admin-password ] || python3 -c 'import secrets; print(secrets.token_urlsafe(24), end="")' > ~/mlflow/admin-password
printf '%s' "${MLFLOW_BACKEND_URI:-sqlite:///$HOME/mlflow/mlflow.db}" > ~/mlflow/backend-uri
echo "MLflow store: $(sed 's#//[^@/]*@#//***@#' ~/mlflow/backend-uri); admin password in ~/mlflow/admin-password"
