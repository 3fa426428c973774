"""A trial whose worker dies resumes from its last checkpoint (adapter, optimizer, LR schedule,
step counters, RNG) and ends exactly where an uninterrupted run ends. Real Ray, real kill: of
its Ray Train worker (Train restarts the worker), or, for a trial that trains in its own Tune
actor (resources.in_process), of that actor (Tune restarts the trial).
(A killed driver + ``--resume`` is tested on the multi-node cluster, tests/test_multinode.py.)"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from sweeps.run import main
from tests.conftest import base_study, eval_points_logged, trial_runs, write_study

pytestmark = pytest.mark.ray


# The actor that runs a trial's training loop: a Ray Train worker, or the trial's Tune actor
# (the class Tune wraps a function trainable in).
TRAINING_ACTOR = {False: "RayTrainWorker", True: "ImplicitFunc"}


def kill_one_worker_once_both_trials_checkpointed(workdir: Path, study: str, stop: threading.Event, killed: list[int], actor_class: str) -> None:
    """Once both trials have logged a second eval point, SIGKILL one actor that trains: by then
    each has a checkpoint kept, however it keeps them. Waiting for the first point was not
    always enough while in-process trials checkpointed through Tune, which tells its callbacks
    (our MLflow logger) about a result before a separate save task registers its checkpoint: the
    kill could land in between and the trial rightly restarted from scratch (twice in CI on
    2026-12-04). They now keep their own, on disk before the report; the margin stays."""
    import ray
    from ray.util.state import list_actors

    while not stop.is_set():
        points = eval_points_logged(workdir, study)
        if len(points) == 2 and min(points) >= 2:
            alive = list_actors(address=ray.get_runtime_context().gcs_address,  # this test's cluster, not another
                                filters=[("state", "=", "ALIVE")], limit=1000)
            # Ray may qualify the name (wrap_function.<locals>.ImplicitFunc once Tune defined it again)
            actors = [a for a in alive if a.class_name.rsplit(".", 1)[-1] == actor_class]
            if actors:
                os.kill(actors[0].pid, signal.SIGKILL)
                killed.append(actors[0].pid)
            return
        time.sleep(0.2)


@pytest.mark.parametrize("in_process", [False, True], ids=["train_worker", "in_process"])
def test_a_killed_worker_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_run(ray_cluster, workdir, tiny_llama, in_process):
    # The same trial twice, side by side (grid_repeats: same config and seed); one of them loses
    # its worker mid-run. Both must end at the same point. The tiny Llama: this checks bookkeeping,
    # not learning; four eval points (checkpoints) per epoch leave the kill six to land before.
    study = base_study(
        tiny_llama, name="killed", data={"source": "generated", "name": "emotion", "rows": 600},
        search_space={"name": "small_encoder", "overrides": {"lora_r": [4], "lora_alpha_ratio": 2, "lora_dropout": 0.1, "warmup_ratio": 0.1, "lr_scheduler": "linear", "learning_rate": [3e-3]}},
        training={"epochs": 2, "batch_size": 16, "max_length": 24, "evals_per_epoch": 4, "seed": 7},
        resources={"workers": 1, "cpus_per_worker": 1, "max_failures": 1, "in_process": in_process},
    )
    study["search"].update(grid_repeats=2, max_concurrent_trials=2)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=kill_one_worker_once_both_trials_checkpointed, args=(workdir, "killed", stop, killed, TRAINING_ACTOR[in_process]), daemon=True)
    killer.start()
    try:
        assert main([write_study(workdir, study)]) == 0
    finally:
        stop.set()
        killer.join(timeout=10)
    assert killed, "the trials finished before both first checkpoints could be seen"
    runs = trial_runs(workdir, "killed")
    assert sorted(r.data.tags["status"] for r in runs) == ["completed", "completed"]
    straight, resumed = sorted((r.data.metrics for r in runs), key=lambda m: m["resumed_from_step"])
    assert straight["in_process"] == resumed["in_process"] == int(in_process)
    assert straight["resumed_from_step"] == 0 and resumed["resumed_from_step"] > 0  # it did not start over
    # same data order, dropout masks, optimizer and LR state after the restart: same end point
    for key in ("step", "train_loss", "eval_loss", "f1_macro", "accuracy", "learning_rate"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-5, abs=1e-6), key


def test_resume_forgets_trials_the_dead_driver_started_but_tune_never_saved(tmp_path):
    """Unit edge case of --resume: the folder and MLflow run of a trial missing from Tune's
    saved state are removed; those of saved trials and other studies' runs are kept."""
    import mlflow

    from sweeps.tuning import resume

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
