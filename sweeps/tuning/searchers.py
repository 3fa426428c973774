"""Search algorithms: grid, random, Optuna TPE. Each turns a SearchSpace into what Tune takes.

A new algorithm is one ``SEARCHERS.register(SearchAlgorithm(...))`` line (here, or in its own
module imported at the bottom of this one); ``search.algorithm`` and ``--search`` accept it.

Random and TPE both run through Ray's ``OptunaSearch`` with a define-by-run space, which is
how one space stays conditional (IA3 trials never sample a rank); only the Optuna sampler
differs, and neither runs a point twice (``DistinctOptunaSearch``). Grid enumerates the space
per method and serves the points as a Tune Searcher.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any, Callable, Optional

import numpy as np
import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from core.registry import Registry
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


TAKEN = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.PRUNED)


# Past this many points a space is treated as endless: listing it would cost more than the
# rare repeat it saves.
MAX_LISTED_POINTS = 100_000


def _key(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def taken_points(study: optuna.Study) -> dict[tuple[tuple[str, Any], ...], int]:
    """The points an Optuna study has run or is running, each with its first trial's number."""
    taken: dict[tuple[tuple[str, Any], ...], int] = {}
    for t in study.get_trials(deepcopy=False, states=TAKEN):
        taken.setdefault(_key(t.params), t.number)
    return taken


class DistinctOptunaSearch(OptunaSearch):
    """Ray's ``OptunaSearch`` that never hands out a configuration already run or running.

    On a discrete space TPE and random sampling propose points again (optuna#2021): on the
    27-point space of ``bench/search_efficiency.py``, 1 to 3 of each seed's 9 trials were repeats,
    a third of the budget at worst. A repeat is told to Optuna as failed (its samplers skip
    failed trials, so nothing is learned twice; the trial's ``repeat_of`` names its twin) and
    the sampler draws again. If it keeps proposing taken points (TPE narrows onto its best
    region), the trial gets a random point not yet taken, enqueued so Optuna records it as
    usual; once every point of a finite space is taken the search ends, as a grid does.
    """

    REDRAWS = 10

    def __init__(self, *args: Any, grid: Optional[list[dict[str, Any]]] = None, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # every point as Optuna names its params (None: a continuous range makes the space endless)
        self._grid = grid
        self._rng = np.random.default_rng(seed)

    def suggest(self, trial_id: str) -> Any:
        taken = taken_points(self._ot_study)
        untaken = None if self._grid is None else [p for p in self._grid if _key(p) not in taken]
        if untaken == []:
            return Searcher.FINISHED
        for _ in range(self.REDRAWS):
            config = super().suggest(trial_id)
            trial = self._ot_trials[trial_id]
            twin = taken.get(_key(trial.params))
            if twin is None or untaken is None:  # new, or an endless space whose sampler repeats itself: run it
                return config
            trial.set_user_attr("repeat_of", twin)
            self._ot_study.tell(trial, state=optuna.trial.TrialState.FAIL)
            del self._ot_trials[trial_id]
        self._ot_study.enqueue_trial(untaken[int(self._rng.integers(len(untaken)))])
        return super().suggest(trial_id)


def optuna_points(space: SearchSpace, methods: list[str]) -> Optional[list[dict[str, Any]]]:
    """Every point of a finite space as Optuna's define-by-run names them (the params it
    samples: no fixed ones, ``method`` only when there is a choice), or None for a range."""
    if any(p.continuous for m in methods for p in space.params_for(m).values()) or space.grid_size(methods) > MAX_LISTED_POINTS:
        return None
    points = []
    for point in space.grid_points(methods):
        fixed = {n for n, p in space.params_for(point["method"]).items() if p.type == "fixed"}
        points.append({k: v for k, v in point.items() if k not in fixed and (k != "method" or len(methods) > 1)})
    return points


def points_left(space: SearchSpace, methods: list[str], study: optuna.Study) -> Optional[int]:
    """How many points of a finite space ``study`` has not run yet (None: an endless space)."""
    points = optuna_points(space, methods)
    if points is None:
        return None
    taken = taken_points(study)
    return sum(_key(p) not in taken for p in points)


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """An Optuna storage whose study ``study_name`` already holds a study's earlier trials."""

    storage: optuna.storages.BaseStorage
    study_name: str


def _optuna(sampler: optuna.samplers.BaseSampler, seed: int) -> Callable[..., Searcher]:
    def make(space: SearchSpace, methods: list[str], metric: str, mode: str, first_points: Any = None, warm_start: Optional[WarmStart] = None, **_: Any) -> Searcher:
        # Known-good settings (a paper's, last sweep's best) run first; the sampler learns from them.
        full = [space.complete(p, p.get("method", methods[0])) for p in first_points or []]
        points = [{k: v for k, v in p.items() if k != "method" or len(methods) > 1} for p in full] or None
        # warm_start: an Optuna study already holding earlier trials (``--extend``); Ray's searcher
        # loads it from its storage by name, so the sampler starts from every one of them.
        where = {"storage": warm_start.storage, "study_name": warm_start.study_name} if warm_start is not None else {}
        return DistinctOptunaSearch(space=DefineByRun(space, methods), metric=metric, mode=mode, sampler=sampler, points_to_evaluate=points,
                                    grid=optuna_points(space, methods), seed=seed, **where)

    return make


def startup_trials(num_samples: int) -> int:
    """Random trials before a model-based sampler starts modelling: a third of the budget, 2-10."""
    return min(10, max(2, num_samples // 3))


def optuna_tpe(space: SearchSpace, methods: list[str], metric: str, mode: str, seed: int, num_samples: int, first_points: Any = None, warm_start: Optional[WarmStart] = None, **_: Any) -> Searcher:
    # Multivariate + group TPE models parameters jointly and handles the conditional
    # branches; a few random start-up trials first, fewer on small budgets.
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=startup_trials(num_samples))
    return _optuna(sampler, seed)(space, methods, metric, mode, first_points, warm_start)


def random(space: SearchSpace, methods: list[str], metric: str, mode: str, seed: int, num_samples: int, first_points: Any = None, warm_start: Optional[WarmStart] = None, **_: Any) -> Searcher:
    return _optuna(optuna.samplers.RandomSampler(seed=seed), seed)(space, methods, metric, mode, first_points, warm_start)


class GridSearcher(Searcher):
    """Hands out a precomputed list of grid points, then reports FINISHED.

    Tune's ``grid_search`` needs one flat product; a method-conditional grid is a union of
    per-method products, so it is enumerated up front and served as a Tune ``Searcher``
    (flat configs, and Tune's concurrency limit applies as for any searcher).
    """

    def __init__(self, points: list[dict[str, Any]], metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self._points = [dict(p) for p in points]
        self._next = 0

    def suggest(self, trial_id: str) -> Any:
        if self._next >= len(self._points):
            return Searcher.FINISHED
        self._next += 1
        return dict(self._points[self._next - 1])

    def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False) -> None:
        """Required by Tune's Searcher interface; a grid does not learn from results."""

    def get_state(self) -> dict[str, Any]:
        return {"points": self._points, "next": self._next}

    def set_state(self, state: dict[str, Any]) -> None:
        self._points, self._next = state["points"], state["next"]

    def save(self, checkpoint_path: str) -> None:
        """Tune saves this with its experiment state, so a resumed grid hands out no point twice."""
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


def grid(space: SearchSpace, methods: list[str], metric: str, mode: str, seed: int, num_samples: int, grid_repeats: int = 1, **_: Any) -> Searcher:
    return GridSearcher(space.grid_points(methods) * grid_repeats, metric=metric, mode=mode)


@dataclasses.dataclass(frozen=True)
class SearchAlgorithm:
    name: str
    description: str
    # (space, methods, metric=, mode=, seed=, num_samples=, grid_repeats=, first_points=,
    # warm_start=) -> a Tune Searcher
    make: Callable[..., Searcher]
    # Runs every point of the space (a grid): no continuous ranges, no first_points, and as
    # many trials as points x grid_repeats instead of search.num_samples.
    enumerates: bool = False
    # Never hands out a point twice (DistinctOptunaSearch): on a finite space at most its points.
    distinct: bool = False

    def trial_count(self, space: SearchSpace, methods: list[str], num_samples: int, grid_repeats: int = 1) -> int:
        """How many trials the search will run."""
        if self.enumerates:
            return space.grid_size(methods) * grid_repeats
        if self.distinct and optuna_points(space, methods) is not None:
            return min(num_samples, space.grid_size(methods))
        return num_samples


SEARCHERS: Registry[SearchAlgorithm] = Registry("search algorithm")
SEARCHERS.register("optuna", SearchAlgorithm("optuna", "Optuna TPE (multivariate, grouped): learns from every finished trial", optuna_tpe, distinct=True))
SEARCHERS.register("random", SearchAlgorithm("random", "uniform random points (Optuna's RandomSampler)", random, distinct=True))
SEARCHERS.register("grid", SearchAlgorithm("grid", "every point of the space, grid_repeats times", grid, enumerates=True))


def trial_count(algorithm: str, space: SearchSpace, methods: list[str], num_samples: int, grid_repeats: int = 1) -> int:
    """How many trials the search will run (grid: every point, grid_repeats times)."""
    return SEARCHERS[algorithm].trial_count(space, methods, num_samples, grid_repeats)
