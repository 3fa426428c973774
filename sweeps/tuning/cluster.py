"""Connect to Ray, and work out how many trials fit at once.

Tune only sees each trial's tiny driver share; the Train workers ask for the real CPUs and
GPUs. So the number of trials running at once is capped here by what the cluster's nodes
can actually place, else surplus trials would sit waiting for workers that never start.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Optional

import ray

from core.errors import StudyError
from trainables.training.allocator import worker_runtime_env
from trainables.training.trial import (
    DRIVER_NODE_RESOURCE,
    DRIVER_NODE_SHARE,
    TRIAL_DRIVER_RESOURCES,
)

# Where Ray's job manager hands a submitted job's config (its runtime env) to the driver.
SUBMITTED_JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def driver_resources() -> dict[str, float]:
    """What each trial's driver asks for: memory, and a share of the head's ``trial_driver``
    resource where the cluster has one (cluster.yaml), which pins drivers to that node."""
    resources = dict(TRIAL_DRIVER_RESOURCES)
    if ray.cluster_resources().get(DRIVER_NODE_RESOURCE, 0) > 0:
        resources[DRIVER_NODE_RESOURCE] = DRIVER_NODE_SHARE
    return resources


def in_process(resources: Any, nodes: Optional[list[dict[str, Any]]] = None, groups: Optional[list[dict[str, Any]]] = None) -> bool:
    """``resources.in_process`` decided: auto means yes for one-worker trials on a cluster of
    one node that no autoscaler grows and that pins no trial drivers (cluster.yaml's head)."""
    if resources.in_process != "auto":
        return bool(resources.in_process)
    if resources.workers != 1:
        return False
    nodes = nodes if nodes is not None else [n for n in ray.nodes() if n.get("Alive")]
    groups = groups if groups is not None else autoscaler_groups()
    pinned = any(n.get("Resources", {}).get(DRIVER_NODE_RESOURCE, 0) > 0 for n in nodes)
    return len(nodes) == 1 and not groups and not pinned


def decide_in_process(study: Any) -> Any:
    """``study`` with ``resources.in_process`` decided (true or false, never auto)."""
    decided = dataclasses.replace(study, resources=dataclasses.replace(study.resources, in_process=in_process(study.resources)))
    decided.space = study.space  # not an init field: replace() leaves it unset
    return decided


def trial_resources(resources: Any) -> dict[str, float]:
    """What a trial's Tune actor asks for: the driver's share when Train workers do the
    training, the worker's CPUs and GPU share when the actor trains itself (in_process)."""
    if resources.in_process is not True:
        return driver_resources()
    own = {**TRIAL_DRIVER_RESOURCES, "CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker:
        own["GPU"] = resources.gpus_per_worker
    return own


def connect(address: Optional[str], local: bool, resources: Any = None) -> bool:
    """Start or join Ray. Returns True if this call started a local cluster (so we own it).
    Either way this study's workers start with the trials' allocator (``resources.jemalloc``):
    trials that train in their Tune actor need it there, as Train workers do (they get it in
    their own runtime env too). Joining assumes the nodes' Ray sits where the driver's does, as
    Train workers' runtime env already does (cluster.yaml: one image)."""
    if ray.is_initialized():
        return False
    env = job_runtime_env(resources) if resources is not None else {}
    if local or not (address or os.environ.get("RAY_ADDRESS")):
        ray.init(address="local", include_dashboard=True, log_to_driver=True, runtime_env=env or None)
        return True
    ray.init(address=address or os.environ["RAY_ADDRESS"], runtime_env=env or None)
    return False


def job_runtime_env(resources: Any) -> dict[str, Any]:
    """The workers' runtime env (``allocator.worker_runtime_env``) for this driver's job, less
    the variables a job submitted with its own runtime env already sets (``ray job submit
    --runtime-env``): Ray refuses to merge the same variable from both."""
    env = worker_runtime_env(resources)
    submitted = json.loads(os.environ.get(SUBMITTED_JOB_CONFIG) or "{}")
    taken = set(((submitted.get("runtime_env") or {}).get("env_vars") or {}))
    env_vars = {k: v for k, v in env.get("env_vars", {}).items() if k not in taken}
    return {"env_vars": env_vars} if env_vars else {}


# An autoscaler node group with no upper bound (max_count -1) counts as this many nodes.
UNBOUNDED_NODES = 1000


def autoscaler_groups() -> list[dict[str, Any]]:
    """The node types the cluster's autoscaler may launch, as ``{"Resources", "max_count"}``;
    empty on a fixed cluster (local Ray, ``ray start`` by hand). Read from the config the
    autoscaler publishes in the GCS, as Ray Train itself does before placing workers."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # an older/newer Ray without it: behave as a fixed cluster
        return []
    if config is None:
        return []
    return [
        {"Resources": dict(group.resources), "max_count": UNBOUNDED_NODES if group.max_count == -1 else group.max_count}
        for group in config.node_group_configs
        if group.max_count != 0
    ]


def _worker_fits(resources: Any, have: dict[str, float]) -> int:
    fits = math.floor(have.get("CPU", 0) / resources.cpus_per_worker + 1e-9)
    if resources.gpus_per_worker:
        fits = min(fits, math.floor(have.get("GPU", 0) / resources.gpus_per_worker + 1e-9))
    return fits


def trial_slots(resources: Any, nodes: Optional[list[dict[str, Any]]] = None, groups: Optional[list[dict[str, Any]]] = None) -> int:
    """How many trials of ``resources`` the cluster can hold at once (workers may spread):
    the alive nodes, or what the autoscaler may grow to, whichever is more."""
    nodes = nodes if nodes is not None else [n for n in ray.nodes() if n.get("Alive")]
    groups = groups if groups is not None else autoscaler_groups()
    alive = sum(_worker_fits(resources, n.get("Resources", {})) for n in nodes)
    scaled = sum(_worker_fits(resources, g["Resources"]) * g["max_count"] for g in groups)
    worker_slots = max(alive, scaled)
    # each running trial's Tune function holds TRIAL_DRIVER_RESOURCES (memory) somewhere too
    memory = sum(n.get("Resources", {}).get("memory", 0) for n in nodes)
    memory += sum(g["Resources"].get("memory", 0) * g["max_count"] for g in groups)
    drivers = math.floor(memory / TRIAL_DRIVER_RESOURCES["memory"]) if memory else worker_slots
    return min(worker_slots // resources.workers, drivers)


def start_timeout(resources: Any, groups: Optional[list[dict[str, Any]]] = None) -> float:
    """How long a trial may wait for its workers: longer where the autoscaler can add a
    node that fits one (booting it takes minutes), else ``start_timeout_s``."""
    groups = groups if groups is not None else autoscaler_groups()
    if any(_worker_fits(resources, g["Resources"]) >= 1 for g in groups):
        return max(resources.start_timeout_s, resources.autoscale_timeout_s)
    return resources.start_timeout_s


def concurrency(resources: Any, requested: Optional[int]) -> int:
    """Trials to run at once; a StudyError if not even one trial can ever be placed."""
    slots = trial_slots(resources)
    if slots < 1:
        total = ray.cluster_resources()
        need = f"{resources.workers} worker(s) x {{CPU: {resources.cpus_per_worker}, GPU: {resources.gpus_per_worker}}}"
        raise StudyError(
            "resources",
            f"one trial needs {need} but the cluster has CPU {total.get('CPU', 0):g}, GPU {total.get('GPU', 0):g}",
            "lower resources.workers / cpus_per_worker / gpus_per_worker, or run on a bigger cluster",
        )
    return min(slots, requested) if requested else slots
