"""Classification as a task kind: data, batching and scoring for single-label, multi-label and
sentence-pair studies."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, SequentialSampler

from core.errors import StudyError
from trainables.kinds import Task

# Libraries a trial's Tune actor and Train controller need not load (they unpickle the task,
# hence this module): imported where used, in the driver and the workers.
if TYPE_CHECKING:
    from trainables.data.load import PreparedData



def check(task: Task, data: Any, training: Any) -> None:
    if task.needs_text_pair and not data.columns.text_pair:
        raise StudyError("data.columns.text_pair", f"task {task.name} needs a second text column", "set data.columns.text_pair")
    if task.multi_label and not (data.columns.labels or data.columns.label):
        raise StudyError("data.columns.labels", "multi-label data needs label columns", "set labels: [col, ...] or label: <column of lists>")


def head_kwargs(task: Task, label_names: list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {n: i for i, n in enumerate(label_names)},
        "problem_type": task.problem_type,
    }


def prepare(spec: Any, task: Task, tokenizer: Any, training: Any, seed: int) -> PreparedData:
    from trainables.data.load import prepare as prepare_data

    return prepare_data(spec, task, tokenizer, training.max_length, seed)


def floors(data: PreparedData, task: Task, seed: int) -> list[Any]:
    """Majority class and TF-IDF + logistic regression on the trials' own training rows."""
    from trainables.evaluation.floors import classification_floors

    assert data.raw is not None, "floors are fitted in the driver, on the prepared text splits"
    return classification_floors(data.raw, task.multi_label, task.needs_text_pair, len(data.label_names), seed)


def collator(tokenizer: Any, task: Task) -> Any:
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def train_split(data: PreparedData, hp: dict[str, Any], training: Any) -> Any:
    return data.splits["train"]


def length_order(loader: DataLoader) -> Optional[list[int]]:
    """The loader's rows shortest first (None where its rows are not tokenized sequences or it
    does not go through them in order). Batches of similar length pad less: evaluating 400 tweets
    in batches of 64 takes half the time (padding leaves every score unchanged)."""
    rows = loader.dataset
    if not isinstance(loader.sampler, SequentialSampler) or "input_ids" not in getattr(rows, "column_names", ()):
        return None
    lengths = [len(ids) for ids in rows["input_ids"]]
    return sorted(range(len(lengths)), key=lengths.__getitem__)


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray, float]:
    """Logits, labels and mean loss over ``loader``, in its order (computed shortest first)."""
    order = length_order(loader)
    if order is not None:
        # its own generator, as the given loader has: one without draws a seed from the global
        # RNG at each pass, which would shift a trial's dropout masks by its eval cadence
        loader = DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=order, collate_fn=loader.collate_fn,
                            generator=loader.generator or torch.Generator())
    model.eval()
    logits, labels, loss_sum, n = [], [], 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        loss_sum += float(out.loss) * len(batch["labels"])
        n += len(batch["labels"])
        logits.append(out.logits.float().cpu().numpy())
        labels.append(batch["labels"].cpu().numpy())
    model.train()
    all_logits, all_labels = np.concatenate(logits), np.concatenate(labels)
    if order is not None:  # back to the loader's order
        back = np.empty(len(order), dtype=np.int64)
        back[np.asarray(order)] = np.arange(len(order))
        all_logits, all_labels = all_logits[back], all_labels[back]
    return all_logits, all_labels, loss_sum / max(n, 1)


def evaluate(model: torch.nn.Module, loader: DataLoader, data: PreparedData, split: str, device: torch.device, task: Task, training: Any) -> tuple[dict[str, float], Any]:
    """Metrics over ``split`` and what ``write_files`` needs (logits, labels)."""
    logits, labels, loss = predict(model, loader, device)
    from trainables.evaluation.metrics import classification_metrics, per_class

    metrics = {**classification_metrics(logits, labels, task.multi_label), "eval_loss": loss}
    if not task.multi_label:  # per-class accuracy (= the class's recall), as IMDB/SST-2 reports give it
        for row in per_class(logits, labels, data.label_names, False):
            metrics[f"class_accuracy_{re.sub(r'[^A-Za-z0-9_.-]', '_', row['label'])}"] = row["recall"]
    return metrics, (logits, labels)


def write_files(folder: str, payload: Any, base_payload: Optional[Any], data: PreparedData, task: Task) -> None:
    logits, labels = payload
    base_logits = base_payload[0] if base_payload is not None else None
    from trainables.evaluation import eval_files

    eval_files.write(folder, logits, labels, data.label_names, task.multi_label, data.texts, base_logits)


def input_fields(task: Task) -> tuple[str, ...]:
    return ("text", "text_pair") if task.needs_text_pair else ("text",)


@torch.no_grad()
def answer(model: torch.nn.Module, tokenizer: Any, rows: list[dict[str, str]], task: Task, training: Any, batch_size: int = 32) -> list[dict[str, Any]]:
    """Per row: the predicted label(s) and every label's score (softmax, or sigmoid for
    multi-label, where each label scoring above 0.5 is predicted)."""
    config = model.config
    names = [config.id2label[i] for i in range(config.num_labels)]
    multi = config.problem_type == "multi_label_classification"
    device = next(model.parameters()).device
    out: list[dict[str, Any]] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        texts = [r["text"] for r in chunk]
        pairs = [r["text_pair"] for r in chunk] if task.needs_text_pair else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=training.max_length, padding=True, return_tensors="pt").to(device)
        for row in model(**enc).logits.float().cpu().numpy():
            if multi:
                scores = 1 / (1 + np.exp(-row))
                labels = [n for n, s in zip(names, scores) if s > 0.5]
            else:
                z = np.exp(row - row.max())
                scores = z / z.sum()
                labels = [names[int(row.argmax())]]
            out.append({"labels": labels, "scores": {n: round(float(s), 6) for n, s in zip(names, scores)}})
    return out
