"""Extractive QA: the official SQuAD EM/F1 on hand-checked cases, windowing of long contexts,
and span post-processing (v1.1 and the v2.0 no-answer rule)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from trainables.kinds import qa
from trainables.evaluation.squad_metrics import (
    exact,
    f1,
    normalize_answer,
    question_scores,
    squad_scores,
)

SHARED_SQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad_v1.1" / "dev-v1.1.json"


def test_normalisation_drops_case_punctuation_articles_and_extra_spaces():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theory") == "theory"  # "the" only as a whole word


@pytest.mark.parametrize(
    "gold, pred, em, f",
    [
        ("Denver Broncos", "the Denver Broncos.", 1, 1.0),
        ("Denver Broncos", "Broncos", 0, 2 / 3),  # P 1, R 1/2
        ("new york new york", "new york", 0, 2 / 3),  # token counts, not sets: common 2 of 4
        ("Santa Clara", "Levi's Stadium in Santa Clara", 0, 2 * 0.4 * 1 / 1.4),  # P 2/5, R 1
        ("1990", "1991", 0, 0.0),
        ("", "", 1, 1.0),  # v2: abstaining on an unanswerable question
        ("", "Paris", 0, 0.0),
        ("Paris", "", 0, 0.0),
    ],
)
def test_exact_match_and_f1_by_hand(gold, pred, em, f):
    assert exact(gold, pred) == em
    assert f1(gold, pred) == pytest.approx(f)


def test_a_question_scores_its_best_reference_and_the_totals_are_percentages():
    assert question_scores(["Santa Clara", "Levi's Stadium"], "Levi's Stadium") == (1, 1.0)
    assert question_scores([], "") == (1, 1.0)  # unanswerable: the reference is ""
    items = [(["Denver Broncos"], "Broncos"), (["1990"], "1990"), ([], ""), ([], "Paris")]
    v1 = squad_scores(items[:2])
    assert v1 == pytest.approx({"exact_match": 50.0, "f1": 100 * (2 / 3 + 1) / 2})
    v2 = squad_scores(items, version_2=True)
    assert v2["exact_match"] == pytest.approx(50.0) and v2["f1"] == pytest.approx(100 * (2 / 3 + 1 + 1 + 0) / 4)
    assert v2["has_answer_exact_match"] == pytest.approx(50.0) and v2["has_answer_f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert v2["no_answer_exact_match"] == pytest.approx(50.0)


@pytest.mark.skipif(not SHARED_SQUAD.is_file(), reason="../shared/data/squad_v1.1 not on this machine")
def test_official_dev_set_loads_and_gold_answers_score_100():
    from trainables.data.load import _load_squad_json

    dev = _load_squad_json({"validation": str(SHARED_SQUAD)})["validation"]
    assert len(dev) == 10570  # SOURCE.md: 10,570 questions
    golds = [a["text"] for a in dev["answers"]]
    assert squad_scores([(g, g[0]) for g in golds]) == {"exact_match": 100.0, "f1": 100.0}
    assert squad_scores([(g, "") for g in golds]) == {"exact_match": 0.0, "f1": 0.0}


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def _example(answer_at_end: bool = True):
    filler = " ".join(f"Sentence number {i} says nothing at all." for i in range(30))
    fact = "The bridge was built in 1873."
    context = f"{filler} {fact}" if answer_at_end else f"{fact} {filler}"
    start = context.index("1873")
    return {"id": ["q1"], "question": ["When was the bridge built?"], "context": [context], "answers": [{"text": ["1873"], "answer_start": [start]}]}


def test_long_context_is_windowed_and_only_windows_holding_the_answer_point_at_it(tokenizer):
    ex = Dataset.from_dict(_example())
    feats = qa.windows(ex, tokenizer, max_length=64, stride=16)
    assert len(feats) > 3 and set(feats["example_index"]) == {0}
    context = ex["context"][0]
    pointing = []
    for f in range(len(feats)):
        s, e = feats["start_positions"][f], feats["end_positions"][f]
        offs = feats["offset_mapping"][f]
        if s == 0 and e == 0:
            continue
        pointing.append(f)
        assert context[offs[s][0]:offs[e][1]] == "1873"
    assert pointing and pointing[-1] == len(feats) - 1  # the answer is at the end of the context


def test_postprocess_picks_the_best_span_across_windows_and_abstains_only_in_v2(tokenizer):
    ex = _example()
    feats = qa.windows(Dataset.from_dict(ex), tokenizer, max_length=64, stride=16)
    starts, ends = [], []
    for f in range(len(feats)):
        n = len(feats["input_ids"][f])
        s_log, e_log = np.zeros(n), np.zeros(n)
        s, e = feats["start_positions"][f], feats["end_positions"][f]
        if s:
            s_log[s], e_log[e] = 5.0, 5.0
        starts.append(s_log)
        ends.append(e_log)
    assert qa.postprocess(ex, feats, starts, ends, allow_no_answer=False) == ["1873"]
    assert qa.postprocess(ex, feats, starts, ends, allow_no_answer=True) == ["1873"]
    starts[0][0], ends[0][0] = 8.0, 8.0  # one window abstaining is not enough: the null score is the
    assert qa.postprocess(ex, feats, starts, ends, allow_no_answer=True) == ["1873"]  # lowest over windows
    for s_log, e_log in zip(starts, ends):
        s_log[0], e_log[0] = 8.0, 8.0  # every window's no-answer span outscores the answer (16 > 10)
    assert qa.postprocess(ex, feats, starts, ends, allow_no_answer=True) == [""]
    assert qa.postprocess(ex, feats, starts, ends, allow_no_answer=False) == ["1873"]
