"""Task registry: what each task kind needs from the data and which metrics it produces.

QA and instruction tuning will be new entries here (with their own metrics and heads).
"""

from __future__ import annotations

import dataclasses

CLASSIFICATION_METRICS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_micro",
    "recall_micro",
    "f1_micro",
    "eval_loss",
)


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    problem_type: str  # transformers' config.problem_type
    needs_text_pair: bool
    multi_label: bool
    metrics: tuple[str, ...]
    description: str


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "single_label", "single_label_classification", False, False, CLASSIFICATION_METRICS,
            "one label per text (SST-2, IMDB, emotion)",
        ),
        Task(
            "multi_label", "multi_label_classification", False, True,
            CLASSIFICATION_METRICS + ("subset_accuracy",),
            "any number of labels per text (SemEval-2018 E-c); accuracy = Jaccard, subset_accuracy = exact match",
        ),
        Task(
            "sentence_pair", "single_label_classification", True, False, CLASSIFICATION_METRICS,
            "one label per (text, text_pair) (SNLI, MNLI)",
        ),
    )
}
