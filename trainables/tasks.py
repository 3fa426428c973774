"""Task registry: what each task kind needs from the data, which model head it trains and
which metrics it produces.

Three kinds share one trial loop (``trainables.loop``); each kind's own module prepares its
data and scores a model: ``trainables.data`` + ``trainables.metrics`` (classification),
``trainables.qa`` (extractive QA), ``trainables.sft`` (instruction tuning).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Optional

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
QA_METRICS = ("exact_match", "f1", "eval_loss")
# SQuAD v2's official script also scores the answerable and unanswerable questions apart.
QA_V2_METRICS = QA_METRICS + ("has_answer_exact_match", "has_answer_f1", "no_answer_exact_match")
SFT_METRICS = ("eval_loss", "perplexity", "bleu", "rouge1", "rouge2", "rougeL")


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "classification" | "qa" | "sft": which module prepares and scores it
    metrics: tuple[str, ...]
    description: str
    problem_type: Optional[str] = None  # transformers' config.problem_type (classification)
    needs_text_pair: bool = False
    multi_label: bool = False
    allow_no_answer: bool = False  # QA: SQuAD v2 (questions the context cannot answer)

    @property
    def auto_model(self) -> Any:
        """The transformers Auto class whose head this task trains."""
        import transformers

        name = {"classification": "AutoModelForSequenceClassification", "qa": "AutoModelForQuestionAnswering", "sft": "AutoModelForCausalLM"}[self.kind]
        return getattr(transformers, name)

    @property
    def peft_task_type(self) -> str:
        return {"classification": "SEQ_CLS", "qa": "QUESTION_ANS", "sft": "CAUSAL_LM"}[self.kind]

    @property
    def kind_module(self) -> Any:
        """The module with this kind's ``prepare``, ``collator``, ``evaluate`` and ``write_files``."""
        return importlib.import_module({"classification": "trainables.classification", "qa": "trainables.qa", "sft": "trainables.sft"}[self.kind])


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("single_label", "classification", CLASSIFICATION_METRICS, "one label per text (SST-2, IMDB, emotion)", "single_label_classification"),
        Task(
            "multi_label", "classification", CLASSIFICATION_METRICS + ("subset_accuracy",),
            "any number of labels per text (SemEval-2018 E-c); accuracy = Jaccard, subset_accuracy = exact match",
            "multi_label_classification", multi_label=True,
        ),
        Task("sentence_pair", "classification", CLASSIFICATION_METRICS, "one label per (text, text_pair) (SNLI, MNLI)", "single_label_classification", needs_text_pair=True),
        Task("extractive_qa", "qa", QA_METRICS, "answer = a span of the context (SQuAD v1.1); exact match and F1 as the official script defines them"),
        Task(
            "extractive_qa_v2", "qa", QA_V2_METRICS,
            "SQuAD v2.0: some questions have no answer in the context; the model may abstain (the [CLS] span)",
            allow_no_answer=True,
        ),
        Task("instruction", "sft", SFT_METRICS, "chat/instruction tuning on conversations (FineTome, ShareGPT, OpenAI messages); loss on answer tokens only"),
    )
}
