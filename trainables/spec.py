"""What a trial receives from the study: one typed spec, the same in the trial's Tune driver
and in each of its Ray Train workers (no settings read by string key)."""

from __future__ import annotations

import dataclasses

from core.specs import ResourcesSpec, TrainingSpec
from trainables.kinds import Task


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    model: str  # hub id, local folder or packaged:<name>
    task: Task  # the registered task (with its kind): travels with the spec, also to workers
    training: TrainingSpec
    resources: ResourcesSpec
    metric: str  # the study's search metric: checkpoints are ranked by it
    mode: str  # "max" | "min"
    train_storage: str  # where Ray Train keeps this sweep's runs (under the study's storage)
    worker_start_timeout_s: float  # a trial whose workers cannot be placed in this long fails
