"""Which trial failures deserve a retry, and what a failed trial tells the searcher.

Ray Train V2 restarts a trial's workers after a worker error (``max_failures``) and, on its own
budget, after a node preemption (``max_preemption_failures``). A restart helps only where the
cause can go away: a lost node, a dropped connection, a crashed worker process. A loss that
turned NaN, CUDA running out of memory at this batch size, or a configuration the model
rejects fail the same way on every attempt; retrying them burns GPU hours and hides the cause.
So such errors end the trial at once (``FailFastPolicy``), and the trial reports the worst
value of the study's metric: the searcher learns to avoid that region and ASHA ranks it last,
while the study goes on with its other trials.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Optional

from ray.exceptions import RayError
from ray.train.v2._internal.exceptions import RayTrainError
from ray.train.v2._internal.execution.failure_handling import (
    DefaultFailurePolicy,
    FailureDecision,
)
from ray.train.v2._internal.execution.failure_handling.default import (
    _is_preemption_failure,
)
from ray.train.v2.api.exceptions import TrainingFailedError, WorkerGroupError

logger = logging.getLogger(__name__)

# Words in an error from torch.distributed or the network: a peer or the link went away,
# which a restart on healthy nodes may not meet again.
_TRANSIENT_WORDS = ("nccl", "gloo", "connection", "socket", "timed out", "timeout", "broken pipe")

# Result keys of a trial that failed for good (see ``failure_result``).
ERROR_KEY, KIND_KEY = "trial_error", "error_kind"


class TrialDiverged(RuntimeError):
    """The training loss, its gradient or an eval score is NaN or infinite."""

    def __init__(self, step: int, what: str) -> None:
        self.step = step
        super().__init__(f"diverged at step {step}: {what} (lower learning_rate, or raise warmup_ratio)")

    def __reduce__(self) -> Any:  # travels from the worker to the Train controller and driver
        return (_diverged, (self.step, str(self)))


def _diverged(step: int, text: str) -> TrialDiverged:
    exc = TrialDiverged.__new__(TrialDiverged)
    exc.step = step
    RuntimeError.__init__(exc, text)
    return exc


class TrialOutOfMemory(RuntimeError):
    """The trial's batch does not fit in the device's memory; the message names the knobs."""


def out_of_memory(training: Any, method: str) -> TrialOutOfMemory:
    return TrialOutOfMemory(
        f"out of memory with method={method}, training.batch_size={training.batch_size}, "
        f"training.micro_batch_size={training.micro_batch_size}, training.max_length={training.max_length}: "
        + ("lower training.micro_batch_size (rows per pass, same batch), " if training.micro_batch_size != 1 else "")
        + "lower training.max_length, set training.gradient_checkpointing: true, or use qlora"
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA (``torch.OutOfMemoryError``) or CPU allocator out of memory."""
    import torch

    return isinstance(exc, (torch.OutOfMemoryError, TrialOutOfMemory)) or (
        isinstance(exc, RuntimeError) and ("DefaultCPUAllocator: can't allocate memory" in str(exc) or "out of memory" in str(exc).lower())
    )


def is_deterministic(exc: BaseException) -> bool:
    """Whether the same trial would fail the same way again. Everything raised by our own
    code or the libraries it calls is (bad configuration, NaN, OOM, bugs); a dead or preempted
    worker, Ray's own errors, I/O and torch.distributed/network errors are not."""
    if isinstance(exc, (TrialDiverged, TrialOutOfMemory)) or is_out_of_memory(exc):
        return True
    if isinstance(exc, (RayError, RayTrainError, OSError)):  # OSError: ConnectionError, TimeoutError, ...
        return False
    import torch.distributed

    dist_error = getattr(torch.distributed, "DistError", None)  # absent where torch has no distributed
    if dist_error is not None and isinstance(exc, dist_error):
        return False
    text = str(exc).lower()
    return not any(word in text for word in _TRANSIENT_WORDS)


def deterministic_errors(error: BaseException) -> list[BaseException]:
    """The deterministic worker errors inside a Train failure (none for a preemption)."""
    if not isinstance(error, WorkerGroupError) or _is_preemption_failure(error):
        return []
    return [e for e in error.worker_failures.values() if e is not None and is_deterministic(e)]


class FailFastPolicy(DefaultFailurePolicy):
    """Ray Train's default policy (separate failure and preemption budgets), except that a
    deterministic worker error ends the run at the first occurrence."""

    def make_decision(self, training_failed_error: TrainingFailedError) -> FailureDecision:
        found = deterministic_errors(training_failed_error)
        if found:
            logger.warning("trial failed and will not be retried (it would fail the same way): %s", one_line(found[0]))
            return FailureDecision.RAISE
        return super().make_decision(training_failed_error)


def _create_policy(failure_config: Any) -> FailFastPolicy:
    return FailFastPolicy(failure_config)


def use_fail_fast_policy() -> None:
    """Make the Train runs started from this process use ``FailFastPolicy``. Ray Train V2 builds
    its policy with ``create_failure_policy`` (no public hook yet); the test suite checks the
    hook is still there, so a Ray upgrade that moves it fails CI instead of silently retrying."""
    from ray.train.v2.api import data_parallel_trainer

    data_parallel_trainer.create_failure_policy = _create_policy


def one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:500]


@dataclasses.dataclass
class Failure:
    kind: str  # diverged | out_of_memory | error
    line: str  # one line for the console and the MLflow run's ``error`` tag
    step: Optional[int] = None  # where a divergence happened


def describe(error: BaseException, training: Any, method: str) -> Optional[Failure]:
    """The failure a trial ends with, or None when it is not deterministic (Tune may retry)."""
    found = deterministic_errors(error) if isinstance(error, TrainingFailedError) else ([error] if is_deterministic(error) else [])
    if not found:
        return None
    first = next((e for e in found if isinstance(e, TrialDiverged)), None) or next((e for e in found if is_out_of_memory(e)), found[0])
    if isinstance(first, TrialDiverged):
        return Failure("diverged", one_line(first), first.step)
    if is_out_of_memory(first):
        return Failure("out_of_memory", one_line(first if isinstance(first, TrialOutOfMemory) else out_of_memory(training, method)))
    return Failure("error", f"{type(first).__name__}: {one_line(first)}"[:500])


def failure_result(failure: Failure, metric: str, mode: str) -> dict[str, Any]:
    """The trial's last result: the worst possible score (searcher and ASHA rank it last)."""
    result: dict[str, Any] = {metric: -math.inf if mode == "max" else math.inf, ERROR_KEY: failure.line, KIND_KEY: failure.kind}
    if failure.step is not None:
        result["diverged_at_step"] = failure.step
    return result


def trial_failure(result: Any) -> Optional[str]:
    """Why a Tune trial result (``ray.tune.Result``) failed, in one line; None if it did not."""
    if getattr(result, "error", None) is not None:
        return one_line(result.error)
    return (getattr(result, "metrics", None) or {}).get(ERROR_KEY)
