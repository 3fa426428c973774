"""``--extend N``: N more search trials for a finished study, under the same MLflow parent run.

The searcher starts from every search trial already recorded: the study's trial runs are read
back from MLflow into an Optuna study (completed trials with their best score, ASHA-stopped
ones as pruned with their curves, failed ones as failed; ``sweeps.optuna_view``), and Ray's
``OptunaSearch`` loads that study from its storage, so TPE models all of them before it
suggests the first new point. Works wherever the MLflow store is, also after the Ray cluster
that ran the first trials is gone. Grid studies cannot be extended (a grid has no next point).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import optuna
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from core.errors import StudyError
from sweeps.reporting import leaderboard
from sweeps.reporting.optuna_view import as_optuna_study
from sweeps.study import Study
from sweeps.tracking import runs, store
from sweeps.tuning.searchers import WarmStart, points_left

STUDY_NAME = "earlier-trials"


@dataclasses.dataclass
class Extension:
    trials: int  # how many new trials
    parent: Run  # the finished study run the trials join
    warm: WarmStart  # the earlier trials, as the searcher will load them
    earlier: int  # how many earlier search trials the searcher starts from
    best: Optional[float]  # the best search score so far (None: no trial ever scored)


def prepare(study: Study, trials: int) -> Extension:
    """Check ``--extend`` and read the earlier trials; StudyError (nothing written) on bad input."""
    if trials < 1:
        raise StudyError("--extend", f"{trials} trials", "use --extend N with N >= 1")
    if study.search.algorithm == "grid":
        raise StudyError("--extend", "a grid study has no further points to try", "extend an optuna or random study, or run the grid with other values")
    uri = store.tracking_uri(study.tracking.tracking_uri)
    missing_store = uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file()
    parent = None if missing_store else runs.latest_parent(MlflowClient(uri), study.experiment)  # opening a store creates it
    if parent is None:
        raise StudyError("--extend", f"no finished run of study {study.name!r} in experiment {study.experiment!r} at {uri}", f"run it first: python -m sweeps.run {study.name}")
    client = MlflowClient(uri)
    check_pooling(study, runs.parent_yaml(client, parent, runs.STUDY_FILE) or {})
    metric, mode = study.search.metric, study.search.mode
    search = [r for r in runs.trial_runs(client, parent) if r.data.tags.get("stage", "search") == "search"]
    scores = leaderboard.score_trials(client, search, metric, mode)
    space = runs.parent_yaml(client, parent, runs.SPACE_FILE) or {}
    storage = optuna.storages.InMemoryStorage()
    earlier = as_optuna_study(scores, space, list(study.methods), mode, client, metric, storage=storage, name=STUDY_NAME, failed_as_worst=True)
    assert study.space is not None
    if points_left(study.space, list(study.methods), earlier) == 0:  # the searcher never repeats a point: nothing would run
        raise StudyError("--extend", f"every one of the space's {study.space.grid_size(list(study.methods))} points has run already",
                         "widen the space (--set search_space.overrides.NAME=[...] with new values, or a range)")
    # scores come best first; a failed trial's score before it failed is no model to beat
    best = next((s.best for s in scores if s.best is not None and s.run.data.tags.get("status") != "failed"), None)
    return Extension(trials, parent, WarmStart(storage, STUDY_NAME), len(search), best)


def check_pooling(study: Study, recorded: dict[str, Any]) -> None:
    """The new trials read a text as the earlier ones did (``training.pooling``), or their
    scores would rank two kinds of model together. A study recorded before the setting existed
    trained the family's own head (cls)."""
    from trainables.kinds import TASKS
    from trainables.model.load import pooling_of

    task = TASKS[study.task]
    before = pooling_of(recorded.get("model", study.model), task, (recorded.get("training") or {}).get("pooling", "cls"))
    now = pooling_of(study.model, task, study.training.pooling)
    if before != now:
        raise StudyError("training.pooling", f"the earlier trials read each text by {before} pooling, this study by {now}: their scores would not compare",
                         f"extend with --set training.pooling={before}")


def improves(extension: Extension, value: Optional[float], mode: str) -> bool:
    """Whether a new search score beats every earlier one."""
    if value is None:
        return False
    if extension.best is None:
        return True
    return value > extension.best if mode == "max" else value < extension.best
