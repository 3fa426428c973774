"""Trying a model: each task kind's ``answer`` (what ``sweeps.predict`` and ``sweeps.serve`` show),
the inputs ``predict`` takes per kind, and ``sweeps.serve``'s bad input (one line, exit 2, before
any model loads). The served app itself is checked in a browser on real sweeps:
tests/test_report.py (classification) and tests/test_catalogue.py (QA)."""

from __future__ import annotations

import socket
import sys

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from core.specs import TrainingSpec
from sweeps import predict, serve
from trainables.kinds import TASKS, qa, sft


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def test_qa_answer_is_a_span_of_its_context_found_over_windows(minilm_path):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(minilm_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    filler = " ".join(f"Sentence number {i} says nothing at all." for i in range(30))
    rows = [{"question": "When was the bridge built?", "context": f"{filler} The bridge was built in 1873."}, {"question": "Who?", "context": "Ada wrote it."}]
    training = TrainingSpec(max_length=64, doc_stride=16)
    for task in (TASKS["extractive_qa"], TASKS["extractive_qa_v2"]):
        out = qa.answer(model, tokenizer, rows, task, training)
        assert len(out) == 2 and not model.training
        for row, answer in zip(rows, out):
            assert 0 <= answer["score"] <= 1
            if answer["no_answer"]:
                assert task.allow_no_answer and answer["answer"] == "" and answer["start"] == -1
            else:
                assert row["context"][answer["start"]:answer["start"] + len(answer["answer"])] == answer["answer"] != ""
    assert not any(a["no_answer"] for a in qa.answer(model, tokenizer, rows, TASKS["extractive_qa"], training))  # v1.1 never abstains


def test_chat_stream_ends_with_the_answer_predict_gives(tmp_path):
    from transformers import AutoModelForCausalLM

    from trainables.model import tiny
    from trainables.model.load import load_tokenizer

    folder = tiny.write_tiny_model("llama", tmp_path / "lm")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), load_tokenizer(str(folder))
    training = TrainingSpec(max_new_tokens=12)
    (answer,) = sft.answer(model, tokenizer, [{"prompt": "What is 2 plus 2?"}], TASKS["instruction"], training)
    steps = list(sft.stream(model, tokenizer, [{"role": "user", "content": "What is 2 plus 2?"}], 12))
    assert len(steps) > 1 and steps[-1] == answer["answer"] != ""  # streamed: grows token by token
    assert all(steps[i + 1].startswith(steps[i].rstrip()) for i in range(len(steps) - 1))


def _args(*argv: str):
    return predict.parser().parse_intermixed_args(["study", *argv])


@pytest.mark.parametrize("task, argv, rows", [
    ("single_label", ["a", "b"], [{"text": "a"}, {"text": "b"}]),
    ("sentence_pair", ["a", "--pair", "x"], [{"text": "a", "text_pair": "x"}]),
    ("extractive_qa", ["--question", "q", "--context", "c"], [{"question": "q", "context": "c"}]),
    ("instruction", ["tell me"], [{"prompt": "tell me"}]),
])
def test_predict_takes_each_kinds_inputs(task, argv, rows):
    t = TASKS[task]
    assert predict.rows_from(_args(*argv), t.kind.input_fields(t)) == rows


@pytest.mark.parametrize("task, argv, field", [
    ("extractive_qa", ["some text"], "texts"),
    ("extractive_qa", ["--question", "q"], "--context"),
    ("sentence_pair", ["a"], "--pair"),
    ("single_label", ["a", "--pair", "x"], "--pair"),
    ("single_label", ["--question", "q", "--context", "c", "a"], "--question"),
    ("instruction", [], "inputs"),
])
def test_predict_refuses_inputs_the_task_does_not_take(task, argv, field):
    from core.errors import StudyError

    t = TASKS[task]
    with pytest.raises(StudyError) as err:
        predict.rows_from(_args(*argv), t.kind.input_fields(t))
    assert err.value.field == field


def test_predict_reads_qa_inputs_from_a_file(tmp_path):
    file = tmp_path / "qs.jsonl"
    file.write_text('{"question": "q1", "context": "c1", "id": 3}\n{"question": "q2", "context": "c2"}\n')
    assert predict.read_rows(str(file), ("question", "context")) == [{"question": "q1", "context": "c1"}, {"question": "q2", "context": "c2"}]
    from core.errors import StudyError

    bad = tmp_path / "qs.csv"
    bad.write_text("question\nq\n")
    with pytest.raises(StudyError, match="no 'context' column"):
        predict.read_rows(str(bad), ("question", "context"))
    lines = tmp_path / "qs.txt"
    lines.write_text("q\n")
    with pytest.raises(StudyError, match="takes 'question' and 'context' per input"):
        predict.read_rows(str(lines), ("question", "context"))


def test_serve_unknown_study_or_run_is_one_line_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert serve.main(["no_such_study", "--port", "0"]) == 2
    one_line_error(capsys, "unknown study")
    assert serve.main(["0" * 32, "--port", "0", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    one_line_error(capsys, "--tracking-uri: no MLflow store at")
    assert not (tmp_path / "m.db").exists()  # reading never creates a store
    MlflowClient(f"sqlite:///{tmp_path}/m.db").create_experiment("other")  # a store without that run
    assert serve.main(["0" * 32, "--port", "0", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    # (MLflow itself logs "Creating initial MLflow database tables" for a store this new)
    errors = [ln for ln in capsys.readouterr().err.splitlines() if " INFO mlflow." not in ln]
    assert len(errors) == 1 and errors[0].startswith("error: run: no MLflow run"), errors


def test_serve_a_port_in_use_is_one_line_exit_2_before_anything_loads(capsys, monkeypatch):
    loaded = []
    monkeypatch.setattr(serve, "load", lambda *a: loaded.append(a))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert serve.main(["emotion_demo", "--port", str(port)]) == 2
    one_line_error(capsys, "--port", f"127.0.0.1:{port} is not free", "another --port")
    assert not loaded


def test_serve_a_study_run_with_no_finished_trial_is_one_line_exit_2(capsys, tmp_path):
    """A real MLflow store whose study run finished without a best trial (every trial failed)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("unit")
    parent = client.create_run(experiment)
    with open(tmp_path / "study.yaml", "w") as f:
        yaml.safe_dump({"task": "single_label", "search": {"metric": "f1_macro", "mode": "max"}}, f)
    client.log_artifact(parent.info.run_id, str(tmp_path / "study.yaml"))
    client.set_terminated(parent.info.run_id, "FINISHED")
    capsys.readouterr()  # MLflow's own lines about creating this new store
    assert serve.main([parent.info.run_id, "--tracking-uri", uri, "--port", "0"]) == 2
    one_line_error(capsys, "names no best trial")
    assert len(client.search_runs([experiment])) == 1  # nothing written


def test_serve_without_gradio_says_how_to_install_it(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert serve.main(["emotion_demo", "--port", "0"]) == 2
    one_line_error(capsys, "gradio", ".[ui]")
