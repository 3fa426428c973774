"""The step plan: how many optimizer steps a trial takes and where it evaluates (ASHA's rungs)."""

import dataclasses

from core.schedule import StepPlan, schedule
from core.specs import TrainingSpec


def training(**kw):
    return dataclasses.replace(TrainingSpec(epochs=1, batch_size=32, grad_accum=1, evals_per_epoch=2), **kw)


def test_evals_per_epoch_gives_that_many_points_even_when_steps_do_not_divide():
    # 800 rows / 32 = 25 steps: evals at 13 and 25, not 12, 24 and a stub at 25
    assert schedule(800, training(), 1) == StepPlan(total_steps=25, eval_every=13, eval_points=2, steps_per_epoch=25)
    assert schedule(800, training(epochs=2), 1).eval_points == 4


def test_grad_accum_and_workers_shrink_steps_per_epoch():
    plan = schedule(800, training(grad_accum=2), 2)  # 13 batches per worker, 6 optimizer steps
    assert plan.steps_per_epoch == 6 and plan.total_steps == 6 and plan.eval_every == 3


def test_max_steps_and_eval_every_steps_override_epochs():
    plan = schedule(800, training(max_steps=10, eval_every_steps=4), 1)
    assert (plan.total_steps, plan.eval_every, plan.eval_points) == (10, 4, 3)


def test_tiny_data_still_gets_one_step_and_one_eval():
    plan = schedule(3, training(evals_per_epoch=8), 1)
    assert (plan.total_steps, plan.eval_every, plan.eval_points) == (1, 1, 1)
