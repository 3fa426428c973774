"""What each checkpoint says about its validation predictions, as small CSV files.

Written by the trial (rank 0) next to the adapter, so the checkpoint a trial keeps (its best
eval point) carries the predictions that scored it. The driver logs them to the trial's MLflow
run; the study report builds its confusion matrix and error analysis from them.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import pandas as pd

from trainables.evaluation.metrics import confusion, per_class, predicted

FOLDER = "eval"
PREDICTIONS = "predictions.csv"
PER_CLASS = "per_class.csv"
CONFUSION = "confusion_matrix.csv"
LABEL_SEPARATOR = "|"  # multi-label sets are written as "anger|joy"; "" is the empty set
MULTI_LABEL_COUNTS = ["TN", "FP", "FN", "TP"]


def label_text(row: np.ndarray, names: list[str], multi_label: bool) -> str:
    if multi_label:
        return LABEL_SEPARATOR.join(n for n, on in zip(names, row) if on)
    return names[int(row)]


def write(
    folder: str,
    logits: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    multi_label: bool,
    texts: dict[str, list[str]],
    base_logits: Optional[np.ndarray] = None,
) -> None:
    """``folder/eval/``: one row per validation example (text, gold, predicted, base model's
    prediction), per-class precision/recall/F1, and the confusion matrix."""
    out = os.path.join(folder, FOLDER)
    os.makedirs(out, exist_ok=True)
    rows: dict[str, list] = {k: v for k, v in texts.items() if len(v) == len(labels)}
    rows["label"] = [label_text(r, names, multi_label) for r in labels.astype(int)]
    rows["prediction"] = [label_text(r, names, multi_label) for r in predicted(logits, multi_label)]
    if not multi_label:
        z = logits - logits.max(axis=-1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
        rows["confidence"] = probs.max(axis=-1).round(4).tolist()
    if base_logits is not None:
        rows["before_prediction"] = [label_text(r, names, multi_label) for r in predicted(base_logits, multi_label)]
    pd.DataFrame(rows).to_csv(os.path.join(out, PREDICTIONS), index=False)
    pd.DataFrame(per_class(logits, labels, names, multi_label)).to_csv(os.path.join(out, PER_CLASS), index=False)
    matrix = confusion(logits, labels, len(names), multi_label)
    columns = MULTI_LABEL_COUNTS if multi_label else names
    pd.DataFrame(matrix, index=pd.Index(names, name="true"), columns=columns).to_csv(os.path.join(out, CONFUSION))
