"""The built-in task kinds and the tasks they offer, declared without importing them.

Each kind's functions live in their own module (``classification``, ``qa``, ``sft``), which
imports torch, datasets and pandas; a ``ModuleKind`` names that module and imports it where a
function is first called (a trial, the driver's data preparation). Declaring the kinds here
keeps a study's validation, and with it every one-line bad-input error, from paying for those
imports (~3 s of CPU).
"""

from __future__ import annotations

from trainables.kinds import ModuleKind, Task, register

CLASSIFICATION_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_micro", "recall_micro", "f1_micro", "eval_loss")
QA_METRICS = ("exact_match", "f1", "eval_loss")
# SQuAD v2's official script also scores the answerable and unanswerable questions apart.
QA_V2_METRICS = QA_METRICS + ("has_answer_exact_match", "has_answer_f1", "no_answer_exact_match")
SFT_METRICS = ("eval_loss", "perplexity", "bleu", "rouge1", "rouge2", "rougeL")
GENERATIONS = "generations.csv"  # the instruction kind's eval file: prompts, answers, references

# Text(s) -> label(s) with a fresh sequence-classification head.
CLASSIFICATION = ModuleKind("classification", "trainables.kinds.classification", "AutoModelForSequenceClassification", "SEQ_CLS",
                            fresh_head=True, eval_file="eval/predictions.csv")
register(
    CLASSIFICATION,
    Task("single_label", CLASSIFICATION, CLASSIFICATION_METRICS, "one label per text (SST-2, IMDB, emotion)", "single_label_classification"),
    Task("multi_label", CLASSIFICATION, CLASSIFICATION_METRICS + ("subset_accuracy",),
         "any number of labels per text (SemEval-2018 E-c); accuracy = Jaccard, subset_accuracy = exact match",
         "multi_label_classification", multi_label=True),
    Task("sentence_pair", CLASSIFICATION, CLASSIFICATION_METRICS, "one label per (text, text_pair) (SNLI, MNLI)", "single_label_classification", needs_text_pair=True),
)

# Question + context -> answer span, with a fresh start/end head.
QA = ModuleKind("qa", "trainables.kinds.qa", "AutoModelForQuestionAnswering", "QUESTION_ANS", fresh_head=True, eval_file="eval/predictions.csv")
register(
    QA,
    Task("extractive_qa", QA, QA_METRICS, "answer = a span of the context (SQuAD v1.1); exact match and F1 as the official script defines them"),
    Task("extractive_qa_v2", QA, QA_V2_METRICS,
         "SQuAD v2.0: some questions have no answer in the context; the model may abstain (the [CLS] span)",
         allow_no_answer=True),
)

# Conversations -> the assistant's answers, on the pretrained causal-LM head.
SFT = ModuleKind("sft", "trainables.kinds.sft", "AutoModelForCausalLM", "CAUSAL_LM", fresh_head=False, eval_file=f"eval/{GENERATIONS}",
                 no_floor_because="instruction tuning: the floor is the pretrained model answering zero-shot (each trial's before_* metrics)")
register(
    SFT,
    Task("instruction", SFT, SFT_METRICS, "chat/instruction tuning on conversations (FineTome, ShareGPT, OpenAI messages); loss on answer tokens only"),
)
