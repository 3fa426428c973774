"""What ``--resume`` needs to find an interrupted study again: a small state file in the study's
Ray Tune experiment folder (local or s3://...), next to Tune's own experiment state.

``sweep_state.json`` holds the Tune run name and the MLflow parent run id, and ``finished``
once the sweep has returned. A resumed study restores Tune's experiment (finished trials are
kept, unfinished ones continue from their checkpoints) and reopens the same MLflow parent run,
so nothing is run or logged twice.
"""

from __future__ import annotations

import json
from typing import Any, Collection, Optional

import pyarrow.fs
from mlflow.tracking import MlflowClient

from core.errors import StudyError

STATE_FILE = "sweep_state.json"


def _fs(storage: str) -> tuple[pyarrow.fs.FileSystem, str]:
    return pyarrow.fs.FileSystem.from_uri(storage if "://" in storage else f"file://{storage}")


def write(storage: str, run_name: str, state: dict[str, Any]) -> None:
    fs, root = _fs(storage)
    fs.create_dir(f"{root}/{run_name}", recursive=True)
    with fs.open_output_stream(f"{root}/{run_name}/{STATE_FILE}") as f:
        f.write(json.dumps(state, indent=2).encode())


def read(storage: str, run_name: str) -> Optional[dict[str, Any]]:
    fs, root = _fs(storage)
    path = f"{root}/{run_name}/{STATE_FILE}"
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def latest_unfinished(storage: str, study_name: str) -> dict[str, Any]:
    """The newest interrupted invocation of ``study_name`` under ``storage``, or a StudyError."""
    fs, root = _fs(storage)
    runs: list[str] = []
    if fs.get_file_info(root).type == pyarrow.fs.FileType.Directory:
        for info in fs.get_file_info(pyarrow.fs.FileSelector(root)):
            name = info.base_name
            if info.type == pyarrow.fs.FileType.Directory and name.startswith(f"{study_name}-"):
                runs.append(name)
    for name in sorted(runs, reverse=True):  # run names end in a sortable timestamp
        state = read(storage, name)
        if state is None:
            continue
        if state.get("finished"):
            break  # the newest run finished: there is nothing to resume
        return state
    raise StudyError(
        "--resume", f"no interrupted run of study {study_name!r} under {storage}",
        "run it without --resume, or pass the --storage-path it ran with",
    )


def forget_lost_trials(storage: str, run_name: str, known: Collection[str], tracking_uri: str, parent_run_id: str) -> int:
    """Remove what the dead driver started for trials Tune's saved state does not hold.

    Tune saves its experiment state every few seconds, so a trial started just before the
    driver died may exist only as a folder (and an MLflow child run). The restored search
    suggests that point again as a new trial; the traces of the lost one must go, or the
    study would show it twice. ``known``: the trial folder names (= MLflow ``trial_name``
    tags) in the restored state. Returns how many trials were removed.
    """
    fs, root = _fs(storage)
    experiment_dir = f"{root}/{run_name}"
    lost = set()
    for info in fs.get_file_info(pyarrow.fs.FileSelector(experiment_dir)):
        name = info.base_name
        if info.type == pyarrow.fs.FileType.Directory and name.startswith("run_trial_") and name not in known:
            lost.add(name)
            fs.delete_dir(info.path)
    for name in lost:  # its Train run: <run_name>-<trial id>
        train_run = f"{experiment_dir}/_train/{run_name}-{name.rsplit('_', 1)[-1]}"
        if fs.get_file_info(train_run).type == pyarrow.fs.FileType.Directory:
            fs.delete_dir(train_run)
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=50000)
    for child in children:
        name = child.data.tags.get("trial_name")
        if name is not None and name not in known:
            lost.add(name)
            client.delete_run(child.info.run_id)
    return len(lost)
