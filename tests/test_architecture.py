"""The architecture holds: packages import only downward, and a task kind, a PEFT method, a
searcher and a tracker plug in with one module and one registration line each
(docs/ARCHITECTURE.md, tests/toy_plugins.py)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import base_study, mlflow_runs, write_study

ROOT = Path(__file__).resolve().parents[1]
# package -> the project packages it may import (besides itself)
ALLOWED = {
    "core": set(),
    "search_spaces": {"core"},
    "trainables": {"core"},
    "sweeps": {"core", "search_spaces", "trainables"},
}


def project_imports(path: Path) -> set[str]:
    """Top-level project packages a module imports (at module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in ALLOWED}
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_downward(package):
    wrong = {
        str(path.relative_to(ROOT)): sorted(project_imports(path) - ALLOWED[package] - {package})
        for path in (ROOT / package).rglob("*.py")
    }
    assert not {k: v for k, v in wrong.items() if v}


def test_importing_trainables_loads_no_sweeps_module():
    code = (
        "import sys, trainables, trainables.training.loop, trainables.training.trial, trainables.kinds, trainables.spec; "
        "print(sorted(m for m in sys.modules if m == 'sweeps' or m.startswith('sweeps.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_a_bad_study_is_refused_without_importing_what_only_training_needs():
    """The registries a study is validated against declare their entries without importing
    them (task kinds, the MLflow tracker, peft's method configs): an unknown study or key is
    refused before torch, peft, bitsandbytes, MLflow or scikit-learn load (they made a one-line
    error take ~11 s; the time itself is measured by hand, not here: docs/ARCHITECTURE.md)."""
    code = (
        "import sys\n"
        "from sweeps.run import main\n"
        "code = main(['no_such_study'])\n"
        "heavy = ('torch', 'peft', 'bitsandbytes', 'mlflow', 'sklearn', 'datasets', 'transformers')\n"
        "print(code, sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "2 []", out.stdout + out.stderr[-2000:]
    assert "error: study: unknown study 'no_such_study'" in out.stderr


def test_the_cli_and_the_schema_take_their_choices_from_the_registries(workdir, minilm_path, capsys):
    from sweeps.run import parser
    from sweeps.tuning.searchers import SEARCHERS

    choices = next(a.choices for a in parser()._actions if a.dest == "search")
    assert choices == SEARCHERS.names() == ["optuna", "random", "grid"]
    from sweeps.run import main

    bad = base_study(minilm_path, tracking={"trackers": ["mlflow", "tensorbord"]})
    assert main([write_study(workdir, bad), "--dry-run"]) == 2
    assert "tracking.trackers[1]: unknown tracker 'tensorbord'" in capsys.readouterr().err


def test_a_registered_kind_checks_its_own_settings(workdir, minilm_path, capsys):
    from sweeps.run import main
    from tests import toy_plugins  # noqa: F401  (registers the toy kind and tracker)

    study = base_study(minilm_path, task="toy_short_texts", search={"algorithm": "grid", "metric": "toy_accuracy"})
    study["training"]["max_length"] = 128
    assert main([write_study(workdir, study), "--dry-run"]) == 2
    assert "error: training.max_length: 128 tokens: the toy kind reads short texts only (fix: use <= 64)" in capsys.readouterr().err
    study["search"]["metric"] = "f1_macro"
    study["training"]["max_length"] = 24
    assert main([write_study(workdir, study), "--dry-run"]) == 2
    assert "search.metric: task toy_short_texts does not produce 'f1_macro'" in capsys.readouterr().err


def test_a_registered_method_brings_its_hyperparameters(workdir, minilm_path, capsys):
    import torch

    from sweeps.run import main
    from tests import toy_plugins  # noqa: F401
    from trainables.model import load as models
    from trainables.kinds import TASKS

    study = base_study(minilm_path, methods=["tiny_lora"])
    study["search_space"]["overrides"] = {"toy_rank": [0], "learning_rate": [1e-3]}
    assert main([write_study(workdir, study), "--dry-run"]) == 2
    assert "toy_rank: 0 is not allowed: toy_rank is an integer > 0 (fix: use 2)" in capsys.readouterr().err
    study["search_space"]["overrides"]["toy_rank"] = [3]
    assert main([write_study(workdir, study), "--dry-run"]) == 0
    tok = models.load_tokenizer(minilm_path)
    net = models.build_model(minilm_path, TASKS["single_label"], ["a", "b"], "tiny_lora", {"toy_rank": 3}, torch.device("cpu"), tok.pad_token_id)
    assert {m.r["default"] for m in net.modules() if hasattr(m, "lora_A")} == {3}


@pytest.mark.ray
def test_a_toy_task_kind_searcher_and_tracker_run_a_whole_sweep(ray_cluster, workdir, tiny_llama):
    """The toy kind prepares the data in the driver and trains, scores and writes its eval file
    in the Ray Train worker; the toy searcher picks the one trial; the toy tracker records
    every result beside MLflow."""
    import ray.cloudpickle

    from sweeps.run import main
    from tests import toy_plugins

    # The workers cannot import tests/: the toy kind travels with the trial spec, by value.
    ray.cloudpickle.register_pickle_by_value(toy_plugins)
    study = base_study(tiny_llama, name="toy", task="toy_short_texts",
                       search={"algorithm": "first_point", "num_samples": 1, "metric": "toy_accuracy", "mode": "max"},
                       tracking={"trackers": ["mlflow", "jsonl"]})
    assert main([write_study(workdir, study)]) == 0

    client, found = mlflow_runs(workdir, "toy")
    parent = next(r for r in found if "mlflow.parentRunId" not in r.data.tags)
    (trial,) = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    assert parent.data.tags["search"] == "first_point"
    history = client.get_metric_history(trial.info.run_id, "toy_accuracy")
    assert len(history) == 2 and "best_toy_accuracy" in parent.data.metrics  # evals_per_epoch: 2
    assert "f1_macro" not in trial.data.metrics
    assert "toy.json" in {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(trial.info.run_id, "eval")}

    lines = [json.loads(ln) for f in (workdir / "ray_results").glob("toy-*-search.jsonl") for ln in f.read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [h.step for h in sorted(history, key=lambda h: h.step)]
    assert [ln["toy_accuracy"] for ln in lines] == [h.value for h in sorted(history, key=lambda h: h.step)]
