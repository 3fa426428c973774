"""Error analysis of the best trial, as the seed reports did it by hand: which validation
examples the fine-tuned model gets wrong, and how it compares with the same model before
training (both right, base right / tuned wrong, base wrong / tuned right, both wrong).

Input: the trial's ``eval/predictions.csv`` (text, gold label, prediction, base prediction).
A multi-label example is right when its whole label set is. For extractive QA the file holds
question, reference answers and predicted span: an answer is right on an exact match
(official SQuAD normalisation).
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from sweeps.reporting.leaderboard import markdown

GROUPS = ("both right", "right before training, wrong tuned", "wrong before training, right tuned", "both wrong")


def with_groups(pred: pd.DataFrame) -> pd.DataFrame:
    """``pred`` plus ``correct`` and (when base predictions exist) ``group`` columns."""
    out = pred.copy()
    for col in ("label", "answers", "prediction", "before_prediction"):
        if col in out:
            out[col] = out[col].fillna("").astype(str)
    if "exact_match" in out:  # extractive QA
        from trainables.evaluation.squad_metrics import question_scores

        golds = [a.split(" | ") if a else [] for a in out["answers"]]
        out["correct"] = out["exact_match"].astype(int) == 1
        base_ok = [question_scores(g, p)[0] == 1 for g, p in zip(golds, out.get("before_prediction", out["prediction"]))]
    else:
        out["correct"] = out["label"] == out["prediction"]
        base_ok = out["label"] == out["before_prediction"] if "before_prediction" in out else None
    if "before_prediction" in out:
        out["group"] = [
            GROUPS[0] if b and t else GROUPS[1] if b else GROUPS[2] if t else GROUPS[3]
            for b, t in zip(base_ok, out["correct"])
        ]
    return out


def group_counts(grouped: pd.DataFrame) -> pd.DataFrame:
    if "group" not in grouped:
        return pd.DataFrame(columns=["group", "count", "share"])
    counts = grouped["group"].value_counts()
    n = max(len(grouped), 1)
    return pd.DataFrame([{"group": g, "count": int(counts.get(g, 0)), "share": counts.get(g, 0) / n} for g in GROUPS])


def confused_pairs(grouped: pd.DataFrame, top: int = 5) -> pd.DataFrame:
    if "label" not in grouped:  # QA: answers are free text, not classes
        return pd.DataFrame()
    wrong = grouped[~grouped["correct"]]
    pairs = Counter(zip(wrong["label"], wrong["prediction"]))
    return pd.DataFrame([{"true": t or "(none)", "predicted": p or "(none)", "count": c} for (t, p), c in pairs.most_common(top)])


def _samples(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    cols = [c for c in ("text", "text_pair", "question", "label", "answers", "prediction", "before_prediction", "confidence", "f1") if c in frame]
    shown = frame[cols].head(n).copy()
    for c in ("text", "text_pair", "question"):
        if c in shown:
            shown[c] = shown[c].astype(str).str.slice(0, 160)
    return shown


def report_markdown(grouped: pd.DataFrame, samples: int = 5) -> str:
    n, wrong = len(grouped), int((~grouped["correct"]).sum())
    parts = [f"Validation examples: {n}; the fine-tuned model gets {wrong} wrong ({wrong / max(n, 1):.1%})."]
    if "group" in grouped:
        parts += ["", "### Before training vs fine-tuned", "", markdown(group_counts(grouped))]
    pairs = confused_pairs(grouped)
    if len(pairs):
        parts += ["", "### Most confused (true -> predicted)", "", markdown(pairs)]
    wrong_rows = grouped[~grouped["correct"]]
    if "confidence" in wrong_rows:
        wrong_rows = wrong_rows.sort_values("confidence", ascending=False)  # confident mistakes first
    parts += ["", f"### Wrong predictions (first {min(samples * 2, len(wrong_rows))} of {len(wrong_rows)})", "", markdown(_samples(wrong_rows, samples * 2))]
    if "group" in grouped:
        for g in GROUPS:
            rows = grouped[grouped["group"] == g]
            parts += ["", f"### {g}: {len(rows)} (samples)", "", markdown(_samples(rows, samples)) if len(rows) else "none"]
    return "\n".join(parts) + "\n"
