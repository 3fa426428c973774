"""Where runs go: the study's tracking_uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db."""

from __future__ import annotations

from sweeps.tracking import flatten, tracking_uri


def test_default_is_a_sqlite_store_in_the_current_folder(workdir):
    assert tracking_uri(None) == f"sqlite:///{workdir / 'mlflow.db'}"


def test_environment_then_study_setting_win(workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking_uri(None) == "http://tracking.example:5000"
    assert tracking_uri("sqlite:////data/team.db") == "sqlite:////data/team.db"


def test_flatten_gives_dotted_param_names():
    assert flatten({"training": {"epochs": 2, "seed": 1}, "model": "m"}) == {"training.epochs": 2, "training.seed": 1, "model": "m"}
