"""Classification metrics computed offline with scikit-learn.

``evaluate.load("accuracy")`` fetches its script from the hub, so it cannot run offline;
scikit-learn computes the same numbers locally.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, jaccard_score, precision_recall_fscore_support


def classification_metrics(logits: np.ndarray, labels: np.ndarray, multi_label: bool) -> dict[str, float]:
    """Accuracy, precision/recall/F1 (macro and micro); multi-label adds subset accuracy.

    Multi-label predictions threshold sigmoid(logit) at 0.5. Its ``accuracy`` is the
    sample-averaged Jaccard index (SemEval-2018 E-c's official "accuracy"), and
    ``subset_accuracy`` the share of texts whose whole label set is right.
    """
    if multi_label:
        preds = (logits > 0).astype(int)  # sigmoid(x) > 0.5  <=>  x > 0
        truth = labels.astype(int)
        out = {
            "accuracy": float(jaccard_score(truth, preds, average="samples", zero_division=1.0)),
            "subset_accuracy": float(accuracy_score(truth, preds)),
        }
    else:
        preds = logits.argmax(axis=-1)
        truth = labels.astype(int)
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
