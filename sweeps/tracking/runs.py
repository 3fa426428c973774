"""Reading a study back from MLflow (writing it is ``sweeps.tracking.mlflow_logger``): its latest parent run (or one by id), its trial runs, the best.

What ``sweeps.report``, ``sweeps.export`` and ``sweeps.predict`` start from. MLflow is the
record of a sweep: these commands work wherever its tracking store is reachable, also after
the Ray cluster that ran the sweep is gone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

import mlflow
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from core.errors import StudyError
from sweeps.tracking import store

# One progress bar per downloaded file drowns the report in the terminal.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
STUDY_FILE = "study.yaml"  # parent artifact: the validated study as it ran (overrides applied)
SPACE_FILE = "search_space.yaml"  # parent artifact: the resolved search space
DATA_FILE = "data.json"  # parent artifact: label names (in head order) and split sizes
FLOORS_FILE = "floors.json"  # parent artifact: the floors fitted on the study's data (trainables.evaluation.floors)


def add_run_arguments(p: Any) -> None:
    """The arguments every command that reads a finished study takes."""
    p.add_argument("ref", metavar="STUDY|RUN_ID", help="study name or path (its latest finished run), or an MLflow parent run id")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the study's, else $MLFLOW_TRACKING_URI, else ./mlflow.db)")


def client_for(ref: str, tracking_uri: Optional[str]) -> tuple[MlflowClient, Optional[str]]:
    """(client, experiment name or None for a run id). A study name reads the study file for its
    experiment and tracking URI; ``tracking_uri`` (or $MLFLOW_TRACKING_URI) overrides that."""
    if RUN_ID.match(ref):
        return _client(store.tracking_uri(tracking_uri), f"run {ref}"), None
    from sweeps.study import read_yaml, study_file

    path = study_file(ref)
    raw = read_yaml(path)
    where = raw.get("tracking") or {}
    experiment = where.get("experiment") or raw.get("name") or path.stem
    return _client(store.tracking_uri(tracking_uri or where.get("tracking_uri")), f"study {ref!r}"), experiment


def _client(uri: str, looking_for: str) -> MlflowClient:
    """A client of an existing store: opening a SQLite file that is not there would create it."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise StudyError("--tracking-uri", f"no MLflow store at {store.redact(uri)} (looking for {looking_for})", "run the study from this folder first, or pass --tracking-uri / MLFLOW_TRACKING_URI of its store")
    return MlflowClient(uri)


def find_parent(ref: str, tracking_uri: Optional[str] = None) -> tuple[MlflowClient, Run]:
    """A study's latest parent run that ran to its end (FINISHED), or the parent run ``ref``."""
    client, experiment = client_for(ref, tracking_uri)
    uri = store.redact(client.tracking_uri)
    if experiment is None:
        try:
            run = client.get_run(ref)
        except mlflow.exceptions.MlflowException:
            raise StudyError("run", f"no MLflow run {ref} in {uri}", "pass a study name or the id of a study's parent run (MLflow UI or the sweep's last lines)") from None
        parent_id = run.data.tags.get("mlflow.parentRunId")
        return client, client.get_run(parent_id) if parent_id else run
    parent = latest_parent(client, experiment)
    if parent is None:
        raise StudyError("study", f"no finished run of study {ref!r} in experiment {experiment!r} at {uri}", f"run it first: python -m sweeps.run {ref} (or set --tracking-uri / MLFLOW_TRACKING_URI)")
    return client, parent


def latest_parent(client: MlflowClient, experiment: str) -> Optional[Run]:
    """The experiment's latest study (parent) run that ran to its end, or None."""
    exp = client.get_experiment_by_name(experiment)
    runs = [] if exp is None else client.search_runs(
        [exp.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=200
    )
    return next((r for r in runs if "mlflow.parentRunId" not in r.data.tags), None)


def trial_runs(client: MlflowClient, parent: Run) -> list[Run]:
    """The parent's child runs (one per trial), oldest first."""
    found = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        order_by=["attributes.start_time ASC"], max_results=5000,
    )
    return list(found)


def trial_of(client: MlflowClient, parent: Run, trial_run_id: Optional[str]) -> Run:
    """Trial run ``trial_run_id`` of this study (checked), or the best one when None."""
    if trial_run_id is None:
        return best_trial(client, parent)
    try:
        trial = client.get_run(trial_run_id)
    except mlflow.exceptions.MlflowException:
        trial = None
    if trial is None or trial.data.tags.get("mlflow.parentRunId") != parent.info.run_id:
        raise StudyError("--trial", f"{trial_run_id} is not a trial run of parent run {parent.info.run_id}", "pick a run id from python -m sweeps.report (column run_id), or leave --trial out for the best")
    return trial


def best_trial(client: MlflowClient, parent: Run) -> Run:
    """The trial run the sweep named best (its ``best_run_id`` tag)."""
    run_id = parent.data.tags.get("best_run_id")
    if not run_id:
        raise StudyError("run", f"parent run {parent.info.run_id} names no best trial (every trial failed, or it predates best_run_id)", "run the study again")
    return client.get_run(run_id)


def parent_yaml(client: MlflowClient, parent: Run, name: str) -> Optional[dict[str, Any]]:
    """A YAML (or JSON: YAML reads it too) artifact of the parent run (``study.yaml``,
    ``search_space.yaml``, ``floors.json``), or None."""
    try:
        path = mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path=name, tracking_uri=client.tracking_uri)
    except Exception:
        return None
    with open(path) as f:
        return yaml.safe_load(f)


def sampled_params(run: Run) -> dict[str, str]:
    """What the searcher chose for a trial (its params without the fixed ``study.*`` ones)."""
    return {k: v for k, v in run.data.params.items() if not k.startswith("study.")}


def find_trial_run(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_name: str) -> Optional[mlflow.entities.Run]:
    """The run of trial ``trial_name`` (= its Ray folder name) under a study's parent run."""
    found = client.search_runs(
        [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.trial_name = '{trial_name}'", max_results=1
    )
    return found[0] if found else None


def trial_run_id(uri: str, parent_run_id: str, trial_name: str) -> Optional[str]:
    """The MLflow run of trial ``trial_name`` (= its folder name) under a study's parent run."""
    client = MlflowClient(uri)
    found = find_trial_run(client, client.get_run(parent_run_id).info.experiment_id, parent_run_id, trial_name)
    return found.info.run_id if found else None
