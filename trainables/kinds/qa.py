"""Extractive question answering (SQuAD v1.1 / v2.0) as a task kind.

Long contexts are cut into overlapping windows (``training.doc_stride`` tokens of overlap), each
window trained to point at the answer span, or at the first token (the "no answer" span) when
the answer is not inside it. Scoring maps each example's best span over its windows back to
context characters (``postprocess``) and applies the official EM/F1 (``squad_metrics``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pandas as pd
import torch
from datasets import Dataset, DatasetDict
from torch.utils.data import DataLoader

from core.errors import StudyError
from trainables.kinds import Task
from trainables.evaluation.squad_metrics import question_scores, squad_scores

if TYPE_CHECKING:
    from trainables.data.load import PreparedData

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions")
PREDICTIONS = "predictions.csv"


def load_examples(spec: Any, seed: int) -> DatasetDict:
    """Splits with standard columns: id, question, context, answers {text, answer_start}."""
    cols = spec.columns
    from trainables.data import load as data_mod

    ds = data_mod.load_raw(spec, seed)
    needed = {"question": cols.question, "context": cols.context, "answers": cols.answers}
    data_mod.require_columns(ds, needed, optional_in_test=("answers",))
    out = DatasetDict()
    for split, d in ds.items():
        ids = [str(i) for i in d[cols.id]] if cols.id in d.column_names else [f"{split}-{i}" for i in range(len(d))]
        answers = d[cols.answers] if cols.answers in d.column_names else [{"text": [], "answer_start": []}] * len(d)
        out[split] = Dataset.from_dict({"id": ids, "question": [str(q).strip() for q in d[cols.question]], "context": list(d[cols.context]), "answers": answers})
    return data_mod.split_and_cap(out, spec, seed)


def windows(examples: Dataset, tokenizer: Any, max_length: int, stride: int) -> Dataset:
    """Tokenize (question, context) into windows with start/end token labels, each window's
    ``example_index`` and its context character offsets (-1 outside the context)."""
    if not getattr(tokenizer, "is_fast", False):
        raise StudyError("model", "extractive QA needs a fast tokenizer (character offsets)", "use a model whose tokenizer.json is available")
    enc = tokenizer(
        list(examples["question"]), list(examples["context"]), truncation="only_second", max_length=max_length, stride=stride,
        return_overflowing_tokens=True, return_offsets_mapping=True,
    )
    answer_list = list(examples["answers"])
    starts, ends, offsets = [], [], []
    for i, offs in enumerate(enc["offset_mapping"]):
        seq = enc.sequence_ids(i)
        ctx_offs = [tuple(o) if s == 1 else (-1, -1) for o, s in zip(offs, seq)]
        offsets.append(ctx_offs)
        answers = answer_list[enc["overflow_to_sample_mapping"][i]]
        start = end = 0  # the "no answer" span: the window's first token
        if answers["text"]:
            a0 = answers["answer_start"][0]
            a1 = a0 + len(answers["text"][0])
            inside = [t for t, (c0, c1) in enumerate(ctx_offs) if c0 >= 0]
            if inside and ctx_offs[inside[0]][0] <= a0 and ctx_offs[inside[-1]][1] >= a1:
                start = next(t for t in inside if ctx_offs[t][1] > a0)
                end = next(t for t in reversed(inside) if ctx_offs[t][0] < a1)
        starts.append(start)
        ends.append(end)
    keep = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    return Dataset.from_dict({**keep, "start_positions": starts, "end_positions": ends, "offset_mapping": offsets, "example_index": list(enc["overflow_to_sample_mapping"])})




def check(task: Task, data: Any, training: Any) -> None:
    if training.doc_stride >= training.max_length // 2:
        raise StudyError("training.doc_stride", f"{training.doc_stride} overlaps too much for max_length {training.max_length}", "use a stride below max_length / 2 (e.g. 128 for 384)")


def head_kwargs(task: Task, label_names: list[str]) -> dict[str, Any]:
    return {}


def prepare(spec: Any, task: Task, tokenizer: Any, training: Any, seed: int) -> PreparedData:
    import datasets

    datasets.disable_progress_bars()
    tokenizer.padding_side = "right"  # span labels are token positions from the left
    examples = load_examples(spec, seed)
    splits = DatasetDict({k: windows(d, tokenizer, training.max_length, training.doc_stride) for k, d in examples.items()})
    splits["train"] = splits["train"].remove_columns(["offset_mapping", "example_index"])
    extra = {split: {c: list(d[c]) for c in ("id", "question", "context", "answers")} for split, d in examples.items() if split != "train"}
    from trainables.data.load import PreparedData

    return PreparedData(splits=splits, label_names=[], tokenizer=tokenizer, extra=extra)


@dataclasses.dataclass
class _Collator:
    inner: Any

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return self.inner([{k: v for k, v in f.items() if k in MODEL_INPUTS} for f in features])


def collator(tokenizer: Any, task: Task) -> Any:
    from transformers import DataCollatorWithPadding

    return _Collator(DataCollatorWithPadding(tokenizer))


def train_split(data: PreparedData, hp: dict[str, Any], training: Any) -> Any:
    return data.splits["train"]


def postprocess(examples: dict[str, list], features: Dataset, start_logits: list[np.ndarray], end_logits: list[np.ndarray], allow_no_answer: bool, n_best: int = 20, max_answer_length: int = 30) -> list[str]:
    """Each example's answer text (``best_spans``)."""
    return [span["answer"] for span in best_spans(examples, features, start_logits, end_logits, allow_no_answer, n_best, max_answer_length)]


def _probs(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


def best_spans(examples: dict[str, list], features: Dataset, start_logits: list[np.ndarray], end_logits: list[np.ndarray], allow_no_answer: bool, n_best: int = 20, max_answer_length: int = 30) -> list[dict[str, Any]]:
    """Each example's answer: the best-scoring valid span (start <= end, inside the context,
    at most ``max_answer_length`` tokens) over all its windows; with ``allow_no_answer``, ""
    when the no-answer span (first token) outscores it in every window (SQuAD v2; the null
    score is the lowest over windows, as in transformers' run_qa example). ``score``: the
    answer's probability in its window (start x end softmax), ``start``: its first character
    in the context (-1 for no answer)."""
    by_example: dict[int, list[int]] = {}
    for f, e in enumerate(list(features["example_index"])):
        by_example.setdefault(int(e), []).append(f)
    offsets_all = list(features["offset_mapping"])
    spans = []
    for e, context in enumerate(examples["context"]):
        best: dict[str, Any] = {"answer": "", "score": 0.0, "start": -1}
        best_score, null_score, null_prob = -np.inf, np.inf, 0.0
        for f in by_example.get(e, []):
            s_log, e_log, offs = start_logits[f], end_logits[f], offsets_all[f]
            s_prob, e_prob = _probs(s_log), _probs(e_log)
            if float(s_log[0] + e_log[0]) < null_score:
                null_score, null_prob = float(s_log[0] + e_log[0]), float(s_prob[0] * e_prob[0])
            for s in np.argsort(s_log)[::-1][:n_best]:
                for t in np.argsort(e_log)[::-1][:n_best]:
                    if s >= len(offs) or t >= len(offs) or offs[s][0] < 0 or offs[t][0] < 0 or t < s or t - s + 1 > max_answer_length:
                        continue
                    score = float(s_log[s] + e_log[t])
                    if score > best_score:
                        best_score = score
                        best = {"answer": context[offs[s][0]:offs[t][1]], "score": float(s_prob[s] * e_prob[t]), "start": int(offs[s][0])}
        if allow_no_answer and null_score > best_score:
            best = {"answer": "", "score": null_prob, "start": -1}
        spans.append(best)
    return spans


@torch.no_grad()
def _logits(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    model.eval()
    starts, ends, loss_sum, n = [], [], 0.0, 0
    for batch in loader:
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        rows = len(batch["input_ids"])
        loss_sum += float(out.loss) * rows
        n += rows
        for i, length in enumerate(lengths):  # right padding: a window's tokens come first
            starts.append(out.start_logits[i, :length].float().cpu().numpy())
            ends.append(out.end_logits[i, :length].float().cpu().numpy())
    model.train()
    return starts, ends, loss_sum / max(n, 1)


def floors(data: PreparedData, task: Task, seed: int) -> list[Any]:
    """The best-overlap context sentence as the answer (no training)."""
    from trainables.evaluation.floors import qa_floors

    return qa_floors(data.extra, task.allow_no_answer)


def evaluate(model: torch.nn.Module, loader: DataLoader, data: PreparedData, split: str, device: torch.device, task: Task, training: Any) -> tuple[dict[str, float], Any]:
    starts, ends, loss = _logits(model, loader, device)
    examples = data.extra[split]
    preds = postprocess(examples, data.splits[split], starts, ends, task.allow_no_answer, max_answer_length=training.max_answer_length)
    golds = [a["text"] for a in examples["answers"]]
    metrics = squad_scores(zip(golds, preds), version_2=task.allow_no_answer)
    return {**metrics, "eval_loss": loss}, preds


def write_files(folder: str, payload: Any, base_payload: Optional[Any], data: PreparedData, task: Task) -> None:
    """``eval/predictions.csv``: one row per validation question (id, question, context, reference
    answers, prediction, its EM/F1, the model-before-training's prediction)."""
    import os

    ex = data.extra["validation"]
    golds = [a["text"] for a in ex["answers"]]
    scores = [question_scores(g, p) for g, p in zip(golds, payload)]
    rows: dict[str, list] = {
        "id": ex["id"], "question": ex["question"], "context": ex["context"], "answers": [" | ".join(g) for g in golds], "prediction": payload,
        "exact_match": [e for e, _ in scores], "f1": [round(f, 4) for _, f in scores],
    }
    if base_payload is not None:
        rows["before_prediction"] = base_payload
    os.makedirs(os.path.join(folder, "eval"), exist_ok=True)
    pd.DataFrame(rows).to_csv(os.path.join(folder, "eval", PREDICTIONS), index=False)


def input_fields(task: Task) -> tuple[str, ...]:
    return ("question", "context")


def answer(model: torch.nn.Module, tokenizer: Any, rows: list[dict[str, str]], task: Task, training: Any, batch_size: int = 16) -> list[dict[str, Any]]:
    """Per (question, context): the answer span as evaluation finds it (same windows, same
    ``best_spans``), its probability, its first character in the context, and ``no_answer``
    (SQuAD v2 studies may abstain)."""
    examples = {"question": [r["question"].strip() for r in rows], "context": [r["context"] for r in rows], "answers": [{"text": [], "answer_start": []}] * len(rows)}
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    training_mode = model.training
    try:
        features = windows(Dataset.from_dict(examples), tokenizer, training.max_length, training.doc_stride)
        inputs = features.remove_columns(["offset_mapping", "example_index"])
        loader = DataLoader(inputs, batch_size=batch_size, collate_fn=collator(tokenizer, task))
        starts, ends, _ = _logits(model, loader, next(model.parameters()).device)
    finally:
        tokenizer.padding_side = side
        model.train(training_mode)  # _logits leaves the model training, as the trial loop wants
    spans = best_spans(examples, features, starts, ends, task.allow_no_answer, max_answer_length=training.max_answer_length)
    return [{**span, "score": round(span["score"], 6), "no_answer": span["answer"] == ""} for span in spans]
