"""Fail a study whose trials wait for resources forever.

Tune keeps a trial PENDING as long as the cluster cannot place it and only logs warnings
about it. When other work (another job, a leaked placement group) holds the cluster, a sweep
would sit there indefinitely. This callback turns "trials are waiting, none is running, and
the cluster cannot hold even one trial's request" for longer than ``resources.start_timeout_s``
into a :class:`SweepError`. A PENDING trial whose request does fit is just starting its actor
(that alone can take 10-20 s), so it does not count. Trials whose Tune driver starts but whose
Train workers cannot be placed fail on their own: see ``trainables.training.trial``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import ray
from ray import tune
from ray.tune.experiment import Trial

from core.errors import SweepError


def describe(resources: dict[str, float]) -> str:
    """{'memory': 536870912, 'CPU': 1} -> 'memory 512 MiB, CPU 1'."""
    return ", ".join(f"{k} {v / 2**20:.0f} MiB" if k == "memory" else f"{k} {v:g}" for k, v in resources.items())


def fits(request: dict[str, float], available: dict[str, float]) -> bool:
    return all(available.get(k, 0.0) + 1e-9 >= v for k, v in request.items() if v)


class StarvationGuard(tune.Callback):
    def __init__(
        self,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        available: Callable[[], dict[str, float]] = ray.available_resources,
    ) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._available = available
        self._idle_since: Optional[float] = None

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        waiting = [t for t in trials if t.status == Trial.PENDING]
        if not waiting or any(t.status == Trial.RUNNING for t in trials):
            self._idle_since = None
            return
        free = self._available()
        request = waiting[0].placement_group_factory.required_resources
        if fits(request, free):
            self._idle_since = None  # its actor is being started
            return
        now = self._clock()
        if self._idle_since is None:
            self._idle_since = now
        elif now - self._idle_since > self.timeout_s:
            shown = {k: free.get(k, 0.0) for k in request}
            raise SweepError(
                f"no trial could start within {self.timeout_s:.0f}s: {len(waiting)} trial(s) are waiting for "
                f"{describe(request)} but the cluster does not free it (available now: {describe(shown)}); "
                "free the cluster, lower resources.*, or raise resources.start_timeout_s"
            )
