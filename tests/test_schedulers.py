"""Early stopping per method: ``asha_per_method`` ranks a trial at a rung only against trials of
its own method, so a method that learns slowly at first (here "lora") is not stopped because
another method ("full") starts fast. Plain ``asha`` is the contrast: it stops the slow starter
that would have ended best."""

from __future__ import annotations

import pickle

import pytest

from core.schema import parse
from core.specs import SchedulerSpec
from sweeps.tuning.schedulers import SCHEDULERS, PerGroupScheduler

# trial -> (method, score at each eval point); run one after another in this order
CURVES = {
    "full-a": ("full", [0.50, 0.60, 0.60, 0.60]),  # fast start, flat end
    "full-b": ("full", [0.45, 0.50, 0.50, 0.50]),
    "lora-a": ("lora", [0.10, 0.30, 0.70, 0.80]),  # slow start, the best end
    "lora-b": ("lora", [0.05, 0.10, 0.20, 0.30]),
}
EVAL_POINTS = 4


def scheduler(name: str):
    return SCHEDULERS[name](parse(SchedulerSpec, {"name": name, "grace_period": 1, "reduction_factor": 2}, "scheduler"), EVAL_POINTS)


def eval_points_run(name: str) -> dict[str, int]:
    """Feed each trial's curve to a fresh scheduler, as Tune would with one trial at a time;
    how many eval points each trial got before the scheduler said STOP."""
    from ray.tune.experiment import Trial

    s = scheduler(name)
    s.set_search_properties("score", "max")
    ran = {}
    for trial_id, (method, curve) in CURVES.items():
        trial = Trial("replay", config={"method": method}, trial_id=trial_id, stub=True)
        s.on_trial_add(None, trial)
        for point, score in enumerate(curve, 1):
            result = {"training_iteration": point, "score": score}
            if s.on_trial_result(None, trial, result) == "STOP":
                break
        ran[trial_id] = point
        s.on_trial_complete(None, trial, result)
    return ran


def test_shared_rungs_stop_the_slow_starter_per_method_rungs_keep_it():
    assert eval_points_run("asha") == {"full-a": 4, "full-b": 1, "lora-a": 1, "lora-b": 1}
    assert eval_points_run("asha_per_method") == {"full-a": 4, "full-b": 1, "lora-a": 4, "lora-b": 1}


def test_per_method_scheduler_travels_with_the_tuner():
    """Tune pickles its scheduler (Tuner.restore); the groups made so far travel with it."""
    s = scheduler("asha_per_method")
    s.set_search_properties("score", "max")
    back = pickle.loads(pickle.dumps(s))
    assert isinstance(back, PerGroupScheduler) and back.metric == "score"
    assert "no trials yet" in back.debug_string()


@pytest.mark.ray
def test_per_method_rungs_in_a_real_tuner(ray_cluster, tmp_path):
    """Real Tune, one trial at a time in the table's order: with shared rungs the best point is
    cut at its first eval point, with per-method rungs it runs to its end and wins."""
    from ray import tune

    def replay(config):
        for score in CURVES[config["point"]][1]:
            tune.report({"score": score})

    points = list(CURVES)
    best = {}
    for name in ("asha", "asha_per_method"):
        tuner = tune.Tuner(
            tune.with_resources(replay, {"CPU": 1}),
            param_space={"point": tune.grid_search(points), "method": tune.sample_from(lambda spec: CURVES[spec.config["point"]][0])},
            tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=scheduler(name), max_concurrent_trials=1, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0),
        )
        grid = tuner.fit()
        ran = {r.config["point"]: int(r.metrics["training_iteration"]) for r in grid}
        best[name] = (grid.get_best_result(scope="all").config["point"], ran)
    assert best["asha"][1]["lora-a"] == 1 and best["asha"][0] == "full-a", best
    assert best["asha_per_method"][1]["lora-a"] == EVAL_POINTS and best["asha_per_method"][0] == "lora-a", best
