"""The memory allocator trials train with: Ray's bundled jemalloc, set up for training.

A trial's training loop runs in a thread (Train V2's worker, Tune's function trainable), and a
CPU training step frees and re-allocates its activations at every step: both make the
allocator part of the step time, in ways that differ between machines (bench/alloc_speed.py).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import ray

from core.specs import ResourcesSpec


def jemalloc() -> Optional[str]:
    """The jemalloc that ships inside Ray's wheel (None where this Ray has none)."""
    path = os.path.join(os.path.dirname(ray.__file__), "core", "libjemalloc.so")
    return path if os.path.isfile(path) else None


# jemalloc's defaults hand freed pages back to the kernel within seconds (dirty and muzzy
# decay). A training step on the CPU frees its activations and allocates them again at the next
# step, so with decay on, jemalloc keeps faulting the same pages in again: 4.8x glibc's page
# faults and steps 3-13% slower than glibc's on one of our machines (bench/alloc_speed.py).
# With decay off it keeps what it freed for the next step: 8% faster than glibc there. PyTorch's
# CPU performance guide sets the same. Only for trials that train on the CPU: on a GPU the
# activations live in CUDA's caching allocator, and the CPU-side peak of loading the model
# should go back to the machine.
CPU_TRAINING_MALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def worker_runtime_env(resources: ResourcesSpec) -> dict[str, Any]:
    """What the Train workers start with, and the study's job on a Ray it starts or joins
    (``sweeps.tuning.cluster.connect``: its trials' Tune actors). Train V2 runs the
    training loop in a thread of the worker, as Tune runs a function trainable, where glibc's
    per-thread malloc arena cost ~9% of CPU throughput against the same loop on a main thread
    on one machine; jemalloc (``resources.jemalloc``), keeping freed pages for CPU training,
    recovers it (bench/loop_speed.py, bench/alloc_speed.py). A MALLOC_CONF of the user's wins."""
    lib = jemalloc() if resources.jemalloc else None
    if lib is None:
        return {}
    env = {"LD_PRELOAD": " ".join(p for p in (os.environ.get("LD_PRELOAD", ""), lib) if p)}
    if not resources.gpus_per_worker and "MALLOC_CONF" not in os.environ:
        env["MALLOC_CONF"] = CPU_TRAINING_MALLOC_CONF
    return {"env_vars": env}


def uses_jemalloc() -> bool:
    """Whether this process allocates with jemalloc (preloaded: ``resources.jemalloc``)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libjemalloc" in line for line in maps)
    except OSError:  # no /proc (macOS), where Ray's wheel ships no jemalloc either
        return False
