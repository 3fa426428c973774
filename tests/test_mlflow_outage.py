"""A real ``mlflow server`` killed and restarted in the middle of a sweep: the sweep waits for it
(MLflow's client retries) and every trial's results land, complete, on that trial's own run;
credentials in the tracking URI never reach a param, an artifact or Ray storage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import MlflowServer, base_study, write_study

pytestmark = pytest.mark.ray

TRIAL_METRICS = ("train_loss", "f1_macro", "eval_loss", "step")


def test_sweep_survives_a_tracking_server_restart_and_keeps_secrets_out(tmp_path, tiny_llama, ray_cluster):
    import mlflow

    (tmp_path / "server").mkdir()
    server = MlflowServer(tmp_path / "server").start()
    secret_uri = server.uri.replace("http://", "http://alice:s3cret@")
    work = tmp_path / "work"
    work.mkdir()
    spec = base_study(tiny_llama, name="outage", tracking={"tracking_uri": secret_uri})
    spec["search_space"]["overrides"]["learning_rate"] = [3e-3, 1e-3]
    spec["training"].update(max_steps=8, eval_every_steps=2)
    spec["search"]["max_concurrent_trials"] = 2  # both trials' runs and results meet the outage
    study = write_study(work, spec)
    # MLflow's client retries with backoff (factor 2 by default: ~4 min in all); factor 1 keeps
    # the wait after the restart short here
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    # a separate driver process on the run's shared cluster (its MLflow client is the one that retries)
    address = ray_cluster.get_runtime_context().gcs_address
    sweep = subprocess.Popen([sys.executable, "-m", "sweeps.run", study, "--address", address], cwd=work, env=env,
                             stdout=open(work / "out.log", "w"), stderr=open(work / "err.log", "w"))
    client = mlflow.tracking.MlflowClient(server.uri)
    try:
        # the outage starts once the first trial has logged a result
        deadline = time.time() + 240
        while time.time() < deadline and sweep.poll() is None:
            exp = client.get_experiment_by_name("outage")
            runs = client.search_runs([exp.experiment_id], "tags.trial_name != ''") if exp else []
            if any("step" in r.data.metrics for r in runs):
                break
            time.sleep(0.5)
        assert sweep.poll() is None, (work / "err.log").read_text()[-3000:]
        server.kill()
        time.sleep(4)  # down ~12 s with the restart: the sweep goes on training and waits on MLflow's retries
        server.start()
        assert sweep.wait(timeout=400) == 0, (work / "err.log").read_text()[-3000:]
        found = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
        check_runs(client, found, tmp_path)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        server.kill()
    for root, _, files in os.walk(work / "ray_results"):
        for name in files:
            if name.endswith((".json", ".csv", ".yaml", ".txt")):
                assert "s3cret" not in open(os.path.join(root, name), errors="ignore").read(), name


def check_runs(client, found, tmp_path) -> None:
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert sorted(float(r.data.params["learning_rate"]) for r in trials) == [1e-3, 3e-3]  # no run twice, none lost
    for run in trials:
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        # every eval point on its own run (a retried request may log a point twice)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "f1_macro")]
        assert sorted(set(steps)) == [2, 4, 6, 8], steps
    assert not set(TRIAL_METRICS) & set(parent.data.metrics), parent.data.metrics  # no trial result on the parent

    # the password is nowhere: params of every run, the study file, Ray's storage
    for run in found:
        assert "s3cret" not in json.dumps(run.data.params) + json.dumps(run.data.tags)
    study_yaml = open(client.download_artifacts(parent.info.run_id, "study.yaml", str(tmp_path))).read()
    assert "alice:***@" in study_yaml and "s3cret" not in study_yaml
