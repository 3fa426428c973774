"""Load an exported model (``sweeps.export``) and answer with it, with plain transformers + peft.

An export folder holds either the adapter (+ trained head) with the fine-tuned model's
config and tokenizer, or the adapter merged into the base weights. ``sweep_export.json``
says which, the base model, and the 4-bit settings a QLoRA adapter was trained under, so the
adapter is applied to the same base it learned on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

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
    """(model in eval mode, tokenizer, export info), on ``device`` (default: the GPU where
    there is one, else the CPU)."""
    from peft import PeftModel

    from trainables.kinds import TASKS
    from trainables.model.load import heads_in_fp32, keep_4bit_layout_trainable, load_base

    folder = Path(folder)
    info = read_info(folder)
    task = TASKS[info["task"]]
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if info["merged"]:
        # through load_base: a mean-pooled head (its config says so) gets the class that pools
        model = load_base(task, str(folder), {"config": AutoConfig.from_pretrained(folder)}).to(device)
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
    heads_in_fp32(model)  # the head as it trained and was scored: fp32, also over a bf16 base
    model.eval()
    return model, tokenizer, info


def training_of(info: dict[str, Any]) -> Any:
    """The study's training settings an export was trained under (max length, QA windows,
    answer length): the same ones its answers are computed with. Exports written before
    ``training`` was recorded get the defaults and their ``max_length``."""
    from core.schema import parse
    from core.specs import TrainingSpec

    return parse(TrainingSpec, info.get("training") or {"max_length": info["max_length"]}, "training")


def answer(model: torch.nn.Module, tokenizer: Any, info: dict[str, Any], rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The exported model's answers to ``rows`` (fields: its task kind's ``input_fields``)."""
    from trainables.kinds import TASKS

    task = TASKS[info["task"]]
    return task.kind.answer(model, tokenizer, rows, task, training_of(info))
