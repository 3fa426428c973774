"""Recording a study: trackers are Tune callbacks, built per stage from a ``TrackerContext``.

MLflow is the study's record (``mlflow_logger`` writes it, ``runs`` reads it back for report,
export and predict; ``store`` says where it is; ``artifacts`` puts a trial's best checkpoint in
it). A study may list more trackers beside it (``tracking.trackers``); adding one is a module
with a factory ``(TrackerContext) -> ray.tune.Callback`` and one ``TRACKERS.register`` line
(see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from core.registry import Registry


@dataclasses.dataclass(frozen=True)
class TrackerContext:
    """What a tracker knows of the study invocation and stage it records."""

    tracking_uri: str  # the study's MLflow store (credentials included: not for printing)
    experiment: str
    parent_run_id: str  # the study's MLflow parent run
    run_name: str  # the Tune experiment (= the parent run's name)
    stage: str  # "search" | "final"
    study: str
    model: str
    settings: dict[str, Any]  # the study's fixed settings, flattened, without secrets
    metric: str
    mode: str
    storage: str  # Ray storage root (checkpoint paths are paths in its filesystem)


TRACKERS: Registry[Callable[[TrackerContext], Any]] = Registry("tracker")


def _mlflow(context: TrackerContext) -> Any:
    """The study's MLflow record (``mlflow_logger``), imported when a stage builds its callbacks:
    validating a study (and every one-line bad-input error) need not import MLflow and Ray Tune."""
    from sweeps.tracking.mlflow_logger import mlflow_tracker

    return mlflow_tracker(context)


# The built-in tracker.
TRACKERS.register("mlflow", _mlflow)
