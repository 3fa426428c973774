"""A trial whose worker dies resumes from its last checkpoint (adapter, optimizer, LR schedule,
step counters, RNG) and ends exactly where an uninterrupted run ends. Real Ray, real kill."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from sweeps.run import main
from tests.conftest import base_study, mlflow_runs, reported_once, trial_runs, write_study

pytestmark = pytest.mark.ray


def kill_worker_after_first_checkpoint(workdir: Path, study: str, stop: threading.Event, killed: list[int]) -> None:
    """Once the study's first checkpoint is registered, SIGKILL its Ray Train worker."""
    from ray.util.state import list_actors

    while not stop.is_set():
        if reported_once(workdir, study):
            for actor in list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]):
                os.kill(actor.pid, signal.SIGKILL)
                killed.append(actor.pid)
            return
        time.sleep(0.2)


def final_metrics(workdir: Path, experiment: str) -> dict[str, float]:
    _, runs = mlflow_runs(workdir, experiment)
    (trial,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert trial.data.tags["status"] == "completed", trial.data.tags
    return trial.data.metrics


def test_a_killed_worker_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_run(ray_cluster, workdir, minilm_path):
    def study(name):
        return base_study(
            minilm_path, name=name, data={"source": "generated", "name": "emotion", "rows": 300},
            search_space={"name": "small_encoder", "overrides": {"lora_r": [4], "lora_alpha_ratio": 2, "lora_dropout": 0.1, "warmup_ratio": 0.1, "lr_scheduler": "linear", "learning_rate": [3e-3]}},
            training={"epochs": 2, "batch_size": 16, "max_length": 24, "evals_per_epoch": 2, "seed": 7},
            resources={"workers": 1, "cpus_per_worker": 1, "max_failures": 1},
        )

    assert main([write_study(workdir, study("straight"), "straight.yaml")]) == 0
    straight = final_metrics(workdir, "straight")
    assert straight["resumed_from_step"] == 0

    stop, killed = threading.Event(), []
    killer = threading.Thread(target=kill_worker_after_first_checkpoint, args=(workdir, "killed", stop, killed), daemon=True)
    killer.start()
    try:
        assert main([write_study(workdir, study("killed"), "killed.yaml")]) == 0
    finally:
        stop.set()
        killer.join(timeout=10)
    assert killed, "the worker finished before the first checkpoint could be seen"
    resumed = final_metrics(workdir, "killed")
    assert resumed["resumed_from_step"] > 0  # it did not start over
    # same data order, dropout masks, optimizer and LR state after the restart: same end point
    for key in ("step", "train_loss", "eval_loss", "f1_macro", "accuracy", "learning_rate"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-5, abs=1e-6), key


def test_resume_after_the_driver_is_killed_runs_no_trial_twice(ray_cluster, workdir, tiny_llama):
    import subprocess
    import sys

    import mlflow

    study = base_study(
        tiny_llama, name="interrupted",
        search_space={"name": "small_encoder", "overrides": {"lora_r": [2, 4], "lora_alpha_ratio": 2, "lora_dropout": 0.0, "warmup_ratio": 0.0, "lr_scheduler": "linear", "learning_rate": [3e-3]}},
        search={"algorithm": "grid", "grid_repeats": 1, "max_concurrent_trials": 1, "metric": "f1_macro", "mode": "max"},
        data={"source": "generated", "name": "emotion", "rows": 600},
        training={"epochs": 1, "batch_size": 8, "max_length": 24, "evals_per_epoch": 2},
    )
    path = write_study(workdir, study)
    address = ray_cluster.get_runtime_context().gcs_address
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


def test_resume_forgets_trials_the_dead_driver_started_but_tune_never_saved(tmp_path):
    """Unit edge case of --resume: the folder and MLflow run of a trial missing from Tune's
    saved state are removed; those of saved trials and other studies' runs are kept."""
    import mlflow

    from sweeps import resume

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.create_experiment("s")
    parent = client.create_run(exp).info.run_id
    other_parent = client.create_run(exp).info.run_id
    runs = {}
    for name, owner in [("run_trial_aaaa0001", parent), ("run_trial_aaaa0002", parent), ("run_trial_bbbb0003", other_parent)]:
        runs[name] = client.create_run(exp, tags={"mlflow.parentRunId": owner, "trial_name": name}).info.run_id
    exp_dir = tmp_path / "ray_results" / "s-1"
    for name in ("run_trial_aaaa0001", "run_trial_aaaa0002"):
        (exp_dir / name).mkdir(parents=True)
        (exp_dir / "_train" / f"s-1-{name.rsplit('_', 1)[-1]}").mkdir(parents=True)

    lost = resume.forget_lost_trials(str(tmp_path / "ray_results"), "s-1", {"run_trial_aaaa0001"}, uri, parent)

    assert lost == 1
    assert sorted(p.name for p in exp_dir.iterdir()) == ["_train", "run_trial_aaaa0001"]
    assert [p.name for p in (exp_dir / "_train").iterdir()] == ["s-1-aaaa0001"]
    assert client.get_run(runs["run_trial_aaaa0002"]).info.lifecycle_stage == "deleted"
    assert client.get_run(runs["run_trial_aaaa0001"]).info.lifecycle_stage == "active"
    assert client.get_run(runs["run_trial_bbbb0003"]).info.lifecycle_stage == "active"
