"""`ray up` for real: cluster-onprem.yaml, filled in with three loopback "machines" of this host
(tests/loopback_machines.py: sshd on 127.0.0.2-4, each address its own home), booted by Ray's
launcher over SSH and rsync, set up and started by the same cluster/*.sh scripts cluster.yaml
(AWS) runs. A study submitted as a Ray job makes the autoscaler start both worker machines over
SSH from the head (0 -> 2), its trials run there while their drivers stay on the head, MLflow
on the head (behind basic auth) records everything, idle workers leave again (2 -> 0), and
`ray down` leaves no Ray process behind while the runs stay readable.

The tests run in order on one booted cluster (booting costs ~30 s; the whole module ~3-4 min).
Whatever happens, the fixture tears it all down: `ray down`, then any process on these
addresses, sshd, and the launcher's state files."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.conftest import base_study, write_study
from tests.loopback_machines import LoopbackMachines, missing

pytestmark = [pytest.mark.ray, pytest.mark.own_ray]  # `ray down` stops every Ray on the host

ROOT = Path(__file__).resolve().parents[1]
HEAD, WORKERS = "127.0.0.2", ["127.0.0.3", "127.0.0.4"]
RAY = str(Path(sys.executable).parent / "ray")
DASHBOARD = "http://127.0.0.1:8265"  # the head's dashboard listens on 127.0.0.1 only (as on AWS)
JOB_ID = "boot-study"


def _project_copy(dest: Path) -> Path:
    """The project as checked out (tracked + untracked-not-ignored files): what `ray up` copies."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    dest.mkdir()
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())
    return dest


class BootedCluster:
    def __init__(self, root: Path, machines: LoopbackMachines, config_path: Path, name: str, token: Path) -> None:
        self.root, self.machines, self.config_path, self.name, self.token = root, machines, config_path, name, token
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
        self.timings: dict[str, float] = {}
        self.down = False
        self.study = ""  # the study file the job runs

    def ray(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        run = subprocess.run([RAY, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if check and run.returncode != 0:
            raise AssertionError(f"ray {' '.join(args)} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}\n{self.diagnosis()}")
        return run

    def timed(self, label: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        t0 = time.time()
        run = self.ray(*args, timeout=timeout)
        self.timings[label] = round(time.time() - t0, 1)
        return run

    def exec_on_head(self, command: str) -> str:
        return self.ray("exec", str(self.config_path), command).stdout

    def provider_state(self) -> dict[str, str]:
        """address -> running/terminated, as the launcher and the head's autoscaler record it."""
        path = Path("/tmp/ray") / f"cluster-{self.name}.state"
        try:
            return {ip: info["state"] for ip, info in json.loads(path.read_text()).items()}
        except (OSError, ValueError):
            return {}

    def running_workers(self) -> int:
        state = self.provider_state()
        return sum(state.get(ip) == "running" for ip in WORKERS)

    def mlflow(self):
        import mlflow

        password = (self.machines.home(HEAD) / "mlflow" / "admin-password").read_text()
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", password
        return mlflow.MlflowClient(f"http://{HEAD}:5000")

    def diagnosis(self) -> str:
        """The head's autoscaler log and the job's output, for a failure message."""
        out = []
        logs = Path("/tmp/ray/session_latest/logs")
        for name in ("monitor.out", "monitor.log", f"job-driver-{JOB_ID}.log"):
            path = logs / name
            if path.exists():
                text = "\n".join(line for line in path.read_text(errors="replace").splitlines() if "legacy field" not in line)
                out.append(f"--- {name} (tail)\n{text[-2500:]}")
        return "\n".join(out)


def _ray_nodes_on_host() -> list[str]:
    run = subprocess.run(["pgrep", "-af", "raylet/raylet|gcs_server"], capture_output=True, text=True)
    return run.stdout.splitlines()


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory, tiny_llama: str) -> Iterator[BootedCluster]:
    why = missing([HEAD, *WORKERS])
    if why:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(f"booting a cluster on loopback {why}")
    import ray

    ray.shutdown()  # the shared single-node cluster, if an earlier test started it
    deadline = time.time() + 15
    while _ray_nodes_on_host() and time.time() < deadline:
        time.sleep(0.5)
    if _ray_nodes_on_host():
        pytest.fail(f"another Ray runs on this host and `ray down` would stop it: {_ray_nodes_on_host()[:2]}")

    root = tmp_path_factory.mktemp("boot")
    name = f"boot-{os.getpid()}"
    machines = LoopbackMachines(root / "machines", [HEAD, *WORKERS], Path(sys.executable).parent.parent)
    token = root / "auth_token"
    token.write_text(os.urandom(32).hex())
    token.chmod(0o600)
    storage = root / "storage"  # every "machine" sees it, like an NFS mount
    storage.mkdir()

    # cluster-onprem.yaml with its FILL IN places filled, nothing else changed but the pace
    cfg = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    cfg["cluster_name"] = name
    cfg["provider"].update(head_ip=HEAD, worker_ips=WORKERS)
    cfg["auth"] = {"ssh_user": "root", "ssh_private_key": str(machines.key)}
    cfg["available_node_types"]["worker"].update(resources={"CPU": 1}, max_workers=len(WORKERS))
    cfg["idle_timeout_minutes"] = 0.25  # the test waits for idle workers to leave
    cfg["file_mounts"] = {"~/peft-sweeps": str(_project_copy(root / "project")), "~/.ray/auth_token": str(token)}
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        cfg[key] = [c.replace("/mnt/peft-sweeps/ray_results", str(storage)) for c in cfg[key]]
    config_path = root / "cluster.yaml"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    study = base_study(
        tiny_llama, name="boot", methods=["lora", "ia3"],
        search={"algorithm": "grid", "grid_repeats": 1, "max_concurrent_trials": 2, "metric": "f1_macro", "mode": "max"},
        resources={"workers": 1, "cpus_per_worker": 1, "start_timeout_s": 60, "autoscale_timeout_s": 240},
    )
    cluster = BootedCluster(root, machines, config_path, name, token)
    cluster.study = write_study(root, study)
    before = set(os.listdir("/tmp"))
    try:
        machines.start()
        check = subprocess.run([sys.executable, "-m", "sweeps.cluster_check", str(config_path)], capture_output=True, text=True, cwd=root)
        assert check.returncode == 0, check.stderr
        cluster.timed("ray up", "up", "-y", str(config_path))
        yield cluster
    finally:
        if not cluster.down:
            subprocess.run([RAY, "down", "-y", str(config_path)], env=cluster.env, capture_output=True, timeout=180, cwd=root)
        machines.stop()
        for leftover in set(os.listdir("/tmp")) - before:  # the launcher's config cache, SSH sockets
            if leftover.startswith(("ray-config-", "ray_ssh_")):
                subprocess.run(["rm", "-rf", f"/tmp/{leftover}"], check=False)
        for suffix in ("state", "lock"):
            Path(f"/tmp/ray/cluster-{name}.{suffix}").unlink(missing_ok=True)
        for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(var, None)
        print(f"cluster boot timings (s): {cluster.timings}")


def test_ray_up_boots_the_head_alone_with_mlflow_behind_a_password(booted):
    status = booted.exec_on_head("ray status")
    assert re.search(r"Idle:\s*\n\s*1 head", status), status
    assert "worker" not in status.split("Resources")[0], "workers join only when trials ask (min_workers: 0)"
    assert booted.running_workers() == 0
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{HEAD}:5000/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert refused.value.code == 401, "MLflow on the head asks for the password"
    assert booted.mlflow().search_experiments(max_results=1) is not None


def test_a_study_job_grows_the_pool_runs_on_the_workers_and_the_pool_shrinks_back(booted):
    t0 = time.time()
    booted.ray("job", "submit", "--no-wait", "--submission-id", JOB_ID, "--address", DASHBOARD, "--", "python", "-m", "sweeps.run", booted.study)
    peak, saw_status, status = 0, "", "PENDING"
    while status not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.time() - t0 < 420, f"the study job did not end in 7 minutes\n{booted.diagnosis()}"
        time.sleep(3)
        peak = max(peak, booted.running_workers())
        if peak == len(WORKERS) and not saw_status:
            nodes = booted.exec_on_head("ray status").split("Pending:")[0]  # Active + Idle
            if sum(int(n) for n in re.findall(r"^\s*(\d+) worker\s*$", nodes, re.M)) == len(WORKERS):
                saw_status = nodes
        reply = booted.ray("job", "status", "--address", DASHBOARD, JOB_ID)
        found = re.search(r"Status for job '[^']+': (\w+)|Job '[^']+' (succeeded|failed|stopped)", reply.stdout + reply.stderr)
        assert found, reply.stdout + reply.stderr
        status = (found.group(1) or found.group(2)).upper()
    booted.timings["study job"] = round(time.time() - t0, 1)
    assert status == "SUCCEEDED", booted.diagnosis()
    assert peak == len(WORKERS), f"the autoscaler started {peak} of {len(WORKERS)} worker machines"
    assert saw_status, "`ray status` on the head never listed both workers"

    t1 = time.time()
    while booted.running_workers():
        assert time.time() - t1 < 180, f"idle workers were not removed: {booted.provider_state()}\n{booted.diagnosis()}"
        time.sleep(2)
    booted.timings["idle workers removed after the job"] = round(time.time() - t1, 1)

    client = booted.mlflow()
    experiment = client.get_experiment_by_name("boot")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(kids) == 2
    assert all(r.info.status == "FINISHED" and r.data.tags["status"] == "completed" for r in kids)
    assert sorted(r.data.tags["ray.node_ips"] for r in kids) == WORKERS, "one trial on each worker machine"
    drivers = {r.data.tags["ray.driver_node_id"] for r in kids}
    workers = {r.data.tags["ray.node_ids"] for r in kids}
    assert len(drivers) == 1 and not drivers & workers, "the trial drivers ran on the head"


def test_ray_down_stops_every_node_and_the_runs_stay_readable(booted):
    booted.timed("ray down", "down", "-y", str(booted.config_path))
    booted.down = True
    deadline = time.time() + 30
    while _ray_nodes_on_host() and time.time() < deadline:
        time.sleep(1)
    assert not _ray_nodes_on_host(), "a Ray node outlived `ray down`"
    assert booted.provider_state() and set(booted.provider_state().values()) == {"terminated"}
    # MLflow is not Ray: on-prem it keeps serving the runs from the head's disk
    client = booted.mlflow()
    experiment = client.get_experiment_by_name("boot")
    assert len(client.search_runs([experiment.experiment_id])) == 3
