"""One Tune trial = one Ray Train run (``TorchTrainer``) of ``trainables.training.loop.train_worker``.

Ray 2.60 (Train V2) no longer accepts ``Tuner(TorchTrainer)``; the supported shape is a Tune
function trainable that calls ``TorchTrainer.fit()`` and forwards each ``ray.train.report``
to Tune with ``TuneReportCallback``. The function only waits on its Train controller, so it
reserves memory and no CPU; the workers ask for the study's CPUs/GPUs.

With ``resources.in_process`` (one worker) there is no Train run: the Tune function runs the
loop itself (Tune's function API), holds the trial's CPUs and GPU share, and the loop reports
to Tune directly and keeps its own checkpoints (``trainables.training.loop.Session``). That saves
the Train controller and worker start (~9 s a trial); a crash then restarts the trial (Tune; it
continues from its last checkpoint) rather than its worker (Train).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any, Optional

import ray
from ray import tune
from ray.train import (
    CheckpointConfig,
    ControllerError,
    FailureConfig,
    RunConfig,
    ScalingConfig,
    TrainingFailedError,
)
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from core import hparams
from core.specs import ResourcesSpec
from trainables.training import failures, memory
from trainables.training.allocator import worker_runtime_env
from trainables.spec import TrialSpec

# What one trial's Tune function (the Train driver) reserves. Tune refuses an all-zero request,
# and any CPU share, even 0.01, would stop two 1-CPU trials from sharing a 2-CPU node
# (2 x 1.01 > 2). Memory is what the driver really uses (~0.5 GB: Python, torch, Ray).
TRIAL_DRIVER_RESOURCES = {"memory": 512 * 2**20}
# A custom resource the on-demand head of cluster.yaml advertises: where present, trial drivers
# (and the Train controllers Ray starts beside them) run there, so losing a spot worker node
# never kills a driver (which would cost a Tune retry of the whole trial), only workers, which
# Ray Train restarts from the last checkpoint. Each driver takes a thousandth of the slot.
DRIVER_NODE_RESOURCE = "trial_driver"
DRIVER_NODE_SHARE = 0.001


def train_entry(cfg: dict[str, Any]) -> None:
    """What each Train worker runs. The heavy import (peft, bitsandbytes, transformers models:
    ~8 s here) happens inside, so only the worker pays it, not also the trial's Tune actor and
    its Train controller, which unpickle this function by reference."""
    entered = time.time()
    from trainables.training.loop import train_worker

    train_worker({**cfg, "worker_entered_at": entered})


class TrialStarvedError(RuntimeError):
    """The trial's workers could not be placed in time (cluster full or too small)."""


def scaling(resources: ResourcesSpec) -> ScalingConfig:
    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker:
        per_worker["GPU"] = resources.gpus_per_worker
    return ScalingConfig(
        num_workers=resources.workers,
        use_gpu=bool(resources.gpus_per_worker),
        resources_per_worker=per_worker,
    )


def wider_share(failure: failures.Failure, resources: ResourcesSpec) -> Optional[float]:
    """The GPU share to retry an out-of-memory trial with, if it had a fraction of a GPU."""
    share = resources.gpus_per_worker
    if failure.kind != "out_of_memory" or not isinstance(share, float) or not 0 < share < 1:
        return None
    return memory.fallback_share(share)


def smaller_micro_batch(failure: failures.Failure, training: Any) -> Optional[int]:
    """After an out of memory with no larger GPU share to take: half the rows per pass (the
    batch, the data order and so the run stay the same; ``split_batch``); None at one row."""
    if failure.kind != "out_of_memory":
        return None
    return training.rows_per_pass // 2 if training.rows_per_pass > 1 else None


def _loop_config(config: dict[str, Any], spec: TrialSpec, data: list[Any], started: float, in_process: bool) -> dict[str, Any]:
    return {"hparams": hparams.resolve(config), "spec": spec, "data": data, "in_process": in_process,
            "driver_node_id": ray.get_runtime_context().get_node_id(), "driver_started_at": started}


def _train(config: dict[str, Any], spec: TrialSpec, data: list[Any], ctx: Any, started: float) -> None:
    """One attempt: the loop here (in_process) or a Train run of one or more workers."""
    if spec.resources.in_process is True:
        train_entry(_loop_config(config, spec, data, started, in_process=True))
    else:
        _trainer(config, spec, data, ctx, started).fit()


def _trainer(config: dict[str, Any], spec: TrialSpec, data: list[Any], ctx: Any, started: float) -> TorchTrainer:
    resources = spec.resources
    return TorchTrainer(
        train_entry,
        train_loop_config=_loop_config(config, spec, data, started, in_process=False),
        scaling_config=scaling(resources),
        torch_config=TorchConfig(backend=resources.backend),
        run_config=RunConfig(
            name=f"{ctx.get_experiment_name()}-{ctx.get_trial_id()}",
            storage_path=spec.train_storage,
            callbacks=[TuneReportCallback()],
            worker_runtime_env=worker_runtime_env(resources),
            # Workers that crash restart from the last checkpoint up to resources.max_failures
            # times; node preemptions have their own budget (resources.max_preemptions, -1 =
            # no limit); deterministic errors (NaN, out of memory, bad configuration) are
            # never retried (failures.FailFastPolicy). A controller that cannot start workers
            # must give up (the default retries forever); a Tune retry of the trial may try again.
            failure_config=FailureConfig(
                max_failures=resources.max_failures,
                max_preemption_failures=resources.max_preemptions,
                controller_failure_limit=0,
            ),
            checkpoint_config=CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute=spec.metric,
                checkpoint_score_order=spec.mode,
            ),
        ),
    )


def run_trial(config: dict[str, Any], spec: TrialSpec, data: list[Any]) -> None:
    """Tune function trainable. ``data`` is ``[ObjectRef]`` to the tokenized splits, then the
    stage's ``base_scores.BaseScores`` actor where trials score the model before training
    (a list so Ray passes the reference, not a copy, to the workers)."""
    started = time.time()  # the trial's start-up clock (reported as startup_s)
    resources = spec.resources
    # Read by the Train controller this trial starts: fail instead of waiting forever
    # for workers that cannot be placed.
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(spec.worker_start_timeout_s)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    ctx = tune.get_context()
    failures.use_fail_fast_policy()
    while True:
        try:
            _train(config, spec, data, ctx, started)
        except ControllerError as exc:
            _raise_starved(exc, spec)
            raise
        except Exception as exc:
            # A Train run's failure, or (in process) the loop's own exception; Tune's stop
            # signal is a SystemExit and passes.
            if not isinstance(exc, TrainingFailedError) and resources.in_process is not True:
                raise
            failure = failures.describe(exc, spec.training, config.get("method", ""))
            if failure is None:
                raise  # may go away on a retry (Tune's resources.max_failures)
            wider = wider_share(failure, spec.resources)
            if wider is not None:
                # Packed trials share a GPU whose memory Ray does not enforce: this one met
                # less than its estimate left it. Again with a larger share (fewer trials on
                # that GPU) in a Train worker of its own (this actor's share is fixed); the
                # run resumes from its last checkpoint, if it has one.
                print(f"{ctx.get_trial_name()}: out of memory at gpus_per_worker {resources.gpus_per_worker:g}; retrying at {wider:g}")
                release_cuda_memory()
                resources = dataclasses.replace(resources, gpus_per_worker=wider, in_process=False)
                spec = dataclasses.replace(spec, resources=resources)
                # the larger share may have to wait for other trials to end
                os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(max(spec.worker_start_timeout_s, resources.autoscale_timeout_s))
                continue
            rows = smaller_micro_batch(failure, spec.training)
            if rows is not None:
                # A whole GPU (or the CPU's memory) is too small for this many rows at once:
                # again in passes of half as many, from the last checkpoint, where one exists.
                print(f"{ctx.get_trial_name()}: out of memory at {spec.training.rows_per_pass} rows per pass; "
                      f"retrying at {rows} (training.micro_batch_size; same batch of {spec.training.batch_size})")
                release_cuda_memory()
                spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, micro_batch_size=rows))
                continue
            # Ends the trial here, not as a Tune error that Tune would retry: the same error again.
            _write_error_file(ctx, exc)
            wait_until_tune_has_every_report()
            tune.report(failures.failure_result(failure, spec.metric, spec.mode))
        break
    wait_until_tune_has_every_report()


def release_cuda_memory() -> None:
    """Give back what a failed in-process run left in torch's CUDA cache."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def wait_until_tune_has_every_report() -> None:
    """Return only once Tune has taken every result the Train run reported.

    Ray 2.60 hangs a trial otherwise: TuneReportCallback hands Train's reports to this actor
    through a one-slot queue that Tune's main thread drains only when the driver asks for the
    next result. When the driver is slow (an MLflow server restarting, a busy head node) the
    Train run can end with its last report still in that queue; this function's return then
    puts Tune's end-of-trial marker into the main thread's result slot, and the main thread,
    moving the last report into the same slot, waits on itself forever (found by
    tests/test_mlflow_outage.py)."""
    from ray.train._internal.session import get_session

    session = get_session()
    pending = getattr(session, "_inter_actor_queue", None) if session is not None else None
    if pending is None:
        return
    settled = 0
    while settled < 3:  # empty three times in a row: not caught between the two queues
        settled = settled + 1 if pending.empty() and session.result_queue.empty() else 0
        time.sleep(0.1)


def _write_error_file(ctx: Any, exc: BaseException) -> None:
    """The full traceback(s) in the trial folder (``error.txt``, as Tune writes for a trial
    that raised): the console and MLflow get one line."""
    with contextlib.suppress(OSError), open(os.path.join(ctx.get_trial_dir(), "error.txt"), "w") as f:
        f.write(str(exc))  # on failure to write, the MLflow run still gets the error line


def _raise_starved(exc: ControllerError, spec: TrialSpec) -> None:
    """A controller that timed out starting the workers: say which resources did not fit."""
    if "startup timed out" in str(exc) or "WorkerGroupStartupTimeoutError" in repr(exc.__cause__):
        want = scaling(spec.resources)
        raise TrialStarvedError(
            f"trial could not start its {want.num_workers} worker(s) of {want.resources_per_worker} "
            f"within {spec.worker_start_timeout_s:.0f}s: the cluster is busy or too small "
            "(lower resources.* or search.max_concurrent_trials, or add nodes)"
        ) from None
