"""StarvationGuard's clock logic (the real-cluster path is in test_sweeps.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.experiment import Trial

from core.errors import SweepError
from sweeps.tuning.starvation import StarvationGuard


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


DRIVER = SimpleNamespace(required_resources={"CPU": 0.01})


def trials(*statuses: str) -> list:
    return [SimpleNamespace(status=s, placement_group_factory=DRIVER) for s in statuses]


def test_waiting_with_nothing_running_past_the_timeout_raises():
    clock = Clock()
    guard = StarvationGuard(10, clock, available=lambda: {"CPU": 0.0})
    guard.on_step_end(0, trials(Trial.PENDING, Trial.PENDING))
    clock.now = 10
    guard.on_step_end(1, trials(Trial.PENDING, Trial.PENDING))  # exactly the timeout: still waits
    clock.now = 10.5
    with pytest.raises(SweepError, match=r"no trial could start within 10s: 2 trial\(s\) are waiting for CPU 0.01 but the cluster does not free it \(available now: CPU 0\)"):
        guard.on_step_end(2, trials(Trial.PENDING, Trial.PENDING))


def test_a_running_trial_or_an_empty_queue_resets_the_clock():
    clock = Clock()
    guard = StarvationGuard(10, clock, available=lambda: {"CPU": 0.0})
    guard.on_step_end(0, trials(Trial.PENDING))
    clock.now = 8
    guard.on_step_end(1, trials(Trial.RUNNING, Trial.PENDING))  # queueing behind a running trial is normal
    clock.now = 16
    guard.on_step_end(2, trials(Trial.TERMINATED, Trial.PENDING))  # idle again from here
    clock.now = 25
    guard.on_step_end(3, trials(Trial.TERMINATED, Trial.PENDING))  # 9 s idle: fine
    guard.on_step_end(4, trials(Trial.TERMINATED, Trial.TERMINATED))  # nothing waits: reset
    clock.now = 100
    guard.on_step_end(5, trials(Trial.TERMINATED, Trial.TERMINATED))


def test_a_waiting_trial_whose_request_fits_is_starting_not_starved():
    clock = Clock()
    free = {"CPU": 0.0}
    guard = StarvationGuard(10, clock, available=lambda: free)
    guard.on_step_end(0, trials(Trial.PENDING))
    clock.now = 9
    free["CPU"] = 0.5  # resources came back: the trial's actor is starting (can take 10-20 s)
    guard.on_step_end(1, trials(Trial.PENDING))
    clock.now = 30
    guard.on_step_end(2, trials(Trial.PENDING))
    free["CPU"] = 0.005  # less than its 0.01 CPU request: starts counting again, from now
    guard.on_step_end(3, trials(Trial.PENDING))
    clock.now = 39
    guard.on_step_end(4, trials(Trial.PENDING))
    clock.now = 41
    with pytest.raises(SweepError):
        guard.on_step_end(5, trials(Trial.PENDING))


def test_resources_are_described_for_people():
    from sweeps.tuning.starvation import describe

    assert describe({"memory": 512 * 2**20, "CPU": 1.5, "GPU": 0.25}) == "memory 512 MiB, CPU 1.5, GPU 0.25"
