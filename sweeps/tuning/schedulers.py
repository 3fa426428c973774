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
