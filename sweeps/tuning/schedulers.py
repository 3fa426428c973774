"""Trial schedulers: run everything to the end, or let ASHA stop the weak trials early.

ASHA counts eval points (one Tune ``training_iteration`` per evaluation), so its rungs
are comparable across trials whatever their batch size.
"""

from __future__ import annotations

from typing import Any, Callable

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


def reuses_actors(scheduler: TrialScheduler) -> bool:
    """Whether Tune may hand a finished trial's actor to the next trial (its start and imports,
    ~2.3 s, paid once per slot: bench/trial_startup.py). Only where no trial is stopped from
    outside: an early-stopped trial's function still waits on its Train run, and Tune then
    fails the next trial given that actor ("reset_config() ... return True"; found by
    tests/test_sweeps.py's ASHA test)."""
    return type(scheduler) is FIFOScheduler


SCHEDULERS.register("none", fifo)
SCHEDULERS.register("asha", asha)
