"""Real sweeps on a real local Ray cluster, tracked in a real MLflow store.

Covers: ASHA with more trials than slots (no hang, early-stopped trials free their CPUs), and a starved
trial failing with a clear error instead of waiting forever. Grid / random / Optuna, every method and
the MLflow run tree: tests/test_catalogue.py (every study, smoke mode) and tests/test_report.py (the
demo study with Optuna on a real MLflow server).
"""

from __future__ import annotations

import time

import pytest

from sweeps.run import main
from tests.conftest import base_study, mlflow_runs, write_study

pytestmark = pytest.mark.ray

def wait_all_cpus_free(ray, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ray.available_resources().get("CPU", 0) >= ray.cluster_resources()["CPU"] - 1e-6:
            return True
        time.sleep(0.5)
    return False


def test_asha_with_more_trials_than_slots_finishes_and_frees_cpus(ray_cluster, workdir, tiny_llama):
    # One slot (each trial's worker takes 1.5 of the 2 CPUs), three trials: a learning rate that
    # learns first, then two that cannot move the model (eval_loss stays at its initial value).
    # ASHA must stop those at the first rung; if a stopped trial kept its CPUs, the next one
    # could not start and would fail after 40 s. eval_loss is continuous, so no ties at a rung.
    study = base_study(
        tiny_llama,
        search={"algorithm": "grid", "num_samples": 1, "metric": "eval_loss", "mode": "min"},
        scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2},
        training={"epochs": 1, "batch_size": 8, "max_length": 24, "evals_per_epoch": 4},
        resources={"workers": 1, "cpus_per_worker": 1.5, "start_timeout_s": 40},
    )
    study["data"]["rows"] = 200
    study["search_space"]["overrides"]["learning_rate"] = [0.01, 1e-9, 2e-9]
    before = trial_actors(ray_cluster)
    assert main([write_study(workdir, study)]) == 0
    # in their own Tune actors (one node: resources.in_process), the stopped trials' actor is
    # handed to the next trial (reuse_actors): one process, imports paid once, for all three
    assert len(trial_actors(ray_cluster) - before) == 1, "one Tune actor ran the three trials"
    client, runs = mlflow_runs(workdir, "unit")
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    by_lr = {float(r.data.params["learning_rate"]): r for r in kids}
    assert len(kids) == 3 and by_lr[0.01].data.tags["status"] == "completed", [r.data.tags for r in kids]
    stopped = [r for r in kids if r.data.tags["status"] == "early_stopped"]
    assert len(stopped) >= 2, sorted(r.data.tags["status"] for r in kids)
    for run in stopped:  # stopped at a rung: fewer eval points than the 4 planned
        assert len(client.get_metric_history(run.info.run_id, "eval_loss")) < 4
    assert wait_all_cpus_free(ray_cluster), ray_cluster.available_resources()


def trial_actors(ray) -> set[str]:
    """Ids of every Tune trial actor (alive or not) the shared cluster has started so far."""
    from ray.util.state import list_actors

    actors = list_actors(address=ray.get_runtime_context().gcs_address, limit=10_000, raise_on_missing_output=False)
    return {a.actor_id for a in actors if a.class_name.rsplit(".", 1)[-1] == "ImplicitFunc"}


@pytest.fixture
def hog(ray_cluster):
    """Reserve part of the cluster (a placement group), as another job would."""
    from ray.util.placement_group import placement_group, remove_placement_group

    groups = []

    def take(resources: dict[str, float]):
        group = placement_group([resources])
        ray_cluster.get(group.ready(), timeout=30)
        groups.append(group)

    yield take
    for group in groups:
        remove_placement_group(group)
    assert wait_all_cpus_free(ray_cluster)


def test_trial_whose_workers_cannot_be_placed_fails_with_a_clear_error(ray_cluster, workdir, tiny_llama, hog, capsys):
    hog({"CPU": 2})  # the trial's driver (memory only) starts; its 1-CPU Train worker never can
    study = base_study(tiny_llama, resources={"workers": 1, "cpus_per_worker": 1, "start_timeout_s": 5, "in_process": False})
    started = time.time()
    assert main([write_study(workdir, study)]) == 1
    assert time.time() - started < 120
    err = capsys.readouterr().err
    assert "every trial failed" in err and "could not start its 1 worker(s)" in err
    _, runs = mlflow_runs(workdir, "unit")
    kid = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    # the trial's own line: its error and where the traceback is
    line = next(ln for ln in err.splitlines() if ln.startswith(f"trial {kid.data.tags['trial_name']} failed:"))
    assert "could not start its 1 worker(s)" in line and "error.txt" in line
    assert kid.info.status == "FAILED" and kid.data.tags["status"] == "failed"
    assert "could not start" in kid.data.tags["error"]
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FAILED"


@pytest.mark.parametrize("held", ["memory", "CPU"])
def test_study_whose_trials_cannot_start_at_all_fails_with_a_clear_error(ray_cluster, workdir, tiny_llama, hog, capsys, held):
    # Another job holds (almost) all the cluster's memory: Tune cannot even start a trial's driver;
    # or all its CPUs, which a trial that trains in its own Tune actor (in_process) asks for.
    hog({"memory": ray_cluster.available_resources()["memory"] - 2**20} if held == "memory" else {"CPU": 2})
    study = base_study(tiny_llama, resources={"workers": 1, "cpus_per_worker": 1, "start_timeout_s": 5, "in_process": held == "CPU"})
    started = time.time()
    assert main([write_study(workdir, study)]) == 1
    assert time.time() - started < 120
    last = capsys.readouterr().err.strip().splitlines()[-1]
    wanted = "CPU 1, memory 512 MiB" if held == "CPU" else "waiting for memory 512 MiB"
    assert last.startswith("error: no trial could start within 5s") and wanted in last, last
    _, runs = mlflow_runs(workdir, "unit")
    assert len(runs) == 1  # the parent only: no trial ever ran
    assert runs[0].info.status == "FAILED" and "no trial could start" in runs[0].data.tags["error"]


def test_trial_that_can_never_fit_is_rejected_before_anything_is_written(ray_cluster, workdir, tiny_llama, capsys):
    study = base_study(tiny_llama, resources={"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1})
    assert main([write_study(workdir, study)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: resources: one trial needs") and "GPU 0" in err
    assert not (workdir / "mlflow.db").exists() and not (workdir / "ray_results").exists()


def _optuna_study_in(obj, depth: int = 0):
    """The Optuna study inside a pickled Tune searcher state (the searcher may be wrapped)."""
    import optuna

    if isinstance(obj, optuna.Study):
        return obj
    if depth > 4:
        return None
    children = obj.values() if isinstance(obj, dict) else getattr(obj, "__dict__", {}).values()
    for child in children:
        found = _optuna_study_in(child, depth + 1)
        if found is not None:
            return found
    return None


def test_extend_adds_trials_under_the_same_parent_whose_searcher_saw_the_earlier_ones(ray_cluster, workdir, tiny_llama, capsys):
    import pickle

    study = base_study(tiny_llama, search={"algorithm": "optuna", "num_samples": 2, "metric": "f1_macro", "mode": "max", "seed": 0})
    study["search_space"]["overrides"]["learning_rate"] = {"type": "loguniform", "low": 1e-3, "high": 1e-2}
    path = write_study(workdir, study)
    assert main([path]) == 0
    client, runs = mlflow_runs(workdir, "unit")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    earlier = {r.info.run_id: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(earlier) == 2

    assert main([path, "--extend", "1"]) == 0
    client, runs = mlflow_runs(workdir, "unit")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [p.info.run_id for p in parents] == [parent.info.run_id] and len(kids) == 3  # same parent, one more trial
    after = client.get_run(parent.info.run_id)
    assert after.data.tags["extended"] == "true" and after.info.status == "FINISHED"
    assert after.data.metrics["trials_trials"] == 3 and after.data.metrics["trials_extended"] == 1
    best = max(kids, key=lambda r: max(m.value for m in client.get_metric_history(r.info.run_id, "f1_macro")))
    best_score = max(m.value for m in client.get_metric_history(best.info.run_id, "f1_macro"))
    assert after.data.metrics["best_f1_macro"] == pytest.approx(best_score)

    # The extension's searcher held the two earlier trials (their params and best scores) before it suggested.
    (folder,) = (workdir / "ray_results").glob("unit-*-extend")
    states = sorted(folder.glob("searcher-state-*.pkl"))
    assert states, list(folder.iterdir())
    optuna_study = _optuna_study_in(pickle.loads(states[-1].read_bytes()))
    trials = optuna_study.trials
    assert len(trials) == 3
    for old in trials[:2]:
        run = client.get_run(old.user_attrs["mlflow_run_id"])
        assert old.params["learning_rate"] == pytest.approx(float(run.data.params["learning_rate"]))
        assert old.value == pytest.approx(max(m.value for m in client.get_metric_history(run.info.run_id, "f1_macro")))
    assert {t.user_attrs["mlflow_run_id"] for t in trials[:2]} == set(earlier)


def test_extend_bad_input_is_one_line_and_writes_nothing(workdir, minilm_path, capsys):
    path = write_study(workdir, base_study(minilm_path, search={"algorithm": "optuna", "num_samples": 1, "metric": "f1_macro", "mode": "max"}))
    assert main([path, "--extend", "2"]) == 2  # never ran
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --extend: no finished run of study 'unit'")
    assert main([write_study(workdir, base_study(minilm_path), "grid.yaml"), "--extend", "1"]) == 2
    assert "a grid study has no further points" in capsys.readouterr().err
    assert main([path, "--extend", "0"]) == 2 and "--extend N with N >= 1" in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists() and not (workdir / "ray_results").exists()


def test_a_sampled_search_runs_each_point_of_a_finite_space_once_then_extend_says_it_is_spent(ray_cluster, workdir, tiny_llama, capsys):
    """Optuna on a 4-point space with num_samples 6, through real Tune and MLflow: four trials,
    one per point (the trial count is the space's points), two at a time, so Tune hands each
    finished trial's actor to the next (FIFO): every trial lands in MLflow exactly once, as its
    own child run, under the name of its Tune folder. A later ``--extend`` refuses in one line,
    writing nothing, instead of running nothing. (bench/thousand_trials.py: the same at 1,000.)"""
    study = base_study(tiny_llama, search={"algorithm": "optuna", "num_samples": 6, "max_concurrent_trials": 2, "metric": "f1_macro", "mode": "max", "seed": 0})
    study["search_space"]["overrides"]["learning_rate"] = [3e-3, 5e-3, 1e-2, 2e-2]
    path = write_study(workdir, study)
    assert main([path]) == 0
    client, runs = mlflow_runs(workdir, "unit")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(float(r.data.params["learning_rate"]) for r in kids) == [3e-3, 5e-3, 1e-2, 2e-2]
    assert parent.data.metrics["trials_trials"] == 4 and parent.info.status == "FINISHED"
    folders = {p.name for p in (workdir / "ray_results").glob("unit-*/run_trial_*")}
    assert sorted(r.data.tags["trial_name"] for r in kids) == sorted(folders) and len(folders) == 4, "each trial once, none lost"
    assert all(r.info.status == "FINISHED" and "f1_macro" in r.data.metrics for r in kids)
    capsys.readouterr()
    assert main([path, "--extend", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --extend: every one of the space's 4 points has run already"), err
    _, after = mlflow_runs(workdir, "unit")
    assert len(after) == len(runs) and client.get_run(parent.info.run_id).data.tags.get("extended") is None


def test_micro_batches_train_the_same_model_as_whole_batches(ray_cluster, workdir, tiny_llama):
    """``training.micro_batch_size`` through a real sweep (Tune, the trial loop, MLflow): batches
    of 16 in passes of 5 rows (the last pass short) train the same model as whole batches: the
    same eval losses at every eval point (no dropout in the tiny Llama, fp32 so only summation
    order differs), and each trial logs the rows per pass it used."""
    losses = {}
    for micro in (None, 5):
        study = base_study(tiny_llama, name=f"micro-{micro}", training={"epochs": 1, "batch_size": 16, "max_length": 24, "evals_per_epoch": 2,
                                                                        "precision": "fp32", "micro_batch_size": micro})
        assert main([write_study(workdir, study)]) == 0
        client, runs = mlflow_runs(workdir, f"micro-{micro}")
        kid = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
        assert kid.data.metrics["micro_batch_size"] == (micro or 16)
        losses[micro] = [m.value for m in sorted(client.get_metric_history(kid.info.run_id, "eval_loss"), key=lambda m: m.step)]
    assert len(losses[None]) == 2 and losses[5] == pytest.approx(losses[None], rel=1e-4)
    assert losses[None][-1] != pytest.approx(losses[None][0], rel=1e-3), "the model trained"
