"""Writing a study to MLflow: one parent run per study invocation, one child run per trial.

Children are made in the driver by ``TrialRunLogger`` (Ray's ``MLflowLoggerCallback``, writing
each event in as few store calls as it can), tagged with the parent's id
(``mlflow.parentRunId``), so the MLflow UI shows them nested under the study.
Reading them back is ``sweeps.tracking.runs``.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS
from ray.tune.utils import flatten_dict

from core import outcomes
from sweeps.tracking import TrackerContext
from sweeps.tracking.artifacts import BestCheckpoints, Pictures, log_best
from sweeps.tracking.runs import find_trial_run
from trainables.training.failures import ERROR_KEY, KIND_KEY

# Result keys that are Tune bookkeeping, not model metrics.
NOT_METRICS = set(AUTO_RESULT_KEYS) | {"checkpoint_path", "checkpoint_dir_name", "config", "trial_id", "done"}


# Where a trial's workers ran (reported by each worker, by rank) -> the child run's tags.
_NODE_TAGS = {"worker_node_ids": "ray.node_ids", "worker_node_ips": "ray.node_ips", "driver_node_id": "ray.driver_node_id", "worker_gpu_ids": "ray.gpu_ids"}


class TrialRunLogger(MLflowLoggerCallback):
    """Ray's MLflow callback, plus: method/model/status tags, the study's fixed settings as
    params, the optimizer step as MLflow step, and a failed trial's error on its run.

    Its calls run on Tune's event loop, where every trial waits for them (an in-process trial
    at each report), so each trial event is one or two batched store calls: on SQLite each is a
    transaction of ~10-25 ms, and a study of many short trials is bound by them."""

    def __init__(self, uri: str, experiment: str, parent_run_id: str, fixed_params: dict[str, Any], tags: dict[str, str], metric: str, mode: str, storage: str):
        super().__init__(
            tracking_uri=uri,
            experiment_name=experiment,
            tags={"mlflow.parentRunId": parent_run_id, **tags},
            save_artifact=False,
        )
        self._fixed = fixed_params
        self._last: dict[Any, dict[str, Any]] = {}
        # Trials that ended with a failure result (diverged, out of memory, bad configuration:
        # trainables.training.failures), not a Tune error: their runs end FAILED all the same.
        self._failed: dict[Any, dict[str, str]] = {}
        self._placed: dict[Any, dict[str, str]] = {}
        # Trials whose run had already finished when a resumed study restarted them (the driver
        # died before Tune saved their end): their Train run only re-reports its stored result,
        # which must not touch the finished MLflow run again.
        self._finished_before: set[Any] = set()
        self._checkpoints = BestCheckpoints(metric, mode)
        self._storage = storage  # Ray storage root: checkpoint paths are paths in its filesystem
        self._pictures = Pictures(uri)  # each trial's confusion-matrix PNG, drawn off Tune's event loop
        self._restored = False  # True once unpickled (__setstate__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled = restored with a study's Tuner (``--resume``): only then can a trial already
        # have a run from the driver that died, so only then is it looked up before one is made.
        self.__dict__.update(state, _restored=True)

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def log_trial_start(self, trial: Any) -> None:
        """The trial's child run: created with all its tags, then its parameters (the sampled
        configuration and the study's fixed settings) in one batch: two store calls, where Ray's
        callback makes one per parameter and reads the run back before them."""
        if trial in self._finished_before:
            return
        client = self.client
        run_id = self._trial_runs.get(trial)
        if run_id is None and self._restored:
            # A resumed study restarts its unfinished trials: continue their runs, not new ones.
            earlier = self._existing_run(client, str(trial))
            if earlier is not None:
                run_id = self._trial_runs[trial] = earlier.info.run_id
                if earlier.data.tags.get("status") == "completed":
                    self._finished_before.add(trial)
                    if earlier.info.status != "FINISHED":  # the driver died while ending it
                        client.set_terminated(run_id, "FINISHED")
                    return
                client.update_run(run_id, status="RUNNING")
        if run_id is None:
            tags = {**self.tags, "trial_name": str(trial), "method": str(trial.config.get("method", "")), "status": "running"}
            run_id = self._trial_runs[trial] = client.create_run(self.mlflow_util.experiment_id, tags=tags, run_name=str(trial)).info.run_id
        else:  # the run goes on: a retry in this driver, or a resumed study's
            client.set_tag(run_id, "status", "running")
        # the same values again for a run that goes on (MLflow accepts a parameter logged twice
        # with one value): the driver may have died between making the run and this batch
        params = {**{f"study.{k}": v for k, v in self._fixed.items()}, **flatten_dict(trial.config)}
        client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items()])

    def _existing_run(self, client: MlflowClient, trial_name: str) -> Optional[mlflow.entities.Run]:
        return find_trial_run(client, self.mlflow_util.experiment_id, self.tags["mlflow.parentRunId"], trial_name)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial in self._finished_before:
            return
        placed = {tag: result[key] for key, tag in _NODE_TAGS.items() if isinstance(result.get(key), str)}
        if placed and placed != self._placed.get(trial):  # first report, or resumed elsewhere
            self.client.log_batch(self._trial_runs[trial], tags=[mlflow.entities.RunTag(tag, value) for tag, value in placed.items()])
            self._placed[trial] = placed
        if ERROR_KEY in result:
            self._failed[trial] = {"error": str(result[ERROR_KEY])[:500], "error_kind": str(result.get(KIND_KEY, "error"))}
        # Not the worst-score stand-in (+-inf) a failed trial reports to the searcher.
        metrics = {k: v for k, v in flatten_dict(result, delimiter=".").items() if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if ERROR_KEY not in result:
            self._last[trial] = metrics
        self._checkpoints.add(str(trial), result)
        log_metrics(self.client, self._trial_runs[trial], metrics, int(result.get("step", iteration)))

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        """The run's outcome as tags (status; a failure's error, kind and file) in one batch, the
        best checkpoint's artifacts for a trial that did not fail, then its end (FINISHED/FAILED)."""
        if trial in self._finished_before:
            return
        run_id = self._trial_runs.get(trial)
        if run_id is None:
            return
        ended = self._failed.get(trial)
        failed = failed or ended is not None
        client = self.client
        tags = {"status": outcomes.status(failed, (self._last.get(trial) or {}).get("progress"))}
        if ended is not None:
            tags.update(ended, error_file=f"{trial.path}/error.txt")
        elif failed:
            tags.update(error=error_line(trial), error_kind="crashed")
            if trial.error_file:
                tags["error_file"] = trial.error_file
        client.log_batch(run_id, tags=[mlflow.entities.RunTag(k, str(v)) for k, v in tags.items()])
        if not failed:
            self._log_best_checkpoint(client, trial, run_id)
        client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """The stage ends only once every trial's picture is in its run."""
        self._pictures.wait()
        super().on_experiment_end(trials, **info)

    def _log_best_checkpoint(self, client: MlflowClient, trial: Any, run_id: str) -> None:
        """Adapter + validation report of the trial's best checkpoint. A failure here (storage
        unreachable) is recorded on the run, never fails the study: the metrics are in."""
        title = f"{trial} ({trial.config.get('method', '')})"
        try:
            if log_best(client, run_id, self._checkpoints.ranked(str(trial)), title, self._storage, self._pictures) is None:
                client.set_tag(run_id, "artifacts_error", "no checkpoint found in Ray storage")
        except Exception as exc:
            client.set_tag(run_id, "artifacts_error", f"{type(exc).__name__}: {exc}"[:500])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    """A result's metrics in one call (MLflow's client splits it at its per-request limit). Ray's
    callback logs them key by key, one store transaction each: ~0.3 s for a classification result
    on SQLite, which a trial training in its Tune actor waits out at every report."""
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, step) for key, value in metrics.items()])


def error_line(trial: Any) -> str:
    """The last meaningful line of a trial's error (the full traceback stays in error.txt)."""
    text = ""
    if trial.error_file and Path(trial.error_file).is_file():
        text = Path(trial.error_file).read_text()
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:500]
    return (lines[-1] if lines else "unknown error")[:500]


@contextlib.contextmanager
def study_run(uri: str, experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str], run_id: Optional[str] = None, reopened: str = "resumed") -> Iterator[mlflow.ActiveRun]:
    """The parent run (``run_id``: reopen the one of a resumed or extended study, tagged
    ``reopened``=true). Ends FINISHED, or FAILED / KILLED if the sweep raises or is
    interrupted, so no run is left 'RUNNING' forever."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    if run_id is not None:
        run = mlflow.start_run(run_id=run_id)
        mlflow.set_tag(reopened, "true")
        if "error" in run.data.tags:  # from the interrupted attempt
            mlflow.delete_tag("error")
    else:
        run = mlflow.start_run(run_name=run_name, tags=tags)
    try:
        if run_id is None:
            mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException as exc:
        mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def mlflow_tracker(ctx: TrackerContext) -> TrialRunLogger:
    """Each trial as a child run of the study's parent run."""
    return TrialRunLogger(
        ctx.tracking_uri, ctx.experiment, ctx.parent_run_id, ctx.settings,
        {"model": ctx.model, "study": ctx.study, "stage": ctx.stage}, metric=ctx.metric, mode=ctx.mode, storage=ctx.storage,
    )


