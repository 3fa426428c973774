"""cluster.yaml is a real Ray cluster-launcher config: Ray's own schema accepts it, a typo fails,
and it keeps the promises the README makes (pinned stack, private MLflow, no secrets)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def ray_validate(cfg: dict) -> None:
    """What `ray up` does before touching the cloud: fill in the provider's defaults, check the schema."""
    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_cluster_yaml_passes_rays_schema(config):
    ray_validate(config)


@pytest.mark.parametrize("path, typo", [((), "max_worker"), (("available_node_types", "gpu_a10g"), "min_worker"), (("auth",), "ssh_usr")])
def test_a_typo_fails_rays_schema(config, path, typo):
    bad = copy.deepcopy(config)
    node = bad
    for key in path:
        node = node[key]
    node[typo] = 1
    with pytest.raises(jsonschema.ValidationError, match=typo):
        ray_validate(bad)


def test_gpu_workers_autoscale_from_zero_and_head_trains_nothing(config):
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["CPU"] == 0
    gpu = [t for name, t in types.items() if name != config["head_node_type"]]
    assert gpu and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu)
    assert all(re.match(r"(g5|g6|p4d|p5)\.", t["node_config"]["InstanceType"]) for t in gpu)


def test_every_node_installs_the_tested_versions(config):
    install = " ".join(config["setup_commands"])
    assert "-c ~/peft-sweeps/constraints.txt" in install and "$HOME/peft-sweeps" in install
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all("==" in line for line in pins)
    assert "-c constraints.txt" in (ROOT / "scripts" / "setup.sh").read_text()  # CI uses the same pins


def test_ray_token_auth_and_private_services(config):
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert ray_starts and all("RAY_AUTH_MODE=token" in c for c in ray_starts)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    mlflow = next(c for c in config["head_start_ray_commands"] if "nohup" in c and "mlflow server" in c)
    assert "--host $HEAD_IP" in mlflow and "0.0.0.0" not in mlflow
    assert "--artifacts-destination s3://" in mlflow
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in mlflow  # no idle GenAI job runner on the head
    assert all("SWEEPS_STORAGE_PATH=s3://" in c for c in ray_starts)


def _policy(name: str) -> list[dict]:
    import json

    return json.loads((ROOT / "cluster" / "iam" / f"{name}-policy.json").read_text())["Statement"]


def _actions(statement: dict) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else actions


def test_every_node_has_an_instance_profile_with_least_privilege(config):
    """Ray gives its default role (EC2 + S3 full access) to the head only and none to workers:
    each node type names one of the two profiles cluster/aws_setup.sh makes."""
    types = config["available_node_types"]
    for name, node in types.items():
        role = "head" if name == config["head_node_type"] else "worker"
        assert node["node_config"]["IamInstanceProfile"] == {"Name": f"peft-sweeps-{role}"}, name
    setup = (ROOT / "cluster" / "aws_setup.sh").read_text()
    assert 'for ROLE in head worker' in setup and '$HERE/iam/$1-policy.json' in setup
    for role in ("head", "worker"):
        for st in _policy(role):
            assert st["Effect"] == "Allow"
            for action in _actions(st):
                assert "*" not in action, f"{role}: wildcard action {action}"
                service = action.split(":")[0]
                if service == "s3":  # the project's bucket only
                    assert st["Resource"].startswith("arn:aws:s3:::peft-sweeps-ACCOUNT_ID"), st
                if service == "ssm":  # its parameters only, read only
                    assert action == "ssm:GetParameter" and st["Resource"].startswith("arn:aws:ssm:REGION:ACCOUNT_ID:parameter/peft-sweeps/"), st
                if service == "iam":
                    assert action == "iam:PassRole" and st["Resource"].endswith("role/peft-sweeps-worker"), st
                if action in ("ec2:TerminateInstances", "ec2:StopInstances"):
                    assert st["Condition"]["StringEquals"]["ec2:ResourceTag/ray-cluster-name"] == config["cluster_name"]
    worker = {a for st in _policy("worker") for a in _actions(st)}
    assert not any(a.startswith(("ec2:", "iam:")) for a in worker), "workers launch nothing"
    assert [st["Resource"] for st in _policy("worker") if "ssm:GetParameter" in _actions(st)] == ["arn:aws:ssm:REGION:ACCOUNT_ID:parameter/peft-sweeps/hf-token"]
    assert [st["Resource"] for st in _policy("worker") if "s3:PutObject" in _actions(st)] == ["arn:aws:s3:::peft-sweeps-ACCOUNT_ID/ray_results/*"]


def test_ssh_only_from_the_range_the_user_sets(config):
    import subprocess

    assert config["provider"]["security_group"] == {"GroupName": "peft-sweeps"}
    setup = ROOT / "cluster" / "aws_setup.sh"
    assert "--group-name $NAME" in setup.read_text() and '--port 22 --cidr "$SSH_CIDR"' in setup.read_text()
    for cidr, ok in (("0.0.0.0/0", False), ("", False), ("203.0.113.7", False)):
        env = {"PATH": "/usr/bin:/bin", "SSH_CIDR": cidr}
        run = subprocess.run(["bash", str(setup)], env=env, capture_output=True, text=True)
        assert run.returncode != 0 and "SSH_CIDR" in run.stderr, run.stderr  # refused before any AWS call
    assert subprocess.run(["bash", "-n", str(setup)]).returncode == 0
    # the head refuses to come up behind a group that opens SSH to everyone
    check = next(c for c in config["head_setup_commands"] if "describe-security-groups" in c)
    assert "0.0.0.0/0" in check and "exit 1" in check


def test_mlflow_store_survives_ray_down_and_needs_a_password(config):
    setup = " ".join(config["head_setup_commands"])
    start = next(c for c in config["head_start_ray_commands"] if "mlflow server" in c and "nohup" in c)
    # backend: the database from SSM (made by aws_setup.sh), artifacts in S3; SQLite on the head only as a loud fallback
    assert "--name /peft-sweeps/mlflow-backend-uri --with-decryption" in setup and "WARNING:" in setup and "ray down deletes them" in setup
    assert '--backend-store-uri "$(cat ~/mlflow/backend-uri)"' in start and "--artifacts-destination s3://" in start
    assert "rds create-db-instance" in (ROOT / "cluster" / "aws_setup.sh").read_text()
    # MLflow's basic-auth app; the admin password from SSM into files only the user can read
    assert "--app-name basic-auth" in start and "MLFLOW_AUTH_CONFIG_PATH=$HOME/mlflow/auth.ini" in start
    assert "/peft-sweeps/mlflow-admin-password --with-decryption" in setup and "umask 077" in setup
    ray_head = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert ". ~/mlflow/client.env" in ray_head  # the head's drivers log with those credentials
    assert not any("MLFLOW_TRACKING_PASSWORD" in c for c in config["worker_start_ray_commands"])


def test_trial_drivers_and_train_controllers_live_on_the_on_demand_head(config):
    from trainables.training.trial import DRIVER_NODE_RESOURCE

    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"][DRIVER_NODE_RESOURCE] >= 1 and "InstanceMarketOptions" not in head["node_config"]
    assert all(DRIVER_NODE_RESOURCE not in t.get("resources", {}) for n, t in types.items() if n != config["head_node_type"])


def test_no_secret_in_the_file():
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"hf_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|aws_secret_access_key", text)
