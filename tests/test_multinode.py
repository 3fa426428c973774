"""A real multi-node Ray cluster on this machine: a head that trains nothing (like cluster.yaml's)
and two worker nodes, each a separate raylet declaring one GPU it does not physically have,
so Ray's placement is what puts trials and DDP workers on nodes. Real Tune, Train, MLflow.
Also the failures a cluster sees: the driver killed (then --resume), a worker node lost."""

from __future__ import annotations

import pytest

from sweeps.run import main
from tests.conftest import (
    base_study,
    mlflow_runs,
    reported_once,
    trial_runs,
    write_study,
)

pytestmark = [pytest.mark.ray, pytest.mark.own_ray]  # its own 3-node cluster

# Each trial worker asks for a whole (fake) GPU, so a node holds one worker at a time and
# two workers must be on two nodes. gloo: the GPUs are Ray resources, not CUDA devices.
GPU_TRIAL = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1, "backend": "gloo", "start_timeout_s": 60}


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the shared single-node cluster, if an earlier test started it
    # the head advertises cluster.yaml's trial_driver slot: trial drivers and Train controllers run there
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0, "resources": {"trial_driver": 1}, "include_dashboard": True})
    workers = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c, workers
    ray.shutdown()
    c.shutdown()


def node_ids(run) -> list[str]:
    return run.data.tags["ray.node_ids"].split(",")


def study_children(workdir, name):
    client, runs = mlflow_runs(workdir, name)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, "one parent run holds the whole study"
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], kids


def test_trials_spread_over_the_worker_nodes(cluster, workdir, tiny_llama):
    _, workers = cluster
    worker_ids = {n.node_id for n in workers}
    study = base_study(
        tiny_llama, name="spread", methods=["lora", "ia3"], resources=GPU_TRIAL,
        search={"algorithm": "grid", "grid_repeats": 1, "max_concurrent_trials": 2, "metric": "f1_macro", "mode": "max"},
    )
    assert main([write_study(workdir, study)]) == 0
    parent, kids = study_children(workdir, "spread")
    assert parent.info.status == "FINISHED" and len(kids) == 2
    assert all(r.data.tags["status"] == "completed" for r in kids)
    placed = [node_ids(r) for r in kids]
    assert all(len(ids) == 1 and ids[0] in worker_ids for ids in placed), "no trial worker on the CPU-0 head"
    assert {ids[0] for ids in placed} == worker_ids, "the two trials ran on the two worker nodes"
    # ... while their drivers ran on the head (a lost worker node never takes a driver with it;
    # Ray starts each Train controller on its driver's node)
    assert {r.data.tags["ray.driver_node_id"] for r in kids} == {cluster[0].head_node.node_id}


def test_a_two_worker_ddp_trial_spans_both_nodes(cluster, workdir, tiny_llama):
    _, workers = cluster
    study = base_study(tiny_llama, name="ddp", resources={**GPU_TRIAL, "workers": 2})
    assert main([write_study(workdir, study)]) == 0
    parent, kids = study_children(workdir, "ddp")
    (run,) = kids
    assert run.data.tags["status"] == "completed" and run.data.metrics["world_size"] == 2
    assert sorted(node_ids(run)) == sorted(n.node_id for n in workers), "rank 0 and rank 1 on different nodes"


@pytest.mark.parametrize("in_process", [False, True], ids=["train_worker", "in_process"])
def test_resume_after_the_driver_is_killed_runs_no_trial_twice(cluster, workdir, tiny_llama, in_process):
    """SIGKILL the driver (`python -m sweeps.run --address ...`) after its first trial ended, then
    `--resume`: every grid point exactly once in MLflow and in Ray storage, one parent run; with
    Train workers (a multi-node cluster's default) and with trials in their Tune actors."""
    import subprocess
    import sys
    import time

    import mlflow

    study = base_study(
        tiny_llama, name="interrupted",
        search_space={"name": "small_encoder", "overrides": {"lora_r": [2, 4], "lora_alpha_ratio": 2, "lora_dropout": 0.0, "warmup_ratio": 0.0, "lr_scheduler": "linear", "learning_rate": [3e-3]}},
        search={"algorithm": "grid", "grid_repeats": 1, "max_concurrent_trials": 1, "metric": "f1_macro", "mode": "max"},
        data={"source": "generated", "name": "emotion", "rows": 600},
        training={"epochs": 1, "batch_size": 8, "max_length": 24, "evals_per_epoch": 2}, resources={**GPU_TRIAL, "in_process": in_process},
    )
    path = write_study(workdir, study)
    address = cluster[0].address
    driver = subprocess.Popen([sys.executable, "-m", "sweeps.run", path, "--address", address], cwd=workdir,
                              stdout=subprocess.DEVNULL, stderr=open(workdir / "driver.log", "w"))
    try:
        deadline = time.time() + 300
        while not trial_runs(workdir, "interrupted", "completed"):
            assert driver.poll() is None, (workdir / "driver.log").read_text()[-3000:]
            assert time.time() < deadline, "no trial completed in 5 min"
            time.sleep(0.5)
    finally:
        driver.kill()  # SIGKILL: no clean-up in the driver at all
        driver.wait()
    first = trial_runs(workdir, "interrupted", "completed")
    assert len(first) == 1, "kill the driver mid-study"
    # a driver that joins a cluster gives its trials the allocator too, in a Train worker or a Tune actor
    assert first[0].data.metrics["jemalloc"] == 1

    assert main([path, "--resume"]) == 0
    _, runs = mlflow_runs(workdir, "interrupted")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and parents[0].data.tags["resumed"] == "true"
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["lora_r"] for r in kids) == ["2", "4"], "every grid point once, none twice"
    assert all(r.data.tags["status"] == "completed" and r.info.status == "FINISHED" for r in kids)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    for done in first:  # finished before the kill: same run, its metrics not logged again
        again = next(r for r in kids if r.info.run_id == done.info.run_id)
        assert again.data.metrics == done.data.metrics
        assert len(client.get_metric_history(done.info.run_id, "f1_macro")) == 2  # 2 eval points, once each
    assert parents[0].data.metrics["trials_completed"] == 2
    # Tune's own record agrees: 2 trials in the experiment, not 2 + the re-run ones
    assert len(list((workdir / "ray_results").glob("interrupted-*/run_trial_*"))) == 2
    assert main([path, "--resume"]) == 2  # nothing left to resume: clear error, exit 2


def test_a_lost_worker_node_costs_only_the_progress_since_the_last_checkpoint(cluster, workdir, tiny_llama):
    """Kill the node a trial trains on, without warning (like a spot node reclaimed): the trial
    resumes on the other worker node from its last checkpoint and the study finishes.
    Runs last in this module: it removes a node."""
    import threading
    import time

    from ray.util.state import list_actors

    c, workers = cluster
    study = base_study(
        tiny_llama, name="lost", data={"source": "generated", "name": "emotion", "rows": 400},
        # the tiny Llama (bookkeeping, not learning): eight checkpoints, so the node loss lands mid-run
        training={"epochs": 1, "batch_size": 8, "max_length": 24, "evals_per_epoch": 8},
        resources={**GPU_TRIAL, "max_failures": 2},
    )
    lost: list[str] = []

    def preempt() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            if reported_once(workdir, "lost"):
                (actor,) = list_actors(address=c.address, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
                node = next(n for n in workers if n.node_id == actor.node_id)
                c.remove_node(node, allow_graceful=False)
                lost.append(node.node_id)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=preempt, daemon=True)
    killer.start()
    assert main([write_study(workdir, study)]) == 0
    killer.join(timeout=30)
    assert lost, "the trial finished before its first checkpoint was seen"
    _, kids = study_children(workdir, "lost")
    (run,) = kids
    assert run.data.tags["status"] == "completed" and run.data.metrics["progress"] == 1
    assert run.data.metrics["resumed_from_step"] > 0, "resumed from the checkpoint, not from scratch"
    assert node_ids(run)[0] != lost[0], "finished on another node"
