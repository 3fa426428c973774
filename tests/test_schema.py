"""The study's JSON Schema (sweeps/study.schema.json) and reference page (docs/study-reference.md)
are generated from the specs and committed current; the schema accepts every shipped study,
rejects what the loader rejects by key (a typo, a wrong type), and each study file points
editors at it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from sweeps import schema

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "sweeps" / "studies").glob("*.yaml")) + [REPO / "bench" / f for f in ("emotion_bench.yaml", "emotion_quality.yaml", "packing_bench.yaml", "tweet_eval_emotion.yaml")]


@pytest.fixture(scope="module")
def validator():
    committed = json.loads(schema.SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(committed)
    return jsonschema.Draft202012Validator(committed)


def test_committed_schema_and_reference_are_what_the_specs_generate():
    # in a fresh interpreter, as CI or a developer runs it: this test process may hold plugins
    # other tests registered (tests/toy_plugins.py), which the generated pages must not list
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "sweeps.schema", "--check"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    reference = schema.REFERENCE_FILE.read_text()
    assert "| `gpus_per_worker` | number or \"auto\" | `0.0` | A fraction shares a GPU between trials;" in reference
    assert "| `micro_batch_size` | integer or null | `null` | Rows per forward/backward pass:" in reference, "help from the comment block above a field"


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_every_shipped_study_validates_and_points_editors_at_the_schema(validator, path):
    text = path.read_text()
    assert list(validator.iter_errors(yaml.safe_load(text))) == []
    target = text.splitlines()[0].removeprefix(schema.SCHEMA_URL_COMMENT)
    assert text.startswith(schema.SCHEMA_URL_COMMENT) and (path.parent / target).resolve() == schema.SCHEMA_FILE


@pytest.mark.parametrize("change,where", [
    (lambda s: s["search"].update(num_sample=3), "'num_sample' was unexpected"),
    (lambda s: s.update(modle="x"), "'modle' was unexpected"),
    (lambda s: s["training"].update(precision="fp16"), "'fp16' is not one of"),
    (lambda s: s["resources"].update(gpus_per_worker="most"), "'most'"),
    (lambda s: s.pop("task"), "'task' is a required property"),
], ids=["typo-in-section", "typo-top-level", "bad-enum", "bad-union", "missing-required"])
def test_the_schema_rejects_what_the_loader_rejects(validator, change, where):
    study = yaml.safe_load((REPO / "sweeps" / "studies" / "emotion_demo.yaml").read_text())
    change(study)
    errors = [e.message for e in validator.iter_errors(study)]
    assert any(where in e for e in errors), errors


def test_a_single_value_where_a_list_goes_is_accepted_as_the_loader_does(validator):
    study = yaml.safe_load((REPO / "sweeps" / "studies" / "emotion_demo.yaml").read_text())
    study["methods"] = "lora"
    assert list(validator.iter_errors(study)) == []
