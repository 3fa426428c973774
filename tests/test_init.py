"""``python -m sweeps.init DATA``: a study from the user's own data file, on every format and
task kind the loader reads; the study it writes validates (``--dry-run``) and one runs as a
real ``--smoke`` sweep; data it cannot settle gets one line naming the flag that does."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
import yaml

from sweeps import init
from sweeps.run import main as run_main
from tests.study_data import chat_rows, qa_rows
from trainables.data.synthetic import emotion_rows


def emotions(n: int, seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame(emotion_rows(n, seed=seed))


def study_of(workdir, capsys, argv: list[str]) -> dict:
    """Run sweeps.init, check its printout, that the study passes --dry-run; return the YAML."""
    assert init.main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    out = printed.split()[1].rstrip(":")
    assert f"python -m sweeps.run {out}" in printed and f"python -m sweeps.run {out} --dry-run" in printed
    assert run_main([out, "--dry-run"]) == 0
    capsys.readouterr()
    return yaml.safe_load((workdir / out).read_text())


def test_csv_with_text_and_label_columns(workdir, capsys):
    df = emotions(120).rename(columns={"text": "review", "label": "sentiment"})
    df.insert(0, "id", range(len(df)))
    df.to_csv(workdir / "reviews.csv", index=False)
    study = study_of(workdir, capsys, ["reviews.csv"])
    assert study["name"] == "reviews" and study["task"] == "single_label" and study["model"] == init.DEFAULT_MODEL
    assert study["data"]["format"] == "csv" and study["data"]["files"] == {"train": "reviews.csv"}
    assert study["data"]["columns"] == {"text": "review", "label": "sentiment"}
    assert 32 <= study["training"]["max_length"] <= 64, "sized from the tweets' token counts"
    header = (workdir / "reviews.yaml").read_text()
    from sweeps.schema import SCHEMA_FILE, SCHEMA_URL_COMMENT

    assert header.splitlines()[0] == f"{SCHEMA_URL_COMMENT}{SCHEMA_FILE.as_uri()}", "editors check the keys it wrote"
    assert "# Launch:   python -m sweeps.run reviews.yaml" in header and "# 6 labels: anger, fear, joy, love, sadness, surprise" in header


def test_headerless_semicolon_txt_folder_with_splits(workdir, capsys):
    """The shared emotion set's layout: ``text;label`` lines, no header, train/val/test files."""
    folder = workdir / "emo"
    folder.mkdir()
    for split, seed in (("train", 0), ("val", 1), ("test", 2)):
        (folder / f"{split}.txt").write_text("".join(f"{r['text']};{r['label']}\n" for r in emotion_rows(60, seed=seed)))
    study = study_of(workdir, capsys, ["emo", "--out", "studies/emo.yaml"])
    data = study["data"]
    assert data["delimiter"] == ";" and data["column_names"] == ["text", "label"]
    assert set(data["files"]) == {"train", "validation", "test"} and "validation_fraction" not in data
    assert (workdir / "studies" / "emo.yaml").is_file() and not list(workdir.glob("studies/.*"))


def test_tsv_multi_label_as_zero_one_columns(workdir, capsys):
    rng = random.Random(0)
    df = emotions(80)[["text"]]
    for name in ("joy", "anger", "fear"):
        df[name] = [int(rng.random() < 0.4) for _ in range(len(df))]
    df.to_csv(workdir / "tags.tsv", sep="\t", index=False)
    study = study_of(workdir, capsys, ["tags.tsv"])
    assert study["task"] == "multi_label" and study["data"]["format"] == "tsv"
    assert study["data"]["columns"] == {"label": None, "labels": ["joy", "anger", "fear"]}


def test_jsonl_multi_label_as_lists(workdir, capsys):
    rng = random.Random(1)
    with open(workdir / "topics.jsonl", "w") as f:
        for r in emotion_rows(80, seed=3):
            f.write(json.dumps({"text": r["text"], "labels": sorted({r["label"], rng.choice(["x", "y"])})}) + "\n")
    study = study_of(workdir, capsys, ["topics.jsonl"])
    assert study["task"] == "multi_label" and study["data"]["columns"] == {"label": "labels"}


def test_jsonl_sentence_pairs_in_reading_order(workdir, capsys):
    rng = random.Random(2)
    with open(workdir / "nli.jsonl", "w") as f:
        for r in emotion_rows(90, seed=4):
            f.write(json.dumps({"hypothesis": f"the writer feels {r['text'].split()[-1]} {rng.randint(0, 9)}", "premise": r["text"], "gold_label": rng.choice(["entailment", "contradiction", "neutral"])}) + "\n")
    study = study_of(workdir, capsys, ["nli.jsonl"])
    assert study["task"] == "sentence_pair"
    assert study["data"]["columns"] == {"text": "premise", "text_pair": "hypothesis", "label": "gold_label"}, "premise first, as NLI models read it"


def test_json_records_with_integer_labels(workdir, capsys):
    rows = [{"sentence": r["text"], "label": i % 2} for i, r in enumerate(emotion_rows(60, seed=5))]
    (workdir / "sst.json").write_text(json.dumps(rows))
    study = study_of(workdir, capsys, ["sst.json"])
    assert study["data"]["format"] == "json" and study["task"] == "single_label"
    assert study["data"]["columns"] == {"text": "sentence"} and "# 2 labels: 0, 1" in (workdir / "sst.yaml").read_text()


def test_tweeteval_folder_takes_its_label_names_from_mapping(workdir, capsys):
    folder = workdir / "tweets"
    folder.mkdir()
    names = ["anger", "joy", "optimism", "sadness"]
    for split, seed in (("train", 0), ("val", 1)):
        rows = emotion_rows(40, seed=seed)
        (folder / f"{split}_text.txt").write_text("".join(r["text"] + "\n" for r in rows))
        (folder / f"{split}_labels.txt").write_text("".join(f"{i % 4}\n" for i in range(len(rows))))
    (folder / "mapping.txt").write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(names)))
    study = study_of(workdir, capsys, ["tweets"])
    assert study["data"]["format"] == "lines" and study["data"]["label_names"] == names
    assert set(study["data"]["label_files"]) == {"train", "validation"}


@pytest.mark.parametrize("no_answer_share,task", [(0.0, "extractive_qa"), (0.3, "extractive_qa_v2")])
def test_official_squad_json_is_qa_and_unanswerable_questions_make_it_v2(workdir, capsys, no_answer_share, task):
    articles: dict[str, dict] = {}
    for r in qa_rows(40, seed=6, no_answer_share=no_answer_share):
        qa = {"id": r["id"], "question": r["question"], "answers": [{"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])]}
        if no_answer_share:
            qa["is_impossible"] = not r["answers"]["text"]
        articles.setdefault(r["title"], {"title": r["title"], "paragraphs": []})["paragraphs"].append({"context": r["context"], "qas": [qa]})
    (workdir / "dev.json").write_text(json.dumps({"version": "v2.0", "data": list(articles.values())}))
    study = study_of(workdir, capsys, ["dev.json"])
    assert study["task"] == task and study["data"]["format"] == "squad"
    assert study["training"]["max_length"] == 384 and study["training"]["doc_stride"] == 128, "QA reads contexts in windows"


def test_flat_qa_jsonl_in_the_hub_layout(workdir, capsys):
    with open(workdir / "qa.jsonl", "w") as f:
        for r in qa_rows(30, seed=7, no_answer_share=0.0):
            f.write(json.dumps(r) + "\n")
    assert study_of(workdir, capsys, ["qa.jsonl"])["task"] == "extractive_qa"


def test_instruction_jsonl_needs_a_causal_model(workdir, capsys, tiny_llama):
    with open(workdir / "chats.jsonl", "w") as f:
        for conv in chat_rows(30, seed=8):
            f.write(json.dumps({"conversations": conv}) + "\n")
    assert init.main(["chats.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --model: instruction tuning needs a causal language model (fix: pass --model")
    assert not list(workdir.glob("*.yaml"))
    study = study_of(workdir, capsys, ["chats.jsonl", "--model", tiny_llama])
    assert study["task"] == "instruction" and study["data"]["columns"] == {"messages": "conversations"}


def test_flags_settle_what_the_data_leaves_open(workdir, capsys):
    df = emotions(80)
    df["summary"] = [t[::-1] for t in df["text"]]
    df["notes"] = [f"{t} again and again" for t in df["text"]]
    df.to_csv(workdir / "wide.csv", index=False)
    assert init.main(["wide.csv"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --text: 3 text columns (text, summary, notes): which does the model read? "
                                              "(fix: pass --text COLUMN, and --text-pair COLUMN for sentence pairs)")
    study = study_of(workdir, capsys, ["wide.csv", "--text", "notes"])
    assert study["task"] == "single_label" and study["data"]["columns"] == {"text": "notes"}
    study = study_of(workdir, capsys, ["wide.csv", "--text", "text", "--text-pair", "summary", "--force"])
    assert study["task"] == "sentence_pair" and study["data"]["columns"] == {"text_pair": "summary"}


@pytest.mark.parametrize("write,argv,message", [
    (lambda d: pd.DataFrame({"text": [f"row {i} says something rather long here" for i in range(30)], "score": [i * 0.37 for i in range(30)]}).to_csv(d / "x.csv", index=False),
     ["x.csv"], "error: --label: no column looks like labels; columns: text, score (fix: pass --label COLUMN)"),
    (lambda d: emotions(30).assign(label="joy").to_csv(d / "x.csv", index=False),
     ["x.csv"], "error: --label: column 'label' has 1 distinct value(s) (joy); a classifier needs at least 2 (fix: pass the right --label COLUMN, or add rows of other labels)"),
    (lambda d: emotions(30).to_csv(d / "x.csv", index=False),
     ["x.csv", "--label", "mood"], "error: --label: no column 'mood' in the data (columns: text, label) (fix: use one of those columns)"),
    (lambda d: (d / "x.parquet").write_bytes(b"PAR1"),
     ["x.parquet"], "error: DATA: cannot read .parquet files (x.parquet) (fix: convert it to csv, tsv, json or jsonl)"),
    (lambda d: None,
     ["missing.csv"], "error: DATA: no file or folder at 'missing.csv' (fix: pass a data file or a folder with train.* (and validation.*, test.*))"),
    (lambda d: (d / "x.txt").write_text("".join(f"just one text per line number {i}\n" for i in range(20))),
     ["x.txt"], "error: DATA: x.txt has no column separator (one text per line, no labels?) (fix: give a csv/tsv with text and label columns, or a folder with train_text.txt + train_labels.txt)"),
    (lambda d: (emotions(30).to_csv(d / "x.csv", index=False), (d / "x.yaml").write_text("keep me")),
     ["x.csv"], "error: --out: x.yaml exists (fix: pass --force to overwrite it, or another --out)"),
], ids=["no-label", "one-label", "unknown-flag-column", "parquet", "missing", "one-column-txt", "exists"])
def test_what_it_cannot_settle_is_one_line_exit_2_nothing_written(workdir, capsys, write, argv, message):
    write(workdir)
    before = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
    assert init.main(argv) == 2
    assert capsys.readouterr().err.strip() == message
    assert {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()} == before, "nothing written or changed"


@pytest.mark.ray
def test_a_written_study_runs_as_a_smoke_sweep(workdir, capsys, ray_cluster, tiny_llama):
    """The study sweeps.init writes is a real study: it runs end to end (smoke: 2 steps, one trial
    per method, each method's first point enqueued for Optuna) and lands in MLflow."""
    df = emotions(120).rename(columns={"text": "review"})
    df.to_csv(workdir / "reviews.csv", index=False)
    assert init.main(["reviews.csv"]) == 0
    assert run_main(["reviews.yaml", "--smoke", "--model", tiny_llama]) == 0
    from tests.conftest import mlflow_runs

    _, runs = mlflow_runs(workdir, "reviews-smoke")
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["method"] for r in kids) == ["full", "ia3", "lora"]
    assert all(r.info.status == "FINISHED" and r.data.tags["status"] != "failed" for r in kids), "ASHA may stop one, none fails"
