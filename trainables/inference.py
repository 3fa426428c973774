"""Load an exported model (``sweeps.export``) and predict, with plain transformers + peft.

An export folder holds either the adapter (+ trained head) with the fine-tuned model's
config and tokenizer, or the adapter merged into the base weights. ``sweep_export.json``
says which, the base model, and the 4-bit settings a QLoRA adapter was trained under, so the
adapter is applied to the same base it learned on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer, BitsAndBytesConfig

EXPORT_INFO = "sweep_export.json"


def quiet() -> None:
    """No per-file progress bars, load reports (an adapter's head is 'missing' from the base
    checkpoint by design) or transformers deprecation notices; for commands and workers."""
    import warnings

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def read_info(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / EXPORT_INFO).read_text())


def load(folder: str | Path, device: Optional[torch.device] = None) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """(model in eval mode, tokenizer, export info)."""
    from peft import PeftModel

    from trainables.kinds import TASKS
    from trainables.model import keep_4bit_layout_trainable, load_base

    folder = Path(folder)
    info = read_info(folder)
    task = TASKS[info["task"]]
    device = device or torch.device("cpu")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if info["merged"]:
        model = task.auto_model.from_pretrained(folder).to(device)
    else:
        kwargs: dict[str, Any] = {"config": AutoConfig.from_pretrained(folder)}
        if info.get("quantization"):
            kwargs["quantization_config"] = BitsAndBytesConfig.from_dict(info["quantization"])
            kwargs["device_map"] = {"": device}
        base = load_base(task, info["base_model"], kwargs)
        if info.get("quantization"):
            # the layout the adapter was trained and scored on: same numbers as the sweep measured
            keep_4bit_layout_trainable(base)
        else:
            base.to(device)
        model = PeftModel.from_pretrained(base, folder)
    model.eval()
    return model, tokenizer, info


@torch.no_grad()
def predict(model: torch.nn.Module, tokenizer: Any, texts: list[str], pairs: Optional[list[str]] = None, max_length: int = 512, batch_size: int = 32) -> list[dict[str, Any]]:
    """Per text: the predicted label(s) and every label's score (softmax, or sigmoid for
    multi-label, where each label with score > 0.5 is predicted)."""
    config = model.config
    names = [config.id2label[i] for i in range(config.num_labels)]
    multi = config.problem_type == "multi_label_classification"
    device = next(model.parameters()).device
    out: list[dict[str, Any]] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        pair = pairs[start:start + batch_size] if pairs else None
        enc = tokenizer(chunk, pair, truncation=True, max_length=max_length, padding=True, return_tensors="pt").to(device)
        logits = model(**enc).logits.float().cpu().numpy()
        for i, row in enumerate(logits):
            if multi:
                scores = 1 / (1 + np.exp(-row))
                labels = [n for n, s in zip(names, scores) if s > 0.5]
            else:
                z = np.exp(row - row.max())
                scores = z / z.sum()
                labels = [names[int(row.argmax())]]
            out.append({"text": chunk[i], "labels": labels, "scores": {n: round(float(s), 6) for n, s in zip(names, scores)}})
    return out
