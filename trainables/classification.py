"""Classification as a task kind: data, batching and scoring for single-label, multi-label and
sentence-pair studies (what ``trainables.loop`` calls through ``Task.kind_module``)."""

from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from trainables import eval_files
from trainables.data import PreparedData
from trainables.data import prepare as prepare_data
from trainables.metrics import classification_metrics, per_class
from trainables.tasks import Task


def prepare(spec: Any, task: Task, tokenizer: Any, training: dict[str, Any], seed: int) -> PreparedData:
    return prepare_data(spec, task, tokenizer, training["max_length"], seed)


def floors(data: PreparedData, task: Task, seed: int) -> list[Any]:
    """Majority class and TF-IDF + logistic regression on the trials' own training rows."""
    from trainables.floors import classification_floors

    assert data.raw is not None, "floors are fitted in the driver, on the prepared text splits"
    return classification_floors(data.raw, task.multi_label, task.needs_text_pair, len(data.label_names), seed)


def collator(tokenizer: Any, task: Task) -> Any:
    return DataCollatorWithPadding(tokenizer)


def train_split(data: PreparedData, hp: dict[str, Any], training: dict[str, Any]) -> Any:
    return data.splits["train"]


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray, float]:
    """Logits, labels and mean loss over ``loader``, in its order."""
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
    return np.concatenate(logits), np.concatenate(labels), loss_sum / max(n, 1)


def evaluate(model: torch.nn.Module, loader: DataLoader, data: PreparedData, split: str, device: torch.device, task: Task, training: dict[str, Any]) -> tuple[dict[str, float], Any]:
    """Metrics over ``split`` and what ``write_files`` needs (logits, labels)."""
    logits, labels, loss = predict(model, loader, device)
    metrics = {**classification_metrics(logits, labels, task.multi_label), "eval_loss": loss}
    if not task.multi_label:  # per-class accuracy (= the class's recall), as IMDB/SST-2 reports give it
        for row in per_class(logits, labels, data.label_names, False):
            metrics[f"class_accuracy_{re.sub(r'[^A-Za-z0-9_.-]', '_', row['label'])}"] = row["recall"]
    return metrics, (logits, labels)


def write_files(folder: str, payload: Any, base_payload: Optional[Any], data: PreparedData, task: Task) -> None:
    logits, labels = payload
    base_logits = base_payload[0] if base_payload is not None else None
    eval_files.write(folder, logits, labels, data.label_names, task.multi_label, data.texts, base_logits)
