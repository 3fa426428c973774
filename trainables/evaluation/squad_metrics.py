"""SQuAD exact match and F1, as the official evaluation scripts define them (v1.1 and v2.0).

The hub's ``squad``/``squad_v2`` metric scripts cannot load offline, so the definitions live
here: answers are normalised (lower case, no punctuation, no articles a/an/the, single spaces),
a question scores the best match over its reference answers, and scores are percentages.
In v2.0 a question without an answer has the single reference "" (abstaining is right).
"""

from __future__ import annotations

import collections
import re
import string
from typing import Iterable

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def f1(gold: str, pred: str) -> float:
    gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(pred).split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)  # both empty (a right abstention): 1, else 0
    common = collections.Counter(gold_tokens) & collections.Counter(pred_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def question_scores(golds: list[str], pred: str) -> tuple[int, float]:
    """(exact, F1) of one prediction: the best over the question's reference answers."""
    golds = [g for g in golds if normalize_answer(g)] or [""]
    return max(exact(g, pred) for g in golds), max(f1(g, pred) for g in golds)


def squad_scores(items: Iterable[tuple[list[str], str]], version_2: bool = False) -> dict[str, float]:
    """``items``: (reference answers, prediction) per question. Returns ``exact_match`` and ``f1``
    in percent; with ``version_2`` also the answerable (``has_answer_*``) and unanswerable
    (``no_answer_exact_match``) parts, as the v2.0 script reports them (HasAns / NoAns)."""
    per = [(bool([g for g in golds if normalize_answer(g)]), *question_scores(golds, pred)) for golds, pred in items]
    if not per:
        return {}
    out = {"exact_match": 100.0 * sum(e for _, e, _ in per) / len(per), "f1": 100.0 * sum(f for _, _, f in per) / len(per)}
    if version_2:
        has = [(e, f) for answerable, e, f in per if answerable]
        no = [e for answerable, e, _ in per if not answerable]
        if has:
            out["has_answer_exact_match"] = 100.0 * sum(e for e, _ in has) / len(has)
            out["has_answer_f1"] = 100.0 * sum(f for _, f in has) / len(has)
        if no:
            out["no_answer_exact_match"] = 100.0 * sum(no) / len(no)
    return out
