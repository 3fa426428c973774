"""Connect to Ray, and work out how many trials fit at once.

Tune only sees each trial's tiny driver share; the Train workers ask for the real CPUs and
GPUs. So the number of trials running at once is capped here by what the cluster's nodes
can actually place, else surplus trials would sit waiting for workers that never start.
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional

import ray

from sweeps.errors import StudyError
from trainables.trial import TRIAL_DRIVER_RESOURCES


def connect(address: Optional[str], local: bool) -> bool:
    """Start or join Ray. Returns True if this call started a local cluster (so we own it)."""
    if ray.is_initialized():
        return False
    if local or not (address or os.environ.get("RAY_ADDRESS")):
        ray.init(address="local", include_dashboard=True, log_to_driver=True)
        return True
    ray.init(address=address or os.environ["RAY_ADDRESS"])
    return False


def trial_slots(resources: Any, nodes: Optional[list[dict[str, Any]]] = None) -> int:
    """How many trials of ``resources`` the alive nodes can hold at once (workers may spread)."""
    nodes = nodes if nodes is not None else [n for n in ray.nodes() if n.get("Alive")]
    worker_slots = 0
    for node in nodes:
        have = node.get("Resources", {})
        fits = math.floor(have.get("CPU", 0) / resources.cpus_per_worker + 1e-9)
        if resources.gpus_per_worker:
            fits = min(fits, math.floor(have.get("GPU", 0) / resources.gpus_per_worker + 1e-9))
        worker_slots += fits
    # each running trial's Tune function holds TRIAL_DRIVER_RESOURCES (memory) somewhere too
    memory = sum(n.get("Resources", {}).get("memory", 0) for n in nodes)
    drivers = math.floor(memory / TRIAL_DRIVER_RESOURCES["memory"]) if memory else worker_slots
    return min(worker_slots // resources.workers, drivers)


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
