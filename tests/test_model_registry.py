"""The study's model in MLflow's Model Registry: a real sweep registers a pyfunc version that
``mlflow.pyfunc.load_model`` and ``mlflow models serve`` answer with exactly as ``sweeps.predict``
does; a later run, or an ``--extend`` that improves the study, registers another version, which
takes the champion alias only if it beats it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from core.errors import StudyError
from sweeps.tracking import model_registry
from tests.conftest import base_study, mlflow_runs, write_study

TEXTS = ["I am so happy today", "this is terrible and sad"]


def test_only_a_better_score_takes_the_alias():
    assert model_registry.beats(0.6, None, "max") and model_registry.beats(None, None, "min")  # nobody holds it
    assert model_registry.beats(0.6, 0.5, "max") and not model_registry.beats(0.5, 0.5, "max") and not model_registry.beats(0.4, 0.5, "max")
    assert model_registry.beats(0.4, 0.5, "min") and not model_registry.beats(0.6, 0.5, "min")
    assert not model_registry.beats(None, 0.5, "max"), "a version without a score never displaces one with"


def test_inputs_become_the_task_kinds_rows():
    rows = [{"text": t} for t in TEXTS]
    assert model_registry.as_rows(TEXTS, ("text",)) == rows
    assert model_registry.as_rows(pd.DataFrame({"text": TEXTS}), ("text",)) == rows
    assert model_registry.as_rows(pd.DataFrame({0: TEXTS}), ("text",)) == rows  # an unnamed column
    pairs = model_registry.as_rows([{"text": "a", "text_pair": "b"}], ("text", "text_pair"))
    assert pairs == [{"text": "a", "text_pair": "b"}]
    with pytest.raises(ValueError, match="each input needs the fields question, context"):
        model_registry.as_rows(["no context"], ("question", "context"))


def test_a_bad_alias_is_one_line_naming_the_field(workdir, tiny_llama, capsys):
    from sweeps.run import main

    study = base_study(tiny_llama, tracking={"champion_alias": "v2"})
    assert main([write_study(workdir, study), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tracking.champion_alias: 'v2' is not an alias MLflow takes") and len(err.splitlines()) == 1


@pytest.mark.ray
def test_a_sweep_registers_its_model_as_a_pyfunc_version_that_answers_as_predict_does(ray_cluster, workdir, tiny_llama, capsys):
    import mlflow

    from sweeps import predict as predict_cli
    from sweeps.run import main

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    study = base_study(tiny_llama, search={"algorithm": "optuna", "num_samples": 1, "metric": "f1_macro", "mode": "max", "seed": 0})
    study["search_space"]["overrides"]["learning_rate"] = {"type": "loguniform", "low": 1e-3, "high": 1e-2}  # extendable
    path = write_study(workdir, study)
    assert main([path]) == 0
    out = capsys.readouterr().out
    assert "registered unit version 1 as @champion" in out
    client = mlflow.tracking.MlflowClient(uri)
    model = client.get_registered_model("unit")
    assert model.tags["task"] == "single_label" and {k: str(v) for k, v in model.aliases.items()} == {"champion": "1"}
    version = client.get_model_version_by_alias("unit", "champion")
    parent = client.get_run(version.run_id)
    assert parent.data.tags["registered_model_version"] == "1" and "mlflow.parentRunId" not in parent.data.tags
    assert version.tags["trial_run_id"] == parent.data.tags["best_run_id"] and version.tags["metric"] == "f1_macro"
    assert float(version.tags["value"]) == pytest.approx(parent.data.metrics["best_f1_macro"])

    # the registered model answers exactly as `python -m sweeps.predict --json` does
    assert predict_cli.main([version.run_id, *TEXTS, "--json", "--tracking-uri", uri]) == 0
    predicted = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model("models:/unit@champion")
    answers = loaded.predict(TEXTS)
    assert [{k: v for k, v in p.items() if k != "text"} for p in predicted] == answers
    assert loaded.metadata.signature.inputs.to_dict() == [{"type": "string", "required": True}], "plain strings in"

    # ... and so does `mlflow models serve` over HTTP, offline, on 127.0.0.1
    assert served_answers(uri, workdir) == answers

    # a second run that cannot beat the champion: version 2, the alias stays on version 1
    client.set_model_version_tag("unit", "1", "value", "1.0")  # a perfect f1_macro to beat
    assert main([path]) == 0
    out = capsys.readouterr().out
    assert "registered unit version 2 without @champion: its f1_macro" in out and "does not beat version 1's 1.0" in out
    assert {k: str(v) for k, v in client.get_registered_model("unit").aliases.items()} == {"champion": "1"}
    versions = lambda: sorted(int(v.version) for v in client.search_model_versions("name = 'unit'"))  # noqa: E731
    holder = lambda: str(client.get_registered_model("unit").aliases["champion"])  # noqa: E731
    assert versions() == [1, 2], "nothing overwritten"

    # --extend of that run (the latest finished one): which case happens is set up on the earlier
    # trials, since a real extension's score is not ours to pick. Not better: no version, the alias stays.
    from tests.conftest import trial_runs

    second = client.get_model_version("unit", "2").run_id
    latest = [r for r in trial_runs(workdir, "unit") if r.data.tags["mlflow.parentRunId"] == second]
    client.log_metric(latest[0].info.run_id, "f1_macro", 1.0, step=10**6)  # an unbeatable earlier trial
    assert main([path, "--extend", "1"]) == 0
    assert "registered unit" not in capsys.readouterr().out
    assert versions() == [1, 2] and holder() == "1"
    # Better (no earlier trial counts: marked failed) and above the holder's score: version 3 takes the alias.
    for run in trial_runs(workdir, "unit"):
        if run.data.tags["mlflow.parentRunId"] == second:
            client.set_tag(run.info.run_id, "status", "failed")
    client.set_model_version_tag("unit", "1", "value", "-1.0")
    assert main([path, "--extend", "1"]) == 0
    assert "registered unit version 3 as @champion: f1_macro" in capsys.readouterr().out
    assert versions() == [1, 2, 3] and holder() == "3"
    assert client.get_model_version("unit", "3").run_id == second, "the extension's version hangs off the run it extends"

    # the same name for another task kind is refused before anything runs: one line, exit 2, no new run
    before = len(mlflow_runs(workdir, "unit")[1])
    other = base_study(tiny_llama, name="other", task="multi_label", tracking={"registered_model": "unit"})
    capsys.readouterr()
    assert main([write_study(workdir, other, "other.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tracking.registered_model: 'unit' in the Model Registry holds single_label models, this study trains multi_label"), err
    assert len(err.splitlines()) == 1 and "set tracking.registered_model to another name" in err
    assert client.get_experiment_by_name("other") is None and len(mlflow_runs(workdir, "unit")[1]) == before
    assert versions() == [1, 2, 3]


def test_a_store_whose_registry_does_not_answer_is_refused_naming_the_switch():
    """Unit edge case (every MLflow 3 backend store has a registry; a server or proxy that answers
    tracking calls but not the registry's does not): one StudyError naming tracking.register."""

    class NoRegistry:
        def search_registered_models(self, **_):
            raise RuntimeError("404 Not Found: /api/2.0/mlflow/registered-models/search")

    with pytest.raises(StudyError) as caught:
        model_registry.check(NoRegistry(), "unit", "single_label")
    assert caught.value.field == "tracking.register" and "no model registry (RuntimeError)" in str(caught.value)
    assert "tracking.register: false" in caught.value.one_line()


def served_answers(uri: str, workdir) -> list:
    """POST the texts to ``mlflow models serve -m models:/unit@champion --env-manager local``
    (in the activated environment: MLflow starts the environment's uvicorn by name)."""
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mlflow_cli = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    log = open(workdir / "serve.log", "w")
    server = subprocess.Popen([mlflow_cli, "models", "serve", "-m", "models:/unit@champion", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, (workdir / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps({"inputs": TEXTS}).encode(),
                                         headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)

