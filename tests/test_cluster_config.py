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
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
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
    assert "--backend-store-uri sqlite:///" in mlflow and "--artifacts-destination s3://" in mlflow
    assert all("SWEEPS_STORAGE_PATH=s3://" in c for c in ray_starts)


def test_no_secret_in_the_file():
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"hf_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|aws_secret_access_key", text)
