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


NODE_SCRIPTS = ("node_setup.sh", "start_head.sh", "start_worker.sh")


def script(name: str) -> str:
    return (ROOT / "cluster" / name).read_text()


@pytest.fixture(scope="module")
def onprem() -> dict:
    return yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())


def test_both_cluster_files_run_the_same_node_scripts(config, onprem):
    """What a node does lives in cluster/*.sh; the AWS and on-prem files differ only in where
    secrets and storage come from. The boot test (test_cluster_boot.py) runs these scripts."""
    for cfg in (config, onprem):
        assert any("bash ~/peft-sweeps/cluster/node_setup.sh" in c for c in cfg["setup_commands"])
        (head,) = [c for c in cfg["head_start_ray_commands"] if "cluster/start_head.sh" in c]
        (worker,) = [c for c in cfg["worker_start_ray_commands"] if "cluster/start_worker.sh" in c]
        assert "ray start" not in " ".join(cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]), "only the scripts start Ray"
        assert cfg["file_mounts"]["~/peft-sweeps"] == "." and cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
        assert ".venv" in cfg["rsync_exclude"]
    assert "--storage s3://" in " ".join(config["worker_start_ray_commands"]) and "--artifacts s3://" in " ".join(config["head_start_ray_commands"])


def test_the_node_scripts_parse_and_fail_with_one_line():
    import subprocess

    for name in (*NODE_SCRIPTS, "lib.sh", "onprem_head_setup.sh", "aws_setup.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "cluster" / name)]).returncode == 0, name
    for name, missing in (("start_head.sh", "--storage PATH and --artifacts DEST"), ("start_worker.sh", "--storage PATH")):
        run = subprocess.run(["bash", str(ROOT / "cluster" / name)], capture_output=True, text=True)
        assert run.returncode == 2 and missing in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_every_node_installs_the_tested_versions():
    assert 'bash "$PROJECT/scripts/setup.sh"' in script("node_setup.sh")  # the README's own set-up
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all("==" in line for line in pins)
    assert "-c constraints.txt" in (ROOT / "scripts" / "setup.sh").read_text()  # CI uses the same pins


def test_ray_token_auth_and_private_services():
    head, worker = script("start_head.sh"), script("start_worker.sh")
    for text in (head, worker, script("node_setup.sh")):
        assert "RAY_AUTH_MODE=token" in text
    assert "--dashboard-host=127.0.0.1" in head
    assert '--host "$IP"' in head and "0.0.0.0" not in head  # MLflow on the node's own address only
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in head  # no idle GenAI job runner on the head
    assert head.count("SWEEPS_STORAGE_PATH=$STORAGE") == 1 and worker.count("SWEEPS_STORAGE_PATH=$STORAGE") == 1
    assert "sweeps.tuning.node_types" in head  # the autoscaler's node types, for the study's driver
    assert "MLFLOW_TRACKING_PASSWORD" not in worker  # workers never talk to MLflow


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


def test_mlflow_store_survives_ray_down_and_needs_a_password(config, onprem):
    aws = " ".join(config["head_setup_commands"])
    # AWS: the database from SSM (made by aws_setup.sh), artifacts in S3; SQLite on the head only as a loud fallback
    assert "--name /peft-sweeps/mlflow-backend-uri --with-decryption" in aws and "WARNING:" in aws and "ray down deletes them" in aws
    assert "rds create-db-instance" in (ROOT / "cluster" / "aws_setup.sh").read_text()
    assert "/peft-sweeps/mlflow-admin-password --with-decryption" in aws and "umask 077" in aws
    # on-prem: made once on the head's own disk, which `ray down` leaves alone
    assert onprem["head_setup_commands"] == ["bash ~/peft-sweeps/cluster/onprem_head_setup.sh"]
    setup = script("onprem_head_setup.sh")
    assert "umask 077" in setup and "secrets.token_urlsafe" in setup and "sqlite:///$HOME/mlflow/mlflow.db" in setup
    # both write the same two files; the head script serves them behind MLflow's basic-auth app
    for text in (aws, setup):
        assert "> ~/mlflow/backend-uri" in text and "> ~/mlflow/admin-password" in text
    head = script("start_head.sh")
    assert "--app-name basic-auth" in head and "MLFLOW_AUTH_CONFIG_PATH=$HOME/mlflow/auth.ini" in head
    assert '--backend-store-uri "$BACKEND"' in head and 'BACKEND=$(cat ~/mlflow/backend-uri)' in head
    assert head.index(". ~/mlflow/client.env") < head.index('ray" start --head')  # drivers log with those credentials


def test_trial_drivers_and_train_controllers_live_on_the_on_demand_head(config):
    from trainables.training.trial import DRIVER_NODE_RESOURCE

    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"][DRIVER_NODE_RESOURCE] >= 1 and "InstanceMarketOptions" not in head["node_config"]
    assert all(DRIVER_NODE_RESOURCE not in t.get("resources", {}) for n, t in types.items() if n != config["head_node_type"])


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_no_secret_in_the_file(name):
    text = (ROOT / name).read_text()
    assert not re.search(r"hf_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|aws_secret_access_key", text)


def filled_onprem(onprem: dict, tmp_path: Path, **provider) -> dict:
    """cluster-onprem.yaml with its FILL IN places filled (the head on loopback, a key that exists)."""
    cfg = copy.deepcopy(onprem)
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key\n")
    token = tmp_path / "auth_token"
    token.write_text("0" * 64)
    cfg["provider"].update({"head_ip": "127.0.0.1", "worker_ips": ["10.0.0.11", "10.0.0.12"], **provider})
    cfg["auth"] = {"ssh_user": "me", "ssh_private_key": str(key)}
    cfg["file_mounts"]["~/.ray/auth_token"] = str(token)
    return cfg


def test_the_onprem_file_keeps_its_node_types_through_rays_schema(onprem, tmp_path):
    """type: external loads Ray's on-prem provider without the `type: local` rewrite that drops
    available_node_types: the head keeps CPU 0 + trial_driver, workers autoscale from 0."""
    from trainables.training.trial import DRIVER_NODE_RESOURCE

    cfg = prepare_config(copy.deepcopy(filled_onprem(onprem, tmp_path)))
    validate_config(cfg)
    types = cfg["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0, DRIVER_NODE_RESOURCE: 1}
    assert types["worker"]["min_workers"] == 0 and types["worker"]["resources"]["CPU"] >= 1
    local = copy.deepcopy(filled_onprem(onprem, tmp_path))
    local["provider"] = {"type": "local", "head_ip": "127.0.0.1", "worker_ips": ["10.0.0.11"]}
    with pytest.raises(Exception, match="available_node_types is not supported for on-premise"):
        prepare_config(local)  # why the file uses type: external


def test_the_node_types_a_study_sees_are_the_files(onprem, tmp_path):
    from sweeps.tuning.node_types import cluster_config

    message = cluster_config(prepare_config(copy.deepcopy(filled_onprem(onprem, tmp_path))))
    (group,) = message.node_group_configs  # the head is a running node, not a group to launch
    assert (group.name, group.min_count, group.max_count) == ("worker", 0, 2)
    assert dict(group.resources) == {"CPU": 8, "GPU": 1}


def run_check(cfg: dict, tmp_path: Path) -> tuple[int, list[str]]:
    import subprocess
    import sys

    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = subprocess.run([sys.executable, "-m", "sweeps.cluster_check", str(path), "--ssh-timeout", "2"], capture_output=True, text=True, cwd=ROOT)
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode, run.stderr.strip().splitlines()


def test_cluster_check_says_each_problem_in_one_line(onprem, tmp_path):
    ok = filled_onprem(onprem, tmp_path)
    ok["provider"]["head_ip"] = "127.0.0.254"  # nothing listens there: refused at once
    cases = {
        "no worker addresses": ({"worker_ips": []}, {}, "provider.worker_ips: is empty"),
        "unreachable head": ({}, {}, "provider.head_ip: nothing answers SSH at 127.0.0.254:22"),
        "missing SSH key": ({}, {"ssh_private_key": str(tmp_path / "nope")}, "auth.ssh_private_key: " + str(tmp_path / "nope") + " does not exist here"),
    }
    for name, (provider, auth, expected) in cases.items():
        cfg = copy.deepcopy(ok)
        cfg["provider"].update(provider)
        cfg["auth"].update(auth)
        rc, lines = run_check(cfg, tmp_path)
        assert rc == 2, name
        assert any(expected in line and "(fix: " in line for line in lines), (name, lines)
        assert all(line.startswith("error: ") for line in lines), lines


def test_cluster_check_passes_a_filled_file_with_a_head_that_answers(onprem, tmp_path):
    import socket

    with socket.socket() as sock:  # a stand-in for the head's sshd: the check only knocks
        try:
            sock.bind(("127.0.0.253", 22))
        except PermissionError:
            pytest.skip("binding port 22 needs root")
        sock.listen()
        cfg = filled_onprem(onprem, tmp_path, head_ip="127.0.0.253")
        rc, lines = run_check(cfg, tmp_path)
    assert rc == 0, lines
