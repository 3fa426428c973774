"""Bad input: one line naming the field and the fix, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeps.run import main
from tests.conftest import base_study, write_study


def run_bad(capsys: pytest.CaptureFixture, workdir: Path, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    # Nothing half-written: no MLflow store, no Ray Tune storage.
    assert not (workdir / "mlflow.db").exists()
    assert not (workdir / "ray_results").exists()
    return err


def test_unknown_study_lists_known_ones(capsys, workdir):
    err = run_bad(capsys, workdir, ["emotion_dmeo"])
    assert "unknown study 'emotion_dmeo'" in err
    assert "did you mean 'emotion_demo'" in err and "emotion_gemma" in err


def test_yaml_syntax_error_names_the_line(capsys, workdir):
    path = workdir / "broken.yaml"
    path.write_text("name: x\nmodel: m\nsearch: {algorithm: grid\n")
    err = run_bad(capsys, workdir, [str(path)])
    assert "broken.yaml:" in err and "YAML syntax error" in err


def test_unknown_key_suggests_the_near_one(capsys, workdir, minilm_path):
    study = base_study(minilm_path)
    study["search"]["num_sample"] = 3
    err = run_bad(capsys, workdir, [write_study(workdir, study)])
    assert "search.num_sample: unknown key" in err and "did you mean 'search.num_samples'" in err


@pytest.mark.parametrize(
    ("override", "field", "text"),
    [
        ("search_space.overrides.lora_r=[0, 8]", "search_space.overrides.lora_r", "rank"),
        ("search_space.overrides.learning_rate=[-0.001]", "search_space.overrides.learning_rate", "learning rate must be > 0"),
        ("search_space.overrides.learning_rate=1.0e30", "search_space.overrides.learning_rate",
         "'1.0e30' is text, not a number (YAML reads 1.0e30 as a string) (fix: write 1.0e+30)"),
        ("search.num_samples=0", "search.num_samples", "--num-samples"),
        ("search.metric=bleu", "search.metric", "f1_macro"),
        ("methods=[lora, dora]", "methods[1]", "unknown method 'dora'"),
        ("training.batch_size=0", "training.batch_size", "positive"),
    ],
)
def test_bad_values(capsys, workdir, minilm_path, override, field, text):
    err = run_bad(capsys, workdir, [write_study(workdir, base_study(minilm_path)), "--set", override])
    assert f"error: {field}:" in err and text in err


def test_continuous_range_under_grid(capsys, workdir, minilm_path):
    study = base_study(minilm_path)
    study["search_space"]["overrides"]["learning_rate"] = {"type": "loguniform", "low": 1e-4, "high": 1e-2}
    err = run_bad(capsys, workdir, [write_study(workdir, study)])
    assert "search_space.learning_rate" in err and "continuous" in err and "--search random" in err


def test_metric_the_task_does_not_produce(capsys, workdir, minilm_path):
    # subset_accuracy exists only for multi-label tasks
    err = run_bad(capsys, workdir, [write_study(workdir, base_study(minilm_path)), "--set", "search.metric=subset_accuracy"])
    assert "task single_label does not produce 'subset_accuracy'" in err


def test_missing_model_path(capsys, workdir, minilm_path):
    err = run_bad(capsys, workdir, [write_study(workdir, base_study(minilm_path)), "--model", "./no/such/model"])
    assert "error: model: no model folder" in err


def test_missing_column(capsys, workdir, minilm_path):
    csv = workdir / "train.csv"
    csv.write_text("sentence,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(40)))
    study = base_study(minilm_path, data={"source": "local", "files": {"train": str(csv)}, "columns": {"text": "tweet"}})
    err = run_bad(capsys, workdir, [write_study(workdir, study)])
    assert "data.columns.text: column 'tweet' is not in the train split" in err and "sentence" in err


def test_missing_data_file(capsys, workdir, minilm_path):
    study = base_study(minilm_path, data={"source": "local", "files": {"train": "nope.csv"}})
    err = run_bad(capsys, workdir, [write_study(workdir, study)])
    assert "data.files.train: no such file 'nope.csv'" in err


@pytest.mark.slow  # a fresh Python process importing the stack: ~10 s
def test_cli_exit_code_is_2_in_a_real_process(workdir):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "sweeps.run", "no_such_study"], capture_output=True, text=True, cwd=workdir)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: study: unknown study 'no_such_study'")


@pytest.mark.parametrize("study", ["emotion_demo", "emotion_gemma", "emotion_gemma_grid", "emotion_gemma_random"])
def test_shipped_studies_validate_offline(capsys, workdir, study):
    assert main([study, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: study is valid" in out
    assert not (workdir / "mlflow.db").exists()


def test_first_point_missing_a_searched_value(capsys, workdir, minilm_path):
    study = base_study(minilm_path)
    study["search_space"]["overrides"]["lora_r"] = [4, 8]  # the other one-value choices fill themselves
    study["search"] = {**study["search"], "algorithm": "optuna", "first_points": [{"learning_rate": 1e-3}]}
    err = run_bad(capsys, workdir, [str(write_study(workdir, study))])
    assert "search.first_points[0]: missing 'lora_r'" in err


@pytest.mark.parametrize("final,message", [
    ({"top_k": 3}, "final.top_k: 3 configurations, but the search runs only 1 trial(s)"),
    ({"seeds": 0}, "final.seeds: 0"),
    ({"epochs": -1}, "final.epochs: -1.0 must be > 0"),
    ({"data": "all"}, "final.data: unknown value 'all'"),
    ({"topk": 1}, "final.topk: unknown key (fix: did you mean 'final.top_k'?)"),
])
def test_bad_final_stage_is_one_line_exit_2_nothing_written(capsys, workdir, minilm_path, final, message):
    err = run_bad(capsys, workdir, [str(write_study(workdir, base_study(minilm_path, final=final)))])
    assert message in err


def test_a_study_without_a_search_space_gets_the_defaults_with_per_method_ranges(workdir, minilm_path):
    from sweeps.study import load_study

    study = base_study(minilm_path, methods=["lora", "ia3", "full"], search={"algorithm": "optuna", "num_samples": 4})
    del study["search_space"]
    loaded = load_study(write_study(workdir, study))
    assert loaded.space.name == "defaults"
    lr = {m: loaded.space.params_for(m)["learning_rate"] for m in loaded.methods}
    assert lr["full"].high < lr["lora"].low < lr["lora"].high <= lr["ia3"].low
    assert "head_learning_rate" in loaded.space.params_for("full") and "head_learning_rate" not in loaded.space.params_for("lora")


def _jsonl(n: int, label=lambda i: i % 2) -> str:
    import json

    return "".join(json.dumps({"text": f"text number {i}", "label": label(i)}) + "\n" for i in range(n))


BAD_DATA = {
    "empty file": ({"train.jsonl": "", "validation.jsonl": _jsonl(10)}, {}, "single_label", "data.files.train: ", "is empty"),
    "empty after drop_labels": ({"train.jsonl": _jsonl(20, lambda i: -1), "validation.jsonl": _jsonl(10)}, {"drop_labels": [-1]}, "single_label",
                                "data.drop_labels: no row of the train split is left", "drop fewer labels"),
    "too small to stratify": ({"train.jsonl": _jsonl(3)}, {}, "single_label", "data.validation_fraction: cannot cut a stratified split", "give a validation file"),
    "fewer validation rows than labels": ({"train.jsonl": _jsonl(12, lambda i: i % 6)}, {}, "single_label", "data.validation_fraction: cannot cut a stratified split of 12 rows into 6 labels", "raise data.validation_fraction"),
    "truncated jsonl": ({"train.jsonl": _jsonl(40) + '{"text": "abc", "lab', "validation.jsonl": _jsonl(10)}, {}, "single_label",
                        "data.files: could not read the jsonl files: JSON parse error", "in row 40"),
    "malformed csv": ({"train.csv": "text,label\n" + "".join(f'"t {i}",{i % 2}\n' for i in range(40)) + '"unterminated,1\n', "validation.csv": "text,label\nx,0\ny,1\n"}, {}, "single_label",
                      "data.files: could not read the csv files: Error tokenizing data", "row 41"),
    "missing text cell": ({"train.jsonl": _jsonl(40) + '{"text": null, "label": 1}\n', "validation.jsonl": _jsonl(10)}, {}, "single_label",
                          "data.columns.text: row 40 of the train split has no text", "fill or remove"),
    "blank text cell": ({"train.jsonl": _jsonl(40), "validation.jsonl": _jsonl(10) + '{"text": "  ", "label": 1}\n'}, {}, "single_label",
                        "data.columns.text: row 10 of the validation split has no text", "fill or remove"),
    "header-only validation csv": ({"train.csv": "text,label\n" + "".join(f"t {i},{i % 2}\n" for i in range(40)), "validation.csv": "text,label\n"}, {}, "single_label",
                                   "data.files.validation: the validation split is empty: ", "has no rows (fix: add rows, or remove data.files.validation)"),
    "a label with one row, by its name": ({"train.jsonl": _jsonl(40, lambda i: ["joy", "anger"][i % 2] if i != 7 else "joyy")}, {}, "single_label",
                                          "data.validation_fraction: cannot cut a stratified split: label(s) 'joyy' have a single row among 40", "drop those labels"),
    "multi-label cell not 0/1": ({"train.jsonl": "".join(f'{{"text": "t {i}", "a": {i % 3}, "b": 1}}\n' for i in range(40)), "validation.jsonl": '{"text": "v", "a": 1, "b": 0}\n' * 5},
                                 {"columns": {"text": "text", "labels": ["a", "b"]}}, "multi_label", "data.columns.labels: column 'a' holds 2 in row 2 of the train split", "0/1"),
}


@pytest.mark.parametrize("files, extra, task, problem, fix", list(BAD_DATA.values()), ids=list(BAD_DATA))
def test_bad_data_is_one_line_exit_2_nothing_written(capsys, workdir, minilm_path, files, extra, task, problem, fix):
    folder = workdir / "data"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    data = {"source": "local", "files": {name.split(".")[0]: str(folder / name) for name in files}, **extra}
    err = run_bad(capsys, workdir, [write_study(workdir, base_study(minilm_path, task=task, data=data))])
    assert problem in err and fix in err, err


def test_unreachable_mlflow_is_one_line_exit_2_nothing_written(capsys, workdir, minilm_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on, held (bound, not listening) so no other process takes it meanwhile
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        study = base_study(minilm_path, tracking={"tracking_uri": f"http://user:s3cret@127.0.0.1:{port}"})
        err = run_bad(capsys, workdir, [write_study(workdir, study)])
    assert f"tracking.tracking_uri: MLflow at http://user:***@127.0.0.1:{port} is unreachable" in err and "Connection refused" in err
    assert "s3cret" not in err


def test_a_store_mlflow_will_not_open_is_one_line_exit_2_nothing_written(capsys, workdir, minilm_path, monkeypatch):
    """MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE=true: said before anything
    runs, with the ways out; a database URI whose driver is missing the same way."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    study = base_study(minilm_path, tracking={"tracking_uri": "file:./mlruns"})
    err = run_bad(capsys, workdir, [write_study(workdir, study)])
    assert err.startswith("error: tracking.tracking_uri: MLflow cannot open file:./mlruns (The filesystem tracking backend"), err
    assert "sqlite:///mlflow.db" in err and "MLFLOW_ALLOW_FILE_STORE=true" in err
    assert not (workdir / "mlruns").exists()
    study = base_study(minilm_path, tracking={"tracking_uri": "mssql://user:s3cret@127.0.0.1:1/db"})
    err = run_bad(capsys, workdir, [write_study(workdir, study, "db.yaml")])
    assert err.startswith("error: tracking.tracking_uri: MLflow cannot open mssql://user:***@127.0.0.1:1/db (") and "s3cret" not in err


def test_sqlite_store_in_a_missing_folder(capsys, workdir, minilm_path):
    study = base_study(minilm_path, tracking={"tracking_uri": f"sqlite:///{workdir}/no/such/folder/mlflow.db"})
    err = run_bad(capsys, workdir, [write_study(workdir, study)])
    assert "tracking.tracking_uri: " in err and "does not exist" in err
    assert not (workdir / "no").exists()
