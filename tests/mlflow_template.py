"""Fresh SQLite MLflow stores without MLflow's migrations, for tests.

A new ``sqlite:///.../mlflow.db`` makes MLflow create its tables and run every Alembic migration
(~1.6 s on a 2-CPU VM; the suite opens dozens of stores). ``install`` makes this process copy
one store migrated once per test run into each new SQLite store instead, at the moment MLflow
would have created it: a store still appears only where MLflow would write one (the tests that
check "nothing written" still see no file), and MLflow's own schema check still runs on it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Callable

import mlflow.store.db.utils as db_utils

_ORIGINAL: Callable[[Any], None] = db_utils._initialize_tables
# Where the test run's template is, for the processes it starts (drivers, `mlflow server`).
ENV = "SWEEPS_TEST_MLFLOW_TEMPLATE"


def make(path: Path) -> Path:
    """Create a migrated, empty store at ``path`` (the real migrations, once)."""
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
    return path


def install(template: Path) -> None:
    """From now on, in this process, a new SQLite store starts as a copy of ``template``."""

    def initialize(engine: Any) -> None:
        if engine.url.get_backend_name() != "sqlite":
            return _ORIGINAL(engine)
        raw = engine.raw_connection()
        source = sqlite3.connect(template)
        try:
            source.backup(raw.driver_connection)
        finally:
            source.close()  # `with sqlite3.connect(...)` would only commit, never close
            raw.close()

    db_utils._initialize_tables = initialize


def uninstall() -> None:
    db_utils._initialize_tables = _ORIGINAL


def install_from_env() -> None:
    """``install`` in a process the test run started, if the run said where its template is."""
    import os

    if os.environ.get(ENV):
        install(Path(os.environ[ENV]))


def seed(db: Path) -> None:
    """Put a copy of the run's template at ``db`` (a store a separate program will open, such as
    ``mlflow server``), unless there is one already or the run has none."""
    import os
    import shutil

    if os.environ.get(ENV) and not db.exists():
        shutil.copyfile(os.environ[ENV], db)
