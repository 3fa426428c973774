"""A real multi-node Ray cluster on this machine: a head that trains nothing (like cluster.yaml's)
and two worker nodes, each a separate raylet declaring one GPU it does not physically have,
so Ray's placement is what puts trials and DDP workers on nodes. Real Tune, Train, MLflow."""

from __future__ import annotations

import pytest

from sweeps.run import main
from tests.conftest import base_study, mlflow_runs, reported_once, write_study

pytestmark = pytest.mark.ray

# Each trial worker asks for a whole (fake) GPU, so a node holds one worker at a time and
# two workers must be on two nodes. gloo: the GPUs are Ray resources, not CUDA devices.
GPU_TRIAL = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1, "backend": "gloo", "start_timeout_s": 60}


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the shared single-node cluster, if an earlier test started it
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0, "include_dashboard": True})
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


def test_a_two_worker_ddp_trial_spans_both_nodes(cluster, workdir, tiny_llama):
    _, workers = cluster
    study = base_study(tiny_llama, name="ddp", resources={**GPU_TRIAL, "workers": 2})
    assert main([write_study(workdir, study)]) == 0
    parent, kids = study_children(workdir, "ddp")
    (run,) = kids
    assert run.data.tags["status"] == "completed" and run.data.metrics["world_size"] == 2
    assert sorted(node_ids(run)) == sorted(n.node_id for n in workers), "rank 0 and rank 1 on different nodes"


def test_a_lost_worker_node_costs_only_the_progress_since_the_last_checkpoint(cluster, workdir, minilm_path):
    """Kill the node a trial trains on, without warning (like a spot node reclaimed): the trial
    resumes on the other worker node from its last checkpoint and the study finishes.
    Runs last in this module: it removes a node."""
    import threading
    import time

    from ray.util.state import list_actors

    c, workers = cluster
    study = base_study(
        minilm_path, name="lost", data={"source": "generated", "name": "emotion", "rows": 400},
        training={"epochs": 1, "batch_size": 16, "max_length": 24, "evals_per_epoch": 4},
        resources={**GPU_TRIAL, "max_failures": 2},
    )
    lost: list[str] = []

    def preempt() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            if reported_once(workdir, "lost"):
                (actor,) = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
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
