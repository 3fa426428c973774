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

from core.specs import TrainingSpec
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
    # a block covers the fields right below it, and only its own words
    help_of = schema.field_help(TrainingSpec)
    assert help_of["doc_stride"] == help_of["max_answer_length"] and help_of["doc_stride"].startswith("Extractive QA: overlap")
    assert help_of["pooling"].startswith("How a classifier reads a text") and "Extractive QA" not in help_of["pooling"]


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


# Today's wording of each kind of problem the loader finds, pinned: the schema's machinery may
# change (pydantic), what a user reads may not. Each case changes one section of a valid study.
WORDING = {
    "typo in a section": ({"search": {"num_sample": 3}}, "search.num_sample: unknown key (fix: did you mean 'search.num_samples'?)"),
    "typo at the top": ({"modle": "x"}, "modle: unknown key (fix: did you mean 'model'?)"),
    "key nothing is near": ({"scheduler": {"zzzz": 1}}, "scheduler.zzzz: unknown key (fix: known keys: name, grace_period, reduction_factor)"),
    "typo in a nested section": ({"data": {"columns": {"txt": "a"}}}, "data.columns.txt: unknown key (fix: did you mean 'data.columns.text'?)"),
    "typo in a search-space param": ({"search_space": {"name": "small_encoder", "overrides": {"learning_rate": {"type": "uniform", "lo": 0.1, "high": 1}}}},
                                     "search_space.overrides.learning_rate.lo: unknown key (fix: did you mean 'search_space.overrides.learning_rate.low'?)"),
    "value near a known one": ({"training": {"precision": "fp16"}}, "training.precision: unknown value 'fp16' (fix: did you mean 'bf16'?)"),
    "value near none": ({"training": {"precision": "q"}}, "training.precision: unknown value 'q' (fix: use one of auto, bf16, fp32)"),
    "neither a number nor auto": ({"resources": {"gpus_per_worker": "most"}}, "resources.gpus_per_worker: got 'most', expected float or 'auto'"),
    "neither a bool nor auto": ({"resources": {"in_process": "sometimes"}}, "resources.in_process: got 'sometimes', expected bool or 'auto'"),
    "missing": ({"task": None}, "task: is required (fix: add 'task:' to the study)"),
    "bool as text": ({"training": {"eval_base": "yes"}}, "training.eval_base: got 'yes', expected true or false"),
    "bool as a number": ({"training": {"eval_base": 1}}, "training.eval_base: got 1, expected true or false"),
    "integer as text": ({"training": {"batch_size": "big"}}, "training.batch_size: got 'big', expected an integer"),
    "integer with a fraction": ({"training": {"batch_size": 2.5}}, "training.batch_size: got 2.5, expected an integer"),
    "integer as a bool": ({"training": {"seed": True}}, "training.seed: got True, expected an integer"),
    "number as text": ({"training": {"epochs": "one"}}, "training.epochs: got 'one', expected a number"),
    "number as a bool": ({"training": {"epochs": True}}, "training.epochs: got True, expected a number"),
    "text as a bool": ({"description": True}, "description: got True, expected a string"),
    "text as a list": ({"description": ["a"]}, "description: got ['a'], expected a string"),
    "list item of the wrong type": ({"methods": ["lora", ["x"]]}, "methods[1]: got ['x'], expected a string"),
    "mapping value of the wrong type": ({"data": {"source": "local", "files": {"train": ["a"]}}}, "data.files.train: got ['a'], expected a string"),
    "section as a number": ({"data": 5}, "data: got 5, expected a mapping"),
    "section as a list": ({"training": [1]}, "training: got [1], expected a mapping"),
    "a part's rule": ({"training": {"batch_size": 0}}, "training.batch_size: 0 must be > 0 (fix: use a positive value)"),
    "another part's rule": ({"scheduler": {"grace_period": 0}}, "scheduler.grace_period: 0 (fix: use >= 1 eval point)"),
    "a rule naming a key below": ({"data": {"splits": {"dev": "x"}}}, "data.splits.dev: unknown split (fix: use train, validation, test)"),
    "a rule across keys": ({"resources": {"in_process": True, "workers": 2}},
                           "resources.in_process: true with workers: 2 (fix: use workers: 1, or in_process: false (or auto) for DDP trials)"),
    "a search-space param's rule": ({"search_space": {"name": "small_encoder", "overrides": {"learning_rate": {"type": "uniform", "low": 0.1}}}},
                                    "search_space.overrides.learning_rate: a uniform range needs 'low' and 'high' (fix: set both bounds)"),
    "an optional section's rule": ({"final": {"epochs": -1}}, "final.epochs: -1.0 must be > 0 (fix: use a positive value or remove the key)"),
}

# What YAML gives that the loader takes on purpose.
LENIENT = {
    "a number YAML 1.1 reads as text": ({"training": {"epochs": "1e-3"}}, lambda s: s.training.epochs == 0.001),
    "one value where a list goes": ({"methods": "lora", "tracking": {"trackers": "mlflow"}}, lambda s: s.methods == ["lora"] and s.tracking.trackers == ["mlflow"]),
    "an empty section": ({"training": None}, lambda s: s.training.batch_size == 16 and s.training.epochs == 1.0),
    "a number where text goes": ({"description": 5}, lambda s: s.description == "5"),
    "a whole float where an integer goes": ({"training": {"batch_size": 8.0}}, lambda s: s.training.batch_size == 8 and isinstance(s.training.batch_size, int)),
}


def _changed(minilm_path: str, change: dict) -> dict:
    from tests.conftest import base_study

    study = base_study(minilm_path)
    for key, value in change.items():
        if value is None and key == "task":
            del study[key]
        elif isinstance(value, dict) and isinstance(study.get(key), dict):
            study[key] = {**study[key], **value}
        else:
            study[key] = value
    return study


@pytest.mark.parametrize("change,message", list(WORDING.values()), ids=list(WORDING))
def test_each_problem_is_worded_as_before(minilm_path, change, message):
    from core.errors import StudyError
    from core.schema import parse
    from sweeps.study import Study

    with pytest.raises(StudyError) as caught:
        parse(Study, _changed(minilm_path, change))
    assert caught.value.one_line() == message


@pytest.mark.parametrize("change,holds", list(LENIENT.values()), ids=list(LENIENT))
def test_what_yaml_gives_is_taken_as_before(minilm_path, change, holds):
    from core.schema import parse
    from sweeps.study import Study

    assert holds(parse(Study, _changed(minilm_path, change)))
