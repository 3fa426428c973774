"""Floors: fitted with real scikit-learn on data the tests generate, scored with the trials' own
metric code; the verdict that says whether a study's model beats them."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from trainables.evaluation.floors import (
    Floor,
    best_sentence,
    classification_floors,
    floor_verdict,
    qa_floors,
)
from trainables.data.synthetic import LEXICON, emotion_rows

NAMES = list(LEXICON)


def _split(rows: list[dict]) -> Dataset:
    return Dataset.from_dict({"text": [r["text"] for r in rows], "labels": [NAMES.index(r["label"]) for r in rows]})


def test_tfidf_floor_learns_generated_emotions_and_majority_is_chance():
    raw = DatasetDict(train=_split(emotion_rows(600, seed=0)), validation=_split(emotion_rows(200, seed=1)), test=_split(emotion_rows(200, seed=2)))
    majority, tfidf = classification_floors(raw, multi_label=False, pair=False, n_classes=6, seed=0)
    assert (majority.name, tfidf.name) == ("majority", "tfidf_logreg")
    top = np.bincount(raw["train"]["labels"]).argmax()
    share = float(np.mean(np.asarray(raw["validation"]["labels"]) == top))
    assert majority.validation["accuracy"] == pytest.approx(share)  # every text gets the top label
    assert majority.validation["f1_macro"] < 0.2
    assert tfidf.validation["f1_macro"] > 0.7 and tfidf.test["accuracy"] > 0.7  # keyword-driven data: a strong floor
    metrics = tfidf.metrics()
    assert metrics["floor_tfidf_logreg_f1_macro"] == tfidf.validation["f1_macro"]
    assert metrics["floor_tfidf_logreg_test_accuracy"] == tfidf.test["accuracy"]


def test_multi_label_and_pair_floors():
    rng = np.random.default_rng(0)
    words = ["rain", "sun", "cat", "dog"]

    def rows(n: int) -> Dataset:
        labels = rng.integers(0, 2, size=(n, 4))
        texts = [" ".join(w for w, on in zip(words, row) if on) + " filler words" for row in labels]
        return Dataset.from_dict({"text": texts, "labels": labels.astype(float).tolist()})

    raw = DatasetDict(train=rows(300), validation=rows(100))
    majority, tfidf = classification_floors(raw, multi_label=True, pair=False, n_classes=4, seed=0)
    assert tfidf.validation["subset_accuracy"] > 0.9 and "test_accuracy" not in tfidf.metrics()
    assert tfidf.validation["f1_macro"] > majority.validation["f1_macro"]

    # pairs: the label is whether the two texts share their first word; joined texts, one bag
    a = [f"w{i % 7} x" for i in range(400)]
    b = [f"w{(i % 7) if i % 2 else (i + 1) % 7} y" for i in range(400)]
    labels = [int(i % 2) for i in range(400)]
    pairs = Dataset.from_dict({"text": a, "text_pair": b, "labels": labels})
    raw = DatasetDict(train=pairs.select(range(300)), validation=pairs.select(range(300, 400)))
    _, tfidf = classification_floors(raw, multi_label=False, pair=True, n_classes=2, seed=0)
    assert 0 <= tfidf.validation["accuracy"] <= 1


def test_class_missing_from_train_is_never_predicted_by_the_floor():
    train = Dataset.from_dict({"text": ["good"] * 5 + ["bad"] * 5, "labels": [0] * 5 + [1] * 5})
    val = Dataset.from_dict({"text": ["good", "bad", "meh"], "labels": [0, 1, 2]})
    _, tfidf = classification_floors(DatasetDict(train=train, validation=val), False, False, 3, 0)
    assert tfidf.validation["accuracy"] == pytest.approx(2 / 3)


def test_qa_floor_answers_with_the_best_overlapping_sentence():
    context = "Paris is the capital of France. The Seine flows through it. Berlin is in Germany."
    assert best_sentence("Which river flows through Paris?", context) == "The Seine flows through it."
    examples = {"validation": Dataset.from_dict({
        "question": ["What is the capital of France?"], "context": [context],
        "answers": [{"text": ["Paris"], "answer_start": [0]}],
    })}
    (floor,) = qa_floors(examples, version_2=False)
    assert floor.name == "best_sentence" and floor.validation["exact_match"] == 0 and 0 < floor.validation["f1"] < 100


def test_verdict_uses_test_scores_when_both_have_them_and_names_the_strongest_floor():
    floors = [Floor("majority", "", {"f1_macro": 0.1}, {"f1_macro": 0.12}), Floor("tfidf_logreg", "", {"f1_macro": 0.7}, {"f1_macro": 0.65})]
    above = floor_verdict(floors, "f1_macro", "max", {"f1_macro": 0.8, "test_f1_macro": 0.75})
    assert above.beats and above.floor == "tfidf_logreg" and above.split == "test" and above.line().startswith("above the floor")
    below = floor_verdict(floors, "f1_macro", "max", {"f1_macro": 0.5})
    assert not below.beats and below.split == "validation" and below.line().startswith("BELOW THE FLOOR: f1_macro 0.5000 vs tfidf_logreg 0.7000")
    assert floor_verdict(floors, "eval_loss", "min", {"eval_loss": 0.3}) is None  # no floor scores a loss
    assert floor_verdict([], "f1_macro", "max", {"f1_macro": 0.5}) is None
