"""A study's trial runs as an Optuna study, so Optuna's own plots (history, importance,
parallel coordinates, slice) can be drawn for any search kind, grid and random included.

Distributions come from the resolved search space the sweep logged; values from the runs.
Completed trials count with their best eval point, ASHA-stopped ones as pruned (with their
intermediate values), failed ones as failed.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from core.schema import parse
from search_spaces import Param
from sweeps.reporting.leaderboard import TrialScore


def distribution(p: Param) -> BaseDistribution | None:
    if p.type == "choice":
        return CategoricalDistribution(p.values or [])
    if p.type == "uniform":
        return FloatDistribution(float(p.low), float(p.high))
    if p.type == "loguniform":
        return FloatDistribution(float(p.low), float(p.high), log=True)
    if p.type == "int":
        return IntDistribution(int(p.low), int(p.high), log=p.log)
    return None  # fixed: not searched


def _value(text: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:
            if str(choice) == text:
                return choice
        raise ValueError(f"{text!r} is not one of {dist.choices}")
    if isinstance(dist, IntDistribution):
        return int(float(text))
    return float(text)


# error_kind values of trials that reported the worst score (trainables.training.failures.describe)
DETERMINISTIC_KINDS = ("diverged", "out_of_memory", "error")


def as_optuna_study(scores: list[TrialScore], space: dict[str, Any], methods: list[str], mode: str, client: Any, metric: str, storage: Any = None, name: Any = None, failed_as_worst: bool = False) -> optuna.Study:
    """``space``: the logged ``search_space.yaml`` (name -> Param fields). ``storage``/``name``:
    where to create the study (``--extend`` hands the same storage to the next searcher).
    ``failed_as_worst``: a trial that failed for good (diverged, out of memory, bad
    configuration: its run's ``error_kind``) counts as the worst score, as the live searcher
    was told (trainables.training.failures), not as a failure Optuna would ignore."""
    params = {name: parse(Param, raw, f"search_space.{name}") for name, raw in (space.get("params") or {}).items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize", storage=storage, study_name=name)
    for t in sorted(scores, key=lambda s: s.run.info.start_time):
        run = t.run
        method = run.data.tags.get("method", methods[0])
        dists: dict[str, BaseDistribution] = {}
        if len(methods) > 1:
            dists["method"] = CategoricalDistribution(methods)
        for name, p in params.items():
            d = distribution(p.for_method(method))
            if d is not None and p.applies_to(method) and name in run.data.params:
                dists[name] = d
        values = {name: method if name == "method" else _value(run.data.params[name], d) for name, d in dists.items()}
        status = run.data.tags.get("status")
        history = {int(m.step): m.value for m in client.get_metric_history(run.info.run_id, metric)}
        if status == "completed" and t.best is not None:
            state, value = optuna.trial.TrialState.COMPLETE, t.best
        elif status == "early_stopped" and history:
            state, value = optuna.trial.TrialState.PRUNED, None
        elif failed_as_worst and run.data.tags.get("error_kind") in DETERMINISTIC_KINDS:
            state, value = optuna.trial.TrialState.COMPLETE, float("-inf") if mode == "max" else float("inf")
        else:
            state, value = optuna.trial.TrialState.FAIL, None
        study.add_trial(optuna.trial.create_trial(
            params=values, distributions=dists, value=value, state=state, intermediate_values=history,
            user_attrs={"mlflow_run_id": run.info.run_id, "trial": run.data.tags.get("trial_name", "")},
        ))
    return study
