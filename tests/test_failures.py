"""Deterministic trial failures (NaN, out of memory, bad configuration) end the trial at once,
as the worst result, with one clear line; crashes and preemptions are still retried."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import pytest
import torch
from ray.exceptions import RayActorError
from ray.train import FailureConfig
from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError
from ray.train.v2._internal.execution.failure_handling import FailureDecision
from ray.train.v2.api.exceptions import WorkerGroupError

from core.specs import TrainingSpec
from trainables.training import failures, loop
from trainables.training.failures import FailFastPolicy, TrialDiverged, TrialOutOfMemory

TRAINING = TrainingSpec(batch_size=32, max_length=256)


@pytest.mark.parametrize("exc, deterministic", [
    (TrialDiverged(3, "train loss is nan"), True),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), True),
    (ValueError("Target modules {'q_proj'} not found in the base model"), True),  # bad configuration
    (RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place operation"), True),
    (ConnectionResetError("Connection reset by peer"), False),
    (RuntimeError("NCCL error in: ProcessGroupNCCL.cpp: unhandled system error"), False),
    (RayActorError(error_msg="The actor died unexpectedly"), False),
    (WorkerHealthCheckFailedError("worker died", RayActorError(preempted=True)), False),
])
def test_errors_that_would_repeat_are_told_from_those_a_retry_may_cure(exc, deterministic):
    assert failures.is_deterministic(exc) is deterministic


def test_policy_raises_at_once_on_a_deterministic_error_and_keeps_rays_budgets_otherwise():
    policy = FailFastPolicy(FailureConfig(max_failures=3, max_preemption_failures=-1))
    assert policy.make_decision(WorkerGroupError("x", {0: TrialDiverged(5, "train loss is nan"), 1: ConnectionError("peer gone")})) == FailureDecision.RAISE
    assert policy.make_decision(WorkerGroupError("x", {0: ValueError("bad target_modules")})) == FailureDecision.RAISE
    # a crash is charged to max_failures (3 retries), a preemption to its own, unlimited budget
    crash = WorkerGroupError("x", {0: WorkerHealthCheckFailedError("worker died", RayActorError())})
    assert [policy.make_decision(crash) for _ in range(4)] == [FailureDecision.RETRY] * 3 + [FailureDecision.RAISE]
    preempted = WorkerGroupError("x", {0: WorkerHealthCheckFailedError("node reclaimed", RayActorError(preempted=True)), 1: ValueError("collateral")})
    assert all(policy.make_decision(preempted) == FailureDecision.RETRY for _ in range(10))


def test_rays_train_runs_get_the_policy():
    """Guards the hook (Ray Train V2 has no public one): a Ray upgrade that moves it fails here."""
    from ray.train.v2.api import data_parallel_trainer

    failures.use_fail_fast_policy()
    assert isinstance(data_parallel_trainer.create_failure_policy(FailureConfig(max_failures=2)), FailFastPolicy)


def test_errors_travel_between_processes_intact():
    back = pickle.loads(pickle.dumps(TrialDiverged(7, "gradient norm is inf")))
    assert isinstance(back, TrialDiverged) and back.step == 7 and str(back).startswith("diverged at step 7: gradient norm is inf")
    assert failures.describe(WorkerGroupError("x", {0: back}), TRAINING, "lora").kind == "diverged"


def test_out_of_memory_names_the_knobs_to_lower(monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "TrialRecipe", oom)
    with pytest.raises(TrialOutOfMemory) as caught:
        loop.train_worker({"spec": SimpleNamespace(training=TRAINING), "hparams": {"method": "qlora"}, "data": [None]})
    text = str(caught.value)
    for knob in ("training.batch_size=32", "training.max_length=256", "lower training.micro_batch_size", "training.gradient_checkpointing: true", "method=qlora"):
        assert knob in text
    found = failures.describe(WorkerGroupError("x", {0: caught.value}), TRAINING, "qlora")
    assert found.kind == "out_of_memory" and found.line == text


def test_worst_result_for_the_searcher_and_scheduler():
    diverged = failures.Failure("diverged", "diverged at step 4: train loss is nan", 4)
    assert failures.failure_result(diverged, "f1_macro", "max")["f1_macro"] == -math.inf
    assert failures.failure_result(diverged, "eval_loss", "min")["eval_loss"] == math.inf
    assert failures.failure_result(diverged, "f1_macro", "max")["diverged_at_step"] == 4


def test_nan_scores_stop_the_loop():
    loop.check_finite(3, {"train loss": 0.7, "f1_macro": 0.5})
    with pytest.raises(TrialDiverged, match="step 3: train loss is nan"):
        loop.check_finite(3, {"train loss": float("nan")})


@pytest.mark.ray
@pytest.mark.parametrize("in_process", [False, True], ids=["train_worker", "in_process"])
def test_a_diverging_trial_fails_at_once_as_the_worst_result_and_the_study_goes_on(ray_cluster, workdir, tiny_llama, capsys, in_process):
    """Real Ray (the shared cluster has Train V2 state tracking on, to count attempts), real MLflow: a learning rate
    that sends the weights to inf. The trial may be restarted twice (max_failures: 2); it must
    run once, end FAILED with error=diverged and the step, and give the searcher its worst score;
    in a Train worker, or in the trial's own Tune actor (resources.in_process)."""
    import ray
    from ray.train.v2._internal.state.state_actor import get_state_actor

    from sweeps.study import load_study
    from sweeps.tuning.tuner import run_study
    from tests.conftest import base_study, mlflow_runs, write_study

    spec = base_study(tiny_llama, name="diverge")
    spec["search_space"]["overrides"]["learning_rate"] = [3e-3, 1e20]
    # warm-up from 0: step 1 is still sane (an eval point, a checkpoint, a score), a later step diverges
    spec["search_space"]["overrides"]["warmup_ratio"] = 0.5
    spec["training"].update(max_steps=4, eval_every_steps=1)
    spec["resources"].update(max_failures=2, in_process=in_process)
    spec["search"]["max_concurrent_trials"] = 2  # side by side: nothing here needs them in turn
    outcome = run_study(load_study(write_study(workdir, spec), []))

    assert outcome.counts["failed"] == 1 and outcome.counts["completed"] == 1
    bad = next(r for r in outcome.results if r.config["learning_rate"] == 1e20)
    assert bad.metrics["f1_macro"] == -math.inf  # what the searcher and the scheduler were told
    assert outcome.best is not None and outcome.best["config"]["learning_rate"] == 3e-3

    client, found = mlflow_runs(workdir, "diverge")
    run = next(r for r in found if r.data.params.get("learning_rate") == "1e+20")
    assert run.info.status == "FAILED"
    assert run.data.tags["error_kind"] == "diverged" and run.data.tags["error"].startswith("diverged at step ")
    assert run.data.tags["status"] == "failed" and run.data.metrics["diverged_at_step"] >= 2
    assert "f1_macro" in run.data.metrics  # it had scored step 1 before it diverged
    assert all(math.isfinite(v) for v in run.data.metrics.values())  # no -inf stand-in in MLflow

    # --extend's searcher, rebuilt from MLflow, is told the same worst score
    from sweeps.reporting import leaderboard
    from sweeps.reporting.optuna_view import as_optuna_study
    from sweeps.tracking import runs as runs_mod

    parent = next(r for r in found if "mlflow.parentRunId" not in r.data.tags)
    scores = leaderboard.score_trials(client, runs_mod.trial_runs(client, parent), "f1_macro", "max")
    rebuilt = as_optuna_study(scores, runs_mod.parent_yaml(client, parent, runs_mod.SPACE_FILE), ["lora"], "max", client, "f1_macro", failed_as_worst=True)
    told = {t.params["learning_rate"]: (t.state.name, t.value) for t in rebuilt.trials}
    assert scores[-1].run.info.run_id == run.info.run_id  # the failed trial ranks last, whatever it scored before
    assert told[1e20] == ("COMPLETE", -math.inf) and told[3e-3][0] == "COMPLETE" and told[3e-3][1] > 0

    # trained once: a restart would resume from the step-1 checkpoint and say so
    assert run.data.metrics["resumed_from_step"] == 0 and run.data.metrics["in_process"] == int(in_process)
    if in_process:
        return
    # Train ran the diverging trial's workers once, not 1 + max_failures times
    runs = ray.get(get_state_actor().get_train_runs.remote())
    attempts = ray.get(get_state_actor().get_train_run_attempts.remote())
    bad_run = next(rid for rid, r in runs.items() if r.name.endswith(bad.metrics["trial_id"]))
    assert len(attempts[bad_run]) == 1
