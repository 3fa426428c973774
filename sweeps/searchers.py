"""Search algorithms: grid, random, Optuna TPE. Each turns a SearchSpace into what Tune takes.

Random and TPE both run through Ray's ``OptunaSearch`` with a define-by-run space, which is
how one space stays conditional (IA3 trials never sample a rank); only the Optuna sampler
differs. Grid enumerates the space per method and feeds Tune's basic variant generator.
"""

from __future__ import annotations

from typing import Any, Callable

import optuna
from ray.tune.search import BasicVariantGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch

from search_spaces import Param, SearchSpace


def _suggest(trial: optuna.Trial, name: str, p: Param) -> Any:
    if p.type == "choice":
        return trial.suggest_categorical(name, p.values)
    if p.type == "uniform":
        return trial.suggest_float(name, p.low, p.high)
    if p.type == "loguniform":
        return trial.suggest_float(name, p.low, p.high, log=True)
    if p.type == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
    raise ValueError(f"not sampled: {p.type}")


class DefineByRun:
    """Optuna define-by-run space: pick the method, then only that method's params.

    A class (not a closure) so Tune can pickle the searcher into its experiment state.
    """

    def __init__(self, space: SearchSpace, methods: list[str]) -> None:
        self.space = space
        self.methods = list(methods)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        constants: dict[str, Any] = {}
        if len(self.methods) > 1:
            method = trial.suggest_categorical("method", self.methods)
        else:
            method = constants["method"] = self.methods[0]
        for name, p in self.space.params_for(method).items():
            if p.type == "fixed":
                constants[name] = p.value
            else:
                _suggest(trial, name, p)
        return constants


def _optuna(sampler: optuna.samplers.BaseSampler) -> Callable[..., Searcher]:
    def make(space: SearchSpace, methods: list[str], metric: str, mode: str, **_: Any) -> Searcher:
        return OptunaSearch(space=DefineByRun(space, methods), metric=metric, mode=mode, sampler=sampler)

    return make


def tpe(space: SearchSpace, methods: list[str], metric: str, mode: str, seed: int, num_samples: int) -> Searcher:
    # Multivariate + group TPE models parameters jointly and handles the conditional
    # branches; a few random start-up trials first, fewer on small budgets.
    sampler = optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, n_startup_trials=min(10, max(2, num_samples // 3))
    )
    return _optuna(sampler)(space, methods, metric, mode)


def random(space: SearchSpace, methods: list[str], metric: str, mode: str, seed: int, num_samples: int) -> Searcher:
    return _optuna(optuna.samplers.RandomSampler(seed=seed))(space, methods, metric, mode)


def grid(space: SearchSpace, methods: list[str], metric: str, mode: str, seed: int, num_samples: int) -> Searcher:
    points = space.grid_points(methods) * num_samples
    return BasicVariantGenerator(points_to_evaluate=points, random_state=seed)


SEARCHERS: dict[str, Callable[..., Searcher]] = {"optuna": tpe, "random": random, "grid": grid}


def trial_count(algorithm: str, space: SearchSpace, methods: list[str], num_samples: int) -> int:
    """How many trials the search will run (grid: every point, num_samples times)."""
    return space.grid_size(methods) * num_samples if algorithm == "grid" else num_samples
