"""The allocator trials train with (trainables/training/allocator.py): what their processes get, that the
setting does what it is for (freed pages kept: no page faults to re-use them), and that a study
that starts its own Ray really trains its trials on it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.specs import ResourcesSpec
from trainables.training.allocator import CPU_TRAINING_MALLOC_CONF, jemalloc, worker_runtime_env

needs_jemalloc = pytest.mark.skipif(jemalloc() is None or sys.platform != "linux", reason="this Ray ships no jemalloc (Linux only)")

# Allocate, touch and free a 64 MiB block 20 times through the process's malloc (jemalloc where
# preloaded), as a CPU training step does with its activations; print the minor page faults the
# last 19 rounds took (the first one has to fault its pages in once whatever the allocator).
REUSE = """
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def round_trip():
    p = libc.malloc(size); ctypes.memset(p, 1, size); libc.free(p)
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(19):
    round_trip()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_reusing(env: dict[str, str]) -> int:
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    proc = subprocess.run([sys.executable, "-c", REUSE], env={**base, **env}, capture_output=True, text=True, check=True)
    assert "<jemalloc>" not in proc.stderr, proc.stderr  # jemalloc says so when it rejects its MALLOC_CONF
    return int(proc.stdout.strip())


@needs_jemalloc
def test_cpu_trials_get_jemalloc_keeping_freed_pages_gpu_trials_and_a_users_conf_are_left_alone(monkeypatch):
    monkeypatch.delenv("MALLOC_CONF", raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/opt/profiler.so")
    cpu = worker_runtime_env(ResourcesSpec(workers=1, cpus_per_worker=1, gpus_per_worker=0))["env_vars"]
    assert cpu == {"LD_PRELOAD": f"/opt/profiler.so {jemalloc()}", "MALLOC_CONF": CPU_TRAINING_MALLOC_CONF}
    for gpus in (1, 0.25, "auto"):  # activations live on the GPU: the CPU-side load peak goes back
        assert "MALLOC_CONF" not in worker_runtime_env(ResourcesSpec(gpus_per_worker=gpus))["env_vars"]
    monkeypatch.setenv("MALLOC_CONF", "narenas:2")  # the user's own tuning (inherited by Ray's workers)
    assert "MALLOC_CONF" not in worker_runtime_env(ResourcesSpec(gpus_per_worker=0))["env_vars"]
    assert worker_runtime_env(ResourcesSpec(jemalloc=False)) == {}


@needs_jemalloc
def test_a_joined_or_submitted_job_gets_the_trials_env_less_what_the_submission_sets(monkeypatch):
    import json

    from sweeps.tuning.cluster import SUBMITTED_JOB_CONFIG, job_runtime_env

    monkeypatch.delenv("MALLOC_CONF", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    cpu = ResourcesSpec(gpus_per_worker=0)
    monkeypatch.delenv(SUBMITTED_JOB_CONFIG, raising=False)
    assert job_runtime_env(cpu) == worker_runtime_env(cpu)
    # `ray job submit --runtime-env-json '{"env_vars": {"LD_PRELOAD": ...}}'`: Ray would refuse
    # to merge a second LD_PRELOAD from ray.init, so the submission's own stays alone
    monkeypatch.setenv(SUBMITTED_JOB_CONFIG, json.dumps({"runtime_env": {"env_vars": {"LD_PRELOAD": "/opt/x.so"}}}))
    assert job_runtime_env(cpu) == {"env_vars": {"MALLOC_CONF": CPU_TRAINING_MALLOC_CONF}}
    monkeypatch.setenv(SUBMITTED_JOB_CONFIG, json.dumps({"runtime_env": {"pip": ["x"]}}))
    assert job_runtime_env(cpu) == worker_runtime_env(cpu)
    assert job_runtime_env(ResourcesSpec(jemalloc=False)) == {}


@needs_jemalloc
def test_the_cpu_trial_allocator_reuses_freed_pages_where_jemalloc_defaults_fault_them_in_again(monkeypatch):
    monkeypatch.delenv("MALLOC_CONF", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    pages = 19 * (64 << 20) // os.sysconf("SC_PAGE_SIZE")  # what re-faulting every round would cost
    trial = faults_reusing(worker_runtime_env(ResourcesSpec(gpus_per_worker=0))["env_vars"])
    defaults = faults_reusing({"LD_PRELOAD": jemalloc()})
    assert trial < pages // 20, (trial, pages)
    assert defaults > pages // 2, (defaults, pages)  # the cost the setting removes (bench/alloc_speed.py)


@needs_jemalloc
@pytest.mark.ray
@pytest.mark.own_ray  # the study must start Ray itself: after every shared-cluster test
def test_a_study_that_starts_its_own_ray_trains_its_trials_on_jemalloc(workdir, tiny_llama):
    """Real local Ray started by the study (cluster.connect with the workers' runtime env), a
    real trial in its Tune actor, real MLflow: the trial reports the allocator it ran on."""
    import ray

    from sweeps.study import load_study
    from sweeps.tuning.tuner import run_study
    from tests.conftest import base_study, mlflow_runs, write_study

    ray.shutdown()  # the shared cluster (conftest) starts without the workers' runtime env
    try:
        spec = base_study(tiny_llama, name="allocator")
        spec["training"].update(max_steps=2, eval_every_steps=2)
        outcome = run_study(load_study(write_study(workdir, spec), []), local=True)
        assert not ray.is_initialized()  # the study stopped the Ray it started
        assert outcome.counts["completed"] >= 1
        _, found = mlflow_runs(workdir, "allocator")
        trials = [r for r in found if "mlflow.parentRunId" in r.data.tags]
        assert trials and all(r.data.metrics["jemalloc"] == 1 and r.data.metrics["in_process"] == 1 for r in trials)
    finally:
        ray.shutdown()
