"""Classification metrics computed offline with scikit-learn.

``evaluate.load("accuracy")`` fetches its script from the hub, so it cannot run offline;
scikit-learn computes the same numbers locally.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    jaccard_score,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, multi_label: bool) -> dict[str, float]:
    """Accuracy, precision/recall/F1 (macro and micro); multi-label adds subset accuracy.

    Multi-label predictions threshold sigmoid(logit) at 0.5. Its ``accuracy`` is the
    sample-averaged Jaccard index (SemEval-2018 E-c's official "accuracy"), and
    ``subset_accuracy`` the share of texts whose whole label set is right.
    """
    preds, truth = predicted(logits, multi_label), labels.astype(int)  # multi-label: sigmoid(x) > 0.5 <=> x > 0
    if multi_label:
        out = {
            "accuracy": float(jaccard_score(truth, preds, average="samples", zero_division=1.0)),
            "subset_accuracy": float(accuracy_score(truth, preds)),
        }
    else:
        out = {"accuracy": float(accuracy_score(truth, preds))}
    # Macro-average over every class the head has, not only those seen in this batch of
    # predictions: a model that never predicts a class must pay for it.
    classes = list(range(logits.shape[-1])) if not multi_label else None
    for avg in ("macro", "micro"):
        p, r, f, _ = precision_recall_fscore_support(
            truth, preds, labels=classes, average=avg, zero_division=0.0
        )
        out[f"precision_{avg}"] = float(p)
        out[f"recall_{avg}"] = float(r)
        out[f"f1_{avg}"] = float(f)
    return out


def predicted(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Class ids (single-label) or a 0/1 matrix (multi-label, sigmoid > 0.5)."""
    return (logits > 0).astype(int) if multi_label else logits.argmax(axis=-1)


def per_class(logits: np.ndarray, labels: np.ndarray, names: list[str], multi_label: bool) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support of each class: where a macro score comes from."""
    p, r, f, s = precision_recall_fscore_support(
        labels.astype(int), predicted(logits, multi_label), labels=None if multi_label else list(range(len(names))),
        average=None, zero_division=0.0,
    )
    return [
        {"label": name, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(names)
    ]


def confusion(logits: np.ndarray, labels: np.ndarray, n_classes: int, multi_label: bool) -> np.ndarray:
    """Single-label: n x n counts (row = true class, column = predicted). Multi-label: one row per
    label with its [TN, FP, FN, TP] counts."""
    preds, truth = predicted(logits, multi_label), labels.astype(int)
    if multi_label:
        return multilabel_confusion_matrix(truth, preds).reshape(-1, 4)
    return confusion_matrix(truth, preds, labels=list(range(n_classes)))
