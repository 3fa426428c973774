"""Where runs go: the study's tracking_uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db."""

from __future__ import annotations

from sweeps.tracking.store import tracking_uri


def test_default_is_a_sqlite_store_in_the_current_folder(workdir):
    assert tracking_uri(None) == f"sqlite:///{workdir / 'mlflow.db'}"


def test_environment_then_study_setting_win(workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking_uri(None) == "http://tracking.example:5000"
    assert tracking_uri("sqlite:////data/team.db") == "sqlite:////data/team.db"


def test_study_settings_are_dotted_params_without_secrets(minilm_path):
    from core.schema import parse
    from sweeps.study import Study
    from sweeps.tuning.tuner import study_settings
    from tests.conftest import base_study

    study = parse(Study, {**base_study(minilm_path), "tracking": {"tracking_uri": "http://alice:s3cret@mlflow.example:5000"}})
    settings = study_settings(study)
    assert settings["training.epochs"] == 1 and settings["model"] == minilm_path
    assert settings["tracking.tracking_uri"] == "http://alice:***@mlflow.example:5000"
    assert "space" not in settings and not any(k.startswith("space.") for k in settings)


def test_a_results_metrics_are_written_at_once_under_their_step(tmp_path):
    """Per-result logging writes a result in one call, not key by key; every metric lands once,
    under the trial's optimizer step."""
    from mlflow.tracking import MlflowClient

    from sweeps.tracking.mlflow_logger import log_metrics

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    metrics = {f"class_accuracy_{i}": i / 2000 for i in range(1200)}  # more than MLflow takes in one request
    log_metrics(client, run_id, metrics, step=7)
    log_metrics(client, run_id, {"class_accuracy_3": 0.5}, step=9)
    logged = client.get_run(run_id).data.metrics
    assert logged == {**metrics, "class_accuracy_3": 0.5}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "class_accuracy_3")] == [(7, 3 / 2000), (9, 0.5)]


class _Trial:
    """What the logger reads of a Tune trial (a stand-in: this checks the logger's store calls)."""

    def __init__(self, name: str) -> None:
        self.name, self.config, self.path, self.error_file = name, {"method": "lora", "lora_r": 4}, f"/nowhere/{name}", None

    def __str__(self) -> str:
        return self.name


def test_a_trial_run_is_made_once_and_a_resumed_driver_continues_it(tmp_path, monkeypatch):
    """A fresh study's logger makes each trial's run without searching the store for an earlier
    one (a search per trial start that grows with the study); the logger a resumed study
    unpickles finds the run its dead driver made and continues it, never a second run."""
    from ray import cloudpickle as pickle  # as Tune stores a Tuner (tuner.pkl)

    from mlflow.tracking import MlflowClient

    from sweeps.tracking import mlflow_logger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent = client.create_run(client.create_experiment("e")).info.run_id

    fresh = mlflow_logger.TrialRunLogger(uri, "e", parent, {"training.epochs": 1}, {"study": "s"}, "f1_macro", "max", str(tmp_path))
    pickled = pickle.dumps(fresh)
    fresh.setup()
    with monkeypatch.context() as m:
        m.setattr(mlflow_logger, "find_trial_run", lambda *a: (_ for _ in ()).throw(AssertionError("searched")))
        fresh.log_trial_start(_Trial("run_trial_a"))
    (run,) = client.search_runs([client.get_experiment_by_name("e").experiment_id], "tags.trial_name = 'run_trial_a'")
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["status"] == "running"
    assert run.data.tags["method"] == "lora" and run.info.run_name == "run_trial_a"
    assert run.data.params == {"study.training.epochs": "1", "method": "lora", "lora_r": "4"}

    resumed = pickle.loads(pickled)  # as Tuner.restore brings it back
    resumed.setup()
    trial = _Trial("run_trial_a")
    resumed.log_trial_start(trial)
    resumed.log_trial_end(trial, failed=True)
    (again,) = client.search_runs([run.info.experiment_id], "tags.trial_name = 'run_trial_a'")
    assert again.info.run_id == run.info.run_id and again.info.status == "FAILED"
    assert again.data.tags["status"] == "failed" and again.data.tags["error_kind"] == "crashed"
