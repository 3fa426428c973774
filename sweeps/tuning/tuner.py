"""Study -> Ray Tune ``Tuner`` -> trials -> MLflow. The one place the pieces meet.

Order matters for "nothing half-written": everything that can fail on bad input (study,
model files, data columns, cluster size) is checked before the MLflow parent run or the
Ray Tune storage folder is created.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import mlflow
import ray
import yaml
from ray import tune
from ray.tune.search import Searcher
from ray.tune.utils import flatten_dict

from core import outcomes
from core.schedule import StepPlan, schedule
from core.schema import to_dict
from sweeps.reporting import to_target
from sweeps.study import Study
from sweeps.tracking import TRACKERS, TrackerContext, mlflow_logger, model_registry, runs, store
from sweeps.tuning import cluster, extend, final_stage, packing, resume
from sweeps.tuning.schedulers import SCHEDULERS, reuses_actors
from sweeps.tuning.searchers import SEARCHERS, GridSearcher, trial_count
from sweeps.tuning.starvation import StarvationGuard
from sweeps.tuning.storage import storage_root
from trainables.evaluation import base_scores
from trainables.data import load as data_mod
from trainables.training.failures import trial_failure
from trainables.evaluation.floors import Floor, floor_verdict
from trainables.kinds import TASKS
from trainables.model.load import check_architecture, load_tokenizer, pooling_of
from trainables.spec import TrialSpec
from trainables.training.trial import run_trial

# A failed trial reports the worst score, +-inf, on purpose (trainables.training.failures); Tune's
# TensorBoard logger would warn about it on every such trial.
logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)


@dataclasses.dataclass
class SweepOutcome:
    results: tune.ResultGrid
    parent_run_id: str
    best: Optional[dict[str, Any]]  # the study's model: {"config", "metrics", "trial_id", "path"}
    counts: dict[str, int]
    floors: list[Floor] = dataclasses.field(default_factory=list)
    search_best: Optional[dict[str, Any]] = None  # the search's best trial (= best without a final stage)
    final: Optional[final_stage.Pick] = None  # the final stage's pick (mean and spread over seeds)
    cost_to_target: Optional[to_target.ToTarget] = None  # what the search spent before it first came within 1% of its best


def study_settings(study: Study) -> dict[str, Any]:
    """The fixed (not searched) settings, flattened, logged as params on every run (any
    credentials in a URI left out)."""
    plain = to_dict(study)
    plain.pop("space", None)
    plain.pop("description", None)
    return store.redact_all(flatten_dict(plain, delimiter="."))


def trial_spec(study: Study, run_name: str) -> TrialSpec:
    """What each trial (driver and workers) receives of the study."""
    return TrialSpec(
        model=study.model, task=TASKS[study.task], training=study.training, resources=study.resources,
        metric=study.search.metric, mode=study.search.mode,
        train_storage=f"{storage_root(study)}/{run_name}/_train",
        worker_start_timeout_s=cluster.start_timeout(study.resources),
    )


def trainable(study: Study, data_ref: Any, run_name: str) -> Any:
    """The Tune trainable: ``run_trial`` with the trial spec and the tokenized data bound to it,
    and the stage's cache of before-training scores, which trials with the same model before
    training share (``trainables.evaluation.base_scores``: one validation pass per stage, not per trial)."""
    shared = [data_ref, base_scores.start()] if study.training.eval_base else [data_ref]
    return tune.with_resources(tune.with_parameters(run_trial, spec=trial_spec(study, run_name), data=shared), cluster.trial_resources(study.resources))


def trial_dirname(trial: Any) -> str:
    """A trial's folder = its name (``run_trial_<id>``), the ``trial_name`` tag of its MLflow
    run, so storage and MLflow can be matched (``--resume`` relies on it)."""
    return str(trial)


def build_tuner(study: Study, data_ref: Any, plan: StepPlan, max_concurrent: int, run_name: str, callbacks: list[Any], searcher: Optional[Searcher] = None, num_samples: Optional[int] = None) -> tune.Tuner:
    """The Tuner(trainable, param_space, tune_config, run_config) for a validated study
    (``searcher``/``num_samples``: given points instead of the study's search, as the final
    stage runs)."""
    assert study.space is not None
    search = study.search
    if searcher is None:
        searcher = SEARCHERS[search.algorithm].make(
            study.space, study.methods, metric=search.metric, mode=search.mode, seed=search.seed,
            num_samples=search.num_samples, grid_repeats=search.grid_repeats, first_points=search.first_points,
        )
        num_samples = trial_count(search.algorithm, study.space, study.methods, search.num_samples, search.grid_repeats)
    scheduler = SCHEDULERS[study.scheduler.name](study.scheduler, plan.eval_points)
    return tune.Tuner(
        trainable(study, data_ref, run_name),
        param_space={},
        tune_config=tune.TuneConfig(
            metric=search.metric,
            mode=search.mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            trial_dirname_creator=trial_dirname,
            reuse_actors=reuses_actors(scheduler, study.resources.in_process is True),
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=storage_root(study),
            callbacks=callbacks,
            # A retried trial (its driver's node was lost) restarts its Train run under the
            # same name, which Ray Train V2 restores from the run's latest checkpoint.
            # No Tune checkpoints: a Train run keeps its own, and so does a trial in process
            # (trainables.training.kept_checkpoints); Tune hears only their paths.
            failure_config=tune.FailureConfig(max_failures=study.resources.max_failures),
            verbose=1,
        ),
    )


def _best(results: tune.ResultGrid, metric: str, mode: str) -> Optional[dict[str, Any]]:
    """The study's best trial (core.outcomes' rule): its config, the metrics at its best eval
    point (what its kept checkpoint holds) and its test scores (scored once, at the end)."""
    found = outcomes.best_point(((final_stage.best_score(r, metric, mode), r) for r in results), mode)
    if found is None:
        return None
    r = found[1]
    df = r.metrics_dataframe
    _, at = outcomes.best_point(zip(df[metric], df.index), mode)
    row, last = df.loc[at], df.iloc[-1]
    metrics = {k: float(v) for k, v in row.items() if outcomes.usable(v) and k not in mlflow_logger.NOT_METRICS and not k.startswith("test_")}
    metrics.update({k: float(v) for k, v in last.items() if k.startswith("test_") and outcomes.usable(v)})
    return {"config": dict(r.config), "metrics": metrics, "trial_id": r.metrics.get("trial_id"), "path": r.path}


def log_study_files(study: Study) -> None:
    """The study as it runs (overrides applied) and its resolved search space, on the parent
    run: what the report needs to rebuild Optuna's view and the ready-to-run best config."""
    plain = store.redact_all(to_dict(study))
    space = plain.pop("space", None)
    mlflow.log_text(yaml.safe_dump(plain, sort_keys=False), runs.STUDY_FILE)
    mlflow.log_text(yaml.safe_dump(space, sort_keys=False), runs.SPACE_FILE)


def log_report(uri: str, parent_id: str, reached: Optional[to_target.ToTarget] = None) -> None:
    """The study report (``sweeps.report``) as the parent's ``report/`` artifacts (``reached``:
    the cost to target just computed, not read again). A failure is tagged on the run and
    printed, never fails the sweep: every trial is already recorded."""
    from sweeps import report

    client = mlflow.tracking.MlflowClient(uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report.write(client, client.get_run(parent_id), Path(tmp), reached)
            mlflow.log_artifacts(tmp, "report")
    except Exception as exc:
        mlflow.set_tag("report_error", f"{type(exc).__name__}: {exc}"[:500])
        print(f"warning: the study report could not be built ({type(exc).__name__}: {exc}); "
              f"retry with: python -m sweeps.report {parent_id}", file=sys.stderr)


def check_registry(study: Study) -> None:
    """A study that registers its model: the store has a registry and the name is this task's
    (before anything is written; a SQLite store not created yet holds no model to clash with)."""
    uri = store.tracking_uri(study.tracking.tracking_uri)
    if not study.tracking.register or (uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file()):
        return
    model_registry.check(mlflow.tracking.MlflowClient(uri), model_registry.model_name(study.tracking, study.experiment), study.task)


def log_registered_model(uri: str, parent_id: str, study: Study) -> None:
    """The study's model as a new version in MLflow's Model Registry (model_registry). A failure
    is tagged on the run and printed, never fails the sweep: every trial is already recorded."""
    client = mlflow.tracking.MlflowClient(uri)
    try:
        done = model_registry.register(client, client.get_run(parent_id), study.tracking, study.name, study.experiment, study.search.mode)
    except Exception as exc:
        mlflow.set_tag("register_error", f"{type(exc).__name__}: {exc}"[:500])
        print(f"warning: the study's model could not be registered ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
              f"its trials and report are recorded; python -m sweeps.export {parent_id} still exports it", file=sys.stderr)
        return
    mlflow.set_tags({"registered_model": done.name, "registered_model_version": done.version})
    print(done.line)


def _forget_lost(storage: str, run_name: str, results: tune.ResultGrid, uri: str, parent_id: str) -> None:
    known = {r.path.rstrip("/").rsplit("/", 1)[-1] for r in results}
    lost = resume.forget_lost_trials(storage, run_name, known, uri, parent_id)
    if lost:
        print(f"resume: removed {lost} trial(s) the interrupted driver started after Tune last saved its "
              "state (their points are suggested again)")


def run_study(study: Study, address: Optional[str] = None, local: bool = False, resume_run: bool = False, extend_by: Optional[int] = None) -> SweepOutcome:
    """Run ``study`` as a sweep (and its final stage); with ``resume_run``, continue its latest
    interrupted run; with ``extend_by``, add that many search trials to its latest finished run."""
    store.check_reachable(store.tracking_uri(study.tracking.tracking_uri))
    check_registry(study)
    task = TASKS[study.task]
    tokenizer = load_tokenizer(study.model)
    check_architecture(study.model, task)
    # training.pooling made concrete once, here (an explicit mean the head cannot read fails):
    # the trials, the final stage, the stored study, its tag and --extend read what ran
    pooling = pooling_of(study.model, task, study.training.pooling)
    study = dataclasses.replace(study, training=dataclasses.replace(study.training, pooling=pooling))
    previous = resume.latest_unfinished(storage_root(study), study.name) if resume_run else None
    extension = extend.prepare(study, extend_by) if extend_by is not None else None
    prepared = task.kind.prepare(study.data, task, tokenizer, study.training, study.training.seed)
    final: Optional[tuple[Study, data_mod.PreparedData]] = None
    if study.final is not None:
        final_study = final_stage.study_for_final(study)
        own = final_stage.needs_own_data(study)
        final = (final_study, task.kind.prepare(final_study.data, task, tokenizer, final_study.training, study.training.seed) if own else prepared)
    # Floors are fitted on the rows the study's model trains on (the final stage's, if any).
    floors = task.kind.floors(final[1] if final else prepared, task, study.training.seed)
    prepared = dataclasses.replace(prepared, raw=None)  # the trials need the tokenized splits only
    if final is not None:
        final = (final[0], dataclasses.replace(final[1], raw=None))
    plan = schedule(len(prepared.splits["train"]), study.training, study.resources.workers)

    started = cluster.connect(address, local, study.resources)
    try:
        # gpus_per_worker: auto becomes a share of a GPU here, before anything is written.
        packed = packing.plan(study, seq_len=packing.trained_length(study, prepared))
        study = cluster.decide_in_process(packing.apply(study, packed))  # logged as resources.in_process
        packed_params = packed.params() if packed else {}
        if packed:
            print(packed.line())
        max_concurrent = cluster.concurrency(study.resources, study.search.max_concurrent_trials)
        stage = None
        if final is not None:
            final_packed = packing.plan(final[0], packed.gpu_gib if packed else None, packing.trained_length(final[0], final[1]))
            final_study = cluster.decide_in_process(packing.apply(final[0], final_packed))
            if final_packed:
                print(f"final stage {final_packed.line()}")
                packed_params.update({f"final.{k}": v for k, v in final_packed.params().items()})
            stage = FinalStage(final_study, final[1], cluster.concurrency(final_study.resources, final_study.search.max_concurrent_trials))
        return _sweep(study, prepared, plan, max_concurrent, previous, floors, stage, extension, packed_params)
    finally:
        if started:
            ray.shutdown()


@dataclasses.dataclass
class FinalStage:
    study: Study  # the study as the final runs train (final_stage.study_for_final)
    data: data_mod.PreparedData
    max_concurrent: int


def _run_final(stage: FinalStage, results: tune.ResultGrid, run_name: str, callbacks: list[Any], restore: bool) -> tuple[tune.ResultGrid, Optional[final_stage.Pick]]:
    """Retrain the search's top configurations (a second Tuner in the same study run)."""
    study, search = stage.study, stage.study.search
    assert study.final is not None
    name = f"{run_name}-final"
    data_ref = ray.put(stage.data)
    path = f"{storage_root(study)}/{name}"
    if restore and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable(study, data_ref, name), resume_unfinished=True, resume_errored=True)
    else:
        configs = final_stage.top_configs(results, search.metric, search.mode, study.final.top_k)
        chosen = final_stage.points(configs, study.final.seeds, study.training.seed)
        plan = schedule(len(stage.data.splits["train"]), study.training, study.resources.workers)
        grid = GridSearcher(chosen, metric=search.metric, mode=search.mode)
        tuner = build_tuner(study, data_ref, plan, stage.max_concurrent, name, callbacks, searcher=grid, num_samples=len(chosen))
    final_results = tuner.fit()
    return final_results, final_stage.pick(final_results, search.metric, search.mode)


def _scores(key: str, metrics: tuple[str, ...]) -> bool:
    """Whether a result key is one of the task's scores (validation or test, per class): what
    the parent run shows as ``best_<key>``, without the trial's bookkeeping (step, learning rate)."""
    name = key[len("test_"):] if key.startswith("test_") else key
    return name in metrics or name.startswith("class_accuracy_")


def _costs(grids: list[tune.ResultGrid], wall_time_s: float) -> dict[str, float]:
    """What the study cost, on its parent run: every trial's GPU-hours (GPUs held x training
    time, as each trial reports them) and the sweep's wall-clock time."""
    gpu_hours = sum(float((r.metrics or {}).get("gpu_hours") or 0.0) for grid in grids for r in grid)
    return {"gpu_hours": gpu_hours, "wall_time_s": wall_time_s}


def _counts(results: tune.ResultGrid) -> dict[str, int]:
    return outcomes.counts(outcomes.status(trial_failure(r) is not None, (r.metrics or {}).get("progress")) for r in results)


def _sweep(study: Study, prepared: data_mod.PreparedData, plan: StepPlan, max_concurrent: int, previous: Optional[dict[str, Any]], floors: list[Floor], stage: Optional[FinalStage], extension: Optional[extend.Extension] = None, packed_params: Optional[dict[str, Any]] = None) -> SweepOutcome:
    started = time.time()
    storage = storage_root(study)
    run_name = previous["run_name"] if previous else f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}{'-extend' if extension else ''}"
    uri = store.tracking_uri(study.tracking.tracking_uri)
    settings = study_settings(study)
    tags = {"study": study.name, "model": study.model, "search": study.search.algorithm, "scheduler": study.scheduler.name,
            "pooling": study.training.pooling}  # how its classifiers read a text (mean or cls: run_study resolved auto)
    params = {
        **settings,
        "data.train_rows": len(prepared.splits["train"]),
        "data.validation_rows": len(prepared.splits["validation"]),
        "data.labels": ",".join(prepared.label_names),
        "plan.total_steps": plan.total_steps,
        "plan.eval_points": plan.eval_points,
        "plan.max_concurrent_trials": max_concurrent,
        **(packed_params or {}),
    }
    if stage is not None:
        params["final.train_rows"] = len(stage.data.splits["train"])
    data_ref = ray.put(prepared)
    parent_id = previous["parent_run_id"] if previous else (extension.parent.info.run_id if extension else None)
    reopened = "extended" if extension else "resumed"
    with mlflow_logger.study_run(uri, study.experiment, run_name, params, {**tags, "mlflow.note.content": study.description}, run_id=parent_id, reopened=reopened) as parent:
        parent_id = parent.info.run_id
        state = {"run_name": run_name, "parent_run_id": parent_id, "tracking_uri": store.redact(uri), "experiment": study.experiment, "finished": False}
        resume.write(storage, run_name, state)

        def callbacks(run_study: Study, stage_name: str) -> list[Any]:
            ctx = TrackerContext(
                tracking_uri=uri, experiment=study.experiment, parent_run_id=parent_id, run_name=run_name, stage=stage_name,
                study=study.name, model=study.model, settings=study_settings(run_study),
                metric=study.search.metric, mode=study.search.mode, storage=storage,
            )
            trackers = [TRACKERS[name](ctx) for name in study.tracking.trackers]
            return [*trackers, StarvationGuard(cluster.start_timeout(run_study.resources))]

        if previous:
            # Tune's experiment state: finished trials stay finished, unfinished ones (and
            # those that errored because the driver died) continue from their checkpoints.
            # The callbacks (MLflow logger with this parent, starvation guard) come back with it.
            tuner = tune.Tuner.restore(f"{storage}/{run_name}", trainable=trainable(study, data_ref, run_name), resume_unfinished=True, resume_errored=True)
            _forget_lost(storage, run_name, tuner.get_results(), uri, parent_id)
        elif extension:
            search = study.search
            searcher = SEARCHERS[search.algorithm].make(
                study.space, study.methods, metric=search.metric, mode=search.mode, seed=search.seed + extension.earlier,
                num_samples=extension.trials, warm_start=extension.warm,
            )
            tuner = build_tuner(study, data_ref, plan, max_concurrent, run_name, callbacks(study, "search"), searcher=searcher, num_samples=extension.trials)
        else:
            log_study_files(study)
            mlflow.log_dict({"label_names": prepared.label_names, "rows": prepared.sizes}, runs.DATA_FILE)
            log_floors(floors, study)
            tuner = build_tuner(study, data_ref, plan, max_concurrent, run_name, callbacks(study, "search"))
        results = tuner.fit()
        if previous:  # again: an actor of the dead driver may have written after the first pass
            _forget_lost(storage, run_name, results, uri, parent_id)
        search_best = best = _best(results, study.search.metric, study.search.mode)
        counts = _counts(results)
        if extension:
            earlier = parent.data.metrics
            counts = {k: int(earlier.get(f"trials_{k}", 0)) + v for k, v in counts.items()}
            mlflow.log_metric("trials_extended", int(earlier.get("trials_extended", 0)) + extension.trials)
            if not extend.improves(extension, search_best["metrics"][study.search.metric] if search_best else None, study.search.mode):
                best = None  # the study's model stays what it was
        chosen, grids = None, [results]
        if stage is not None and best is not None:
            final_results, chosen = _run_final(stage, results, run_name, callbacks(stage.study, "final"), restore=previous is not None)
            grids.append(final_results)
            counts.update({f"final_{k}": v for k, v in _counts(final_results).items()})
            if chosen is not None:
                best = _best(chosen.results, study.search.metric, study.search.mode)
        resume.write(storage, run_name, {**state, "finished": True})
        mlflow.log_metrics({f"trials_{k}": v for k, v in counts.items()})
        costs = _costs(grids, time.time() - started)
        if extension:  # the study's totals: the earlier trials' and this extension's
            costs = {k: v + float(parent.data.metrics.get(k, 0.0)) for k, v in costs.items()}
        mlflow.log_metrics(costs)
        reached = log_to_target(uri, parent_id, study)
        if best:
            # Tags, not params: an extension that finds a better trial replaces them.
            mlflow.set_tags({f"best.{k}": str(v) for k, v in best["config"].items()})
            mlflow.log_metrics({f"best_{k}": v for k, v in best["metrics"].items() if _scores(k, TASKS[study.task].metrics)})
            mlflow.set_tag("best_trial_path", best["path"])
            best_run = _run_id(uri, parent_id, best)
            if best_run:
                mlflow.set_tag("best_run_id", best_run)
            if chosen is not None:
                metric = study.search.metric
                mlflow.log_metrics({f"final_{metric}_mean": chosen.mean, f"final_{metric}_std": chosen.std, "final_seeds_finished": chosen.runs})
                search_run = _run_id(uri, parent_id, search_best) if search_best else None
                if search_run:
                    mlflow.set_tag("search_best_run_id", search_run)
            verdict = floor_verdict(floors, study.search.metric, study.search.mode, best["metrics"])
            if verdict is not None:
                mlflow.set_tag("beats_floor", str(verdict.beats).lower())
            log_report(uri, parent_id, reached)
            if study.tracking.register:
                log_registered_model(uri, parent_id, study)
        elif extension:  # no new trial beat the earlier best: the parent keeps its model (run.py says so)
            if search_best is not None:
                log_report(uri, parent_id, reached)  # the leaderboard gains the new trials
            else:
                mlflow.set_tag("extend_error", "every new trial failed")
        else:
            mlflow.set_tag("status", "all trials failed")
            mlflow.end_run("FAILED")
        return SweepOutcome(results=results, parent_run_id=parent_id, best=best, counts=counts, floors=floors, search_best=search_best, final=chosen, cost_to_target=reached)


def log_to_target(uri: str, parent_id: str, study: Study) -> Optional[to_target.ToTarget]:
    """The search's cost to target (``to_target_*`` metrics on the parent run), from every search
    trial MLflow holds for it (an extension's and the earlier ones). A read failing is one warning:
    every trial is already recorded."""
    client = mlflow.tracking.MlflowClient(uri)
    try:
        reached = to_target.from_runs(client, runs.trial_runs(client, client.get_run(parent_id)), study.search.metric, study.search.mode)
    except Exception as exc:
        print(f"warning: cost to target not computed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})", file=sys.stderr)
        return None
    if reached is not None:
        mlflow.log_metrics(reached.metrics())
    return reached


def _run_id(uri: str, parent_id: str, best: dict[str, Any]) -> Optional[str]:
    return runs.trial_run_id(uri, parent_id, best["path"].rstrip("/").rsplit("/", 1)[-1])


def log_floors(floors: list[Floor], study: Study) -> None:
    """The floors as parent metrics (``floor_<name>_<metric>``) and ``floors.json``."""
    for floor in floors:
        mlflow.log_metrics(floor.metrics())
    why = TASKS[study.task].kind.no_floor_because
    mlflow.log_dict({"floors": [dataclasses.asdict(f) for f in floors], "none_because": why}, runs.FLOORS_FILE)
