"""The step schedule of a trial: optimizer steps, eval cadence, eval points (ASHA's max_t).

One function, used by the driver (to size ASHA and log the plan) and by each worker (on the
rows it really trains on: instruction tuning may pack them, so the worker's plan wins and is
the one reported with each result).
"""

from __future__ import annotations

import dataclasses
import math

from core.specs import TrainingSpec


@dataclasses.dataclass(frozen=True)
class StepPlan:
    total_steps: int  # optimizer steps of the whole trial
    eval_every: int  # optimizer steps between eval points
    eval_points: int  # = ASHA's max_t
    steps_per_epoch: int


def schedule(train_rows: int, training: TrainingSpec, workers: int) -> StepPlan:
    """Optimizer steps in total, steps between evals, and eval points."""
    batches_per_epoch = math.ceil(train_rows / (training.batch_size * workers))
    steps_per_epoch = max(1, batches_per_epoch // training.grad_accum)
    total = training.max_steps or max(1, math.ceil(training.epochs * steps_per_epoch))
    # ceil, so an epoch gets evals_per_epoch points, not an extra stub eval one step before the end
    every = training.eval_every_steps or max(1, math.ceil(steps_per_epoch / training.evals_per_epoch))
    every = min(every, total)
    return StepPlan(total_steps=total, eval_every=every, eval_points=math.ceil(total / every), steps_per_epoch=steps_per_epoch)
