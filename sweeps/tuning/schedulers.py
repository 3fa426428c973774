"""Trial schedulers: run everything to the end, or let ASHA stop the weak trials early.

ASHA counts eval points (one Tune ``training_iteration`` per evaluation), so its rungs
are comparable across trials whatever their batch size. ``asha_per_method`` compares a trial at
a rung only with trials of its own method, for studies whose methods learn at very different
speeds within their budget. Measured on two replay tables and the quality bench, it found the
best point no more often than shared rungs and ran ~10% more steps, so ``asha`` stays the default
(bench/RESULTS.md, "A second table (TweetEval), early stopping per method, a name per method").
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from core.registry import Registry

# (the study's SchedulerSpec, eval points of a trial) -> Tune scheduler
SCHEDULERS: Registry[Callable[[Any, int], TrialScheduler]] = Registry("scheduler")


def fifo(spec: Any, eval_points: int) -> TrialScheduler:
    return FIFOScheduler()


def asha(spec: Any, eval_points: int) -> TrialScheduler:
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max(eval_points, 1),
        grace_period=min(spec.grace_period, max(eval_points, 1)),
        reduction_factor=spec.reduction_factor,
    )


class PerGroupScheduler(FIFOScheduler):
    """One scheduler per value of a trial's ``config[key]`` (a study's ``method``), each seeing
    only its own group's trials: ASHA's rungs then rank LoRA against LoRA, IA3 against IA3.
    Trials are started first come, first served, as ASHA's own are."""

    def __init__(self, make: Callable[[], TrialScheduler], key: str = "method") -> None:
        super().__init__()
        self._make = make
        self._key = key
        self._groups: dict[str, TrialScheduler] = {}
        self._properties: Optional[tuple[Optional[str], Optional[str], dict[str, Any]]] = None

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec: Any) -> bool:
        self._properties = (metric, mode, spec)
        self._metric = metric
        return all(s.set_search_properties(metric, mode, **spec) for s in self._groups.values())

    def _of(self, trial: Any) -> TrialScheduler:
        group = str(trial.config.get(self._key))
        if group not in self._groups:
            scheduler = self._make()
            if self._properties is not None:
                metric, mode, spec = self._properties
                scheduler.set_search_properties(metric, mode, **spec)
            self._groups[group] = scheduler
        return self._groups[group]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{self._key}={g}: {s.debug_string()}" for g, s in sorted(self._groups.items())) or f"per-{self._key} scheduler: no trials yet"


def asha_per_method(spec: Any, eval_points: int) -> TrialScheduler:
    return PerGroupScheduler(functools.partial(asha, spec, eval_points), key="method")


def reuses_actors(scheduler: TrialScheduler, in_process: bool) -> bool:
    """Whether Tune may hand a finished trial's actor to the next trial (its process start and
    imports, ~2.3 s of wall and ~6 s of CPU, paid once per slot: bench/trial_startup.py).

    Always for trials that train in their own Tune actor (``resources.in_process``): a trial the
    scheduler stops is waiting in its report call, which Tune's stop ends at once, so the actor
    is free for the next trial. With Train workers only where no trial is stopped from outside:
    an early-stopped trial's function still waits on its Train run, and Tune then fails the next
    trial given that actor ("reset_config() ... return True"; found by tests/test_sweeps.py's
    ASHA test when its trials trained in Train workers; in their own actors it now checks that
    one actor ran all three trials)."""
    return in_process or type(scheduler) is FIFOScheduler


SCHEDULERS.register("none", fifo)
SCHEDULERS.register("asha", asha)
SCHEDULERS.register("asha_per_method", asha_per_method)
