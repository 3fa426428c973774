"""Data loading, column mapping, stratified split, tokenization; offline metrics."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from core.errors import StudyError
from core.schema import parse
from sweeps.study import DataSpec
from trainables.data import load as data
from trainables.kinds import TASKS
from trainables.evaluation.metrics import classification_metrics
from trainables.model.load import load_tokenizer


def test_generated_data_is_stratified(minilm_path):
    spec = parse(DataSpec, {"source": "generated", "name": "emotion", "rows": 600})
    ds, names = data.load_splits(spec, TASKS["single_label"], seed=3)
    assert set(ds) == {"train", "validation", "test"} and len(names) == 6
    assert len(ds["validation"]) == 120
    share = lambda d: {k: v / len(d) for k, v in Counter(d["labels"]).items()}  # noqa: E731
    tr, va = share(ds["train"]), share(ds["validation"])
    assert all(abs(tr[k] - va[k]) < 0.02 for k in tr)
    tok = load_tokenizer(minilm_path)
    prepared = data.prepare(spec, TASKS["single_label"], tok, 16, seed=3)
    row = prepared.splits["train"][0]
    assert set(row) >= {"input_ids", "attention_mask", "labels"} and len(row["input_ids"]) <= 16


def test_local_csv_pairs_and_string_labels(tmp_path):
    path = tmp_path / "snli.csv"
    lines = ["premise;hypothesis;gold"] + [f"a man sits {i};someone sits;{['entail', 'neutral', 'contra'][i % 3]}" for i in range(60)]
    path.write_text("\n".join(lines) + "\n")
    spec = parse(DataSpec, {"source": "local", "files": {"train": str(path)}, "delimiter": ";", "columns": {"text": "premise", "text_pair": "hypothesis", "label": "gold"}})
    ds, names = data.load_splits(spec, TASKS["sentence_pair"], seed=0)
    assert names == ["contra", "entail", "neutral"]
    assert set(ds["train"].column_names) == {"text", "text_pair", "labels"}


def test_multi_label_from_one_hot_columns(tmp_path):
    path = tmp_path / "ec.jsonl"
    import json

    rows = [{"Tweet": f"t{i}", "anger": i % 2, "joy": (i // 2) % 2, "fear": 0} for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    spec = parse(DataSpec, {"source": "local", "files": {"train": str(path)}, "columns": {"text": "Tweet", "labels": ["anger", "joy", "fear"]}})
    ds, names = data.load_splits(spec, TASKS["multi_label"], seed=0)
    assert names == ["anger", "joy", "fear"]
    assert all(len(v) == 3 for v in ds["train"]["labels"])


def test_unknown_label_value_is_a_study_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"x{i},{'pos' if i % 2 else 'neg'}\n" for i in range(20)))
    spec = parse(DataSpec, {"source": "local", "files": {"train": str(path)}, "label_names": ["pos", "neutral"]})
    with pytest.raises(StudyError, match="data.label_names: label 'neg'"):
        data.load_splits(spec, TASKS["single_label"], seed=0)


def test_single_label_metrics_match_hand_counts():
    logits = np.array([[2, 0, 0], [0, 2, 0], [0, 2, 0], [0, 0, 2]], dtype=float)
    labels = np.array([0, 1, 2, 2])
    m = classification_metrics(logits, labels, multi_label=False)
    assert m["accuracy"] == pytest.approx(0.75)
    # class 0: P=1 R=1; class 1: P=0.5 R=1; class 2: P=1 R=0.5
    assert m["precision_macro"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["recall_macro"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["f1_micro"] == pytest.approx(0.75)


def test_macro_counts_classes_never_predicted():
    logits = np.array([[5, 0, 0]] * 4, dtype=float)  # always class 0
    m = classification_metrics(logits, np.array([0, 0, 1, 2]), multi_label=False)
    assert m["f1_macro"] == pytest.approx((2 * 0.5 * 1 / 1.5) / 3)


def test_multi_label_subset_accuracy_and_jaccard():
    logits = np.array([[1, -1, 1], [1, 1, -1]], dtype=float)
    labels = np.array([[1, 0, 1], [1, 0, 0]])
    m = classification_metrics(logits, labels, multi_label=True)
    assert m["subset_accuracy"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx((1 + 0.5) / 2)


def test_text_lines_with_label_lines_load_as_tweeteval_ships_them(tmp_path):
    """TweetEval: one raw tweet per line (quotes, semicolons, commas untouched) and its label on
    the same line of a second file."""
    texts = ['"so happy", she said; really', "i am furious, truly", "meh"] * 10
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n")
    (tmp_path / "l.txt").write_text("\n".join(["1", "0", "2"] * 10) + "\n")
    spec = parse(DataSpec, {"format": "lines", "files": {"train": str(tmp_path / "t.txt")}, "label_files": {"train": str(tmp_path / "l.txt")}, "label_names": ["anger", "joy", "optimism"]})
    ds, names = data.load_splits(spec, TASKS["single_label"], seed=0)
    assert names == ["anger", "joy", "optimism"] and len(ds["train"]) + len(ds["validation"]) == 30
    row = next(r for r in ds["train"] if r["text"].startswith('"so happy"'))
    assert row["text"] == texts[0] and row["labels"] == 1

    (tmp_path / "short.txt").write_text("1\n0\n")
    spec = parse(DataSpec, {"format": "lines", "files": {"train": str(tmp_path / "t.txt")}, "label_files": {"train": str(tmp_path / "short.txt")}})
    with pytest.raises(StudyError, match=r"data.label_files.train: 2 labels for 30 texts"):
        data.load_splits(spec, TASKS["single_label"], seed=0)
    with pytest.raises(StudyError, match=r"label_files.train: format lines needs a labels file per split"):
        parse(DataSpec, {"format": "lines", "files": {"train": str(tmp_path / "t.txt")}})
    with pytest.raises(StudyError, match=r"label_files: label files go with format: lines"):
        parse(DataSpec, {"files": {"train": str(tmp_path / "t.txt")}, "label_files": {"train": str(tmp_path / "l.txt")}})


def test_tokenizing_names_each_result_without_pickling_the_tokenizer(minilm_path, monkeypatch):
    """datasets' own fingerprint of a map pickles the function with the tokenizer inside it
    (~1 s a study on MiniLM, more on large vocabularies): ours is the split, the tokenizer's
    identity and the settings, so a change to any of them is a new name, and nothing is pickled."""
    import datasets.fingerprint

    spec = parse(DataSpec, {"source": "generated", "name": "emotion", "rows": 120})
    raw, _ = data.load_splits(spec, TASKS["single_label"], seed=3)
    tok = load_tokenizer(minilm_path)

    own = datasets.fingerprint.update_fingerprint

    def no_pickling(fingerprint, transform, transform_args):
        assert not transform.endswith("_map_single"), "datasets fingerprinted the map by pickling encode() and the tokenizer"
        return own(fingerprint, transform, transform_args)

    monkeypatch.setattr(datasets.arrow_dataset, "update_fingerprint", no_pickling)
    names = lambda d: {k: v._fingerprint for k, v in d.items()}  # noqa: E731
    base = names(data.tokenize(raw, tok, 16, TASKS["single_label"]))
    assert base == names(data.tokenize(raw, tok, 16, TASKS["single_label"])), "same input, same name"
    assert len(set(base.values())) == len(base), "each split its own name"
    shorter = names(data.tokenize(raw, tok, 8, TASKS["single_label"]))
    assert not set(shorter.values()) & set(base.values()), "another max_length is another result"
    tok.truncation_side = "left"
    assert not set(names(data.tokenize(raw, tok, 16, TASKS["single_label"])).values()) & set(base.values())
