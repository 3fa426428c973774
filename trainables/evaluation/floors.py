"""Floors: what a study's data gives without fine-tuning anything, fitted in seconds.

A sweep's winner must clear these to be worth having. For classification: the majority class
and TF-IDF (word 1-2 grams) + logistic regression, fitted on the same training rows the
trials see (multi-label: one-vs-rest; sentence pairs: the two texts joined). For extractive
QA: the context sentence that shares the most words with the question, scored as the answer.
Instruction tuning has no cheap floor of its own: its floor is the pretrained model answering
zero-shot, which every trial scores before training (``before_*`` metrics).

Each floor is scored with the same metric code as the trials, on validation and test.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter
from typing import Any, Callable, Optional

import numpy as np

from trainables.evaluation.metrics import classification_metrics


@dataclasses.dataclass
class Floor:
    name: str  # "majority", "tfidf_logreg", "best_sentence"
    description: str
    validation: dict[str, float]
    test: dict[str, float] = dataclasses.field(default_factory=dict)
    fit_s: float = 0.0

    def metrics(self) -> dict[str, float]:
        """Flat MLflow metrics: ``floor_<name>_<metric>`` (validation), ``..._test_<metric>``."""
        out = {f"floor_{self.name}_{k}": v for k, v in self.validation.items()}
        out.update({f"floor_{self.name}_test_{k}": v for k, v in self.test.items()})
        return out


# Instruction tuning: why there is no floor fitted in the driver.


def _texts(split: Any, pair: bool) -> list[str]:
    texts = list(split["text"])
    if pair:  # one bag of words over both texts: the floor does not model the pairing
        texts = [f"{a} [SEP] {b}" for a, b in zip(texts, split["text_pair"])]
    return texts


def _majority(train_labels: np.ndarray, multi_label: bool, n_classes: int) -> Callable[[list[str]], np.ndarray]:
    if multi_label:  # each label on when most training texts carry it (usually: none)
        on = np.where(train_labels.mean(axis=0) > 0.5, 1.0, -1.0)
        return lambda texts: np.tile(on, (len(texts), 1))
    top = Counter(train_labels.tolist()).most_common(1)[0][0]
    row = np.full(n_classes, -1.0)
    row[top] = 1.0
    return lambda texts: np.tile(row, (len(texts), 1))


# The same convex problem (L2 logistic loss, C=10) that sklearn's default lbfgs solves, but lbfgs
# stops short of the optimum on 125k TF-IDF features (objective 4938.6 vs 4932.7 on 16,000
# tweets); Newton-CG gets within 0.02% of it in ~6 iterations: 2.2 s instead of 17.2 s there
# (bench/RESULTS.md, "Floors"). So the floor is the model it says it is, and cheap.
SOLVER = "newton-cg"


def _tfidf_logreg(texts: list[str], labels: np.ndarray, multi_label: bool, n_classes: int, seed: int) -> Callable[[list[str]], np.ndarray]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x = vectorizer.fit_transform(texts)
    model = LogisticRegression(C=10.0, solver=SOLVER, max_iter=2000, random_state=seed)
    if multi_label:
        clf = OneVsRestClassifier(model).fit(x, labels.astype(int))
        # decision > 0 <=> probability > 0.5: the trials' multi-label threshold
        return lambda t: np.asarray(clf.decision_function(vectorizer.transform(t)))
    clf = model.fit(x, labels)
    seen = list(clf.classes_)

    def logits(t: list[str]) -> np.ndarray:
        out = np.full((len(t), n_classes), -np.inf)  # a class absent from train is never predicted
        out[:, seen] = clf.predict_log_proba(vectorizer.transform(t))
        return out

    return logits


def classification_floors(raw: Any, multi_label: bool, pair: bool, n_classes: int, seed: int) -> list[Floor]:
    """Majority class and TF-IDF + logistic regression, fitted on ``raw['train']``."""
    train_texts = _texts(raw["train"], pair)
    train_labels = np.asarray(raw["train"]["labels"])
    scored = [s for s in ("validation", "test") if s in raw and "labels" in raw[s].column_names]
    floors = []
    for name, description, fit in (
        ("majority", "the most frequent training label for every text", lambda: _majority(train_labels, multi_label, n_classes)),
        ("tfidf_logreg", "TF-IDF of word 1-2 grams + logistic regression (C=10), on the same training rows", lambda: _tfidf_logreg(train_texts, train_labels, multi_label, n_classes, seed)),
    ):
        started = time.perf_counter()
        predict = fit()
        results = {s: classification_metrics(predict(_texts(raw[s], pair)), np.asarray(raw[s]["labels"]), multi_label) for s in scored}
        floors.append(Floor(name, description, results.get("validation", {}), results.get("test", {}), time.perf_counter() - started))
    return floors


_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STOP = frozenset("a an the of in on at to for by with from and or is are was were be been what which who whom whose when where why how did do does that this these those it its as".split())


def best_sentence(question: str, context: str) -> str:
    """The context sentence sharing the most (non-stop) words with the question."""
    asked = {w for w in _WORD.findall(question.lower()) if w not in _STOP}
    sentences = [s for s in _SENTENCE_END.split(context) if s.strip()] or [context]
    return max(sentences, key=lambda s: len(asked & set(_WORD.findall(s.lower()))))


def qa_floors(examples: dict[str, Any], version_2: bool) -> list[Floor]:
    """The best-overlap sentence as the answer, on the validation (and test) questions."""
    from trainables.evaluation.squad_metrics import squad_scores

    started = time.perf_counter()
    results: dict[str, dict[str, float]] = {}
    for split in ("validation", "test"):
        ex: Optional[Any] = examples.get(split)
        if ex is None or not any(a["text"] for a in ex["answers"]):
            continue
        preds = [best_sentence(q, c) for q, c in zip(ex["question"], ex["context"])]
        results[split] = squad_scores(zip([a["text"] for a in ex["answers"]], preds), version_2=version_2)
    if "validation" not in results:
        return []
    return [Floor("best_sentence", "the context sentence sharing the most words with the question, as the answer", results["validation"], results.get("test", {}), time.perf_counter() - started)]


@dataclasses.dataclass
class Verdict:
    """The study's model against its strongest floor, on the study's metric."""

    beats: bool
    floor: str
    floor_value: float
    value: float
    split: str  # "test" when both have test scores, else "validation"
    metric: str

    def line(self) -> str:
        if self.beats:
            return f"above the floor: {self.metric} {self.value:.4f} vs {self.floor} {self.floor_value:.4f} ({self.split})"
        return (f"BELOW THE FLOOR: {self.metric} {self.value:.4f} vs {self.floor} {self.floor_value:.4f} ({self.split}): "
                "the tuned model is not worth having over the floor; give the search more data, steps or trials "
                "(data.max_train_rows, training.epochs, a final stage) or other ranges")


def floor_verdict(floors: list[Floor], metric: str, mode: str, best: dict[str, float]) -> Optional[Verdict]:
    """Compare ``best`` (a trial's metrics, ``test_*`` included) with the strongest floor that
    has ``metric``; None where no floor scores it."""
    split = "test" if f"test_{metric}" in best and all(metric in f.test for f in floors if metric in f.validation) else "validation"
    scored = [(f.test if split == "test" else f.validation).get(metric) for f in floors]
    candidates = [(v, f.name) for v, f in zip(scored, floors) if v is not None]
    value = best.get(f"test_{metric}" if split == "test" else metric)
    if not candidates or value is None:
        return None
    floor_value, name = max(candidates) if mode == "max" else min(candidates)
    beats = value > floor_value if mode == "max" else value < floor_value
    return Verdict(beats, name, floor_value, value, split, metric)
