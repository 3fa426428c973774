"""The final stage's choices on their own: which configurations it retrains, how seeds are laid
out, and which configuration wins (best mean over seeds, not the luckiest seed). The stage
itself runs end to end with real Ray, Optuna and MLflow in tests/test_report.py."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import pandas as pd

from sweeps.study import load_study
from sweeps.tuning import final_stage


@dataclasses.dataclass
class Result:
    """The three fields of a Tune ``Result`` the stage reads."""

    config: dict[str, Any]
    scores: list[float]
    error: Optional[Exception] = None

    @property
    def metrics_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame({"f1_macro": self.scores})


def test_top_configs_are_distinct_and_ranked_by_each_trials_best_point():
    results = [
        Result({"method": "lora", "learning_rate": 1e-3}, [0.2, 0.6]),
        Result({"method": "full", "learning_rate": 1e-4}, [0.7, 0.5]),  # best point counts, not the last
        Result({"method": "lora", "learning_rate": 1e-3}, [0.65]),  # same configuration again (a repeat)
        Result({"method": "ia3", "learning_rate": 1e-2}, [0.9], error=RuntimeError("died")),  # failed: out
    ]
    top = final_stage.top_configs(results, "f1_macro", "max", 3)
    assert top == [{"method": "full", "learning_rate": 1e-4}, {"method": "lora", "learning_rate": 1e-3}]
    assert final_stage.top_configs(results, "f1_macro", "min", 1) == [{"method": "lora", "learning_rate": 1e-3}]  # its 0.2
    points = final_stage.points(top, seeds=2, first_seed=42)
    assert [p["seed"] for p in points] == [42, 43, 42, 43] and points[0]["method"] == points[1]["method"] == "full"


def test_pick_is_the_best_mean_over_seeds_with_its_spread():
    lucky = {"method": "lora", "learning_rate": 3e-3}
    steady = {"method": "full", "learning_rate": 1e-4}
    results = [
        Result({**lucky, "seed": 42}, [0.95]), Result({**lucky, "seed": 43}, [0.55]),
        Result({**steady, "seed": 42}, [0.80]), Result({**steady, "seed": 43}, [0.84]),
    ]
    pick = final_stage.pick(results, "f1_macro", "max")
    assert pick.config == steady and pick.runs == 2
    assert abs(pick.mean - 0.82) < 1e-9 and abs(pick.std - 0.02) < 1e-9
    assert {r.config["seed"] for r in pick.results} == {42, 43}
    assert final_stage.pick([Result(steady, [float("nan")])], "f1_macro", "max") is None


def test_final_study_trains_on_every_row_with_the_final_schedule(tmp_path):
    study = load_study("emotion_demo", ["data.max_train_rows=100", "data.max_eval_rows=50", "final.epochs=3", "final.cpus_per_worker=2", "training.max_steps=7"])
    final = final_stage.study_for_final(study)
    assert final.data.max_train_rows is None and final.data.max_eval_rows is None
    assert final.training.epochs == 3 and final.training.max_steps is None  # epochs given: the search's step cap goes
    assert final.resources.cpus_per_worker == 2 and final.scheduler.name == "none" and final.space is study.space
    assert final_stage.needs_own_data(study)
    same = load_study("emotion_demo", ["final.data=search"])
    assert final_stage.study_for_final(same).data == same.data and not final_stage.needs_own_data(same)
