"""A trial's peak GPU memory, estimated before it runs: what packing trials onto a GPU needs.

Ray's fractional GPUs share a GPU's compute and never enforce memory, so how many trials may
share one GPU has to come from an estimate made before any of them starts. The model here is
the usual decomposition (weights + trainable state + activations + logits), read off the model's
config without loading a weight (``accelerate.init_empty_weights``), with per-token activation
constants calibrated on peaks measured on an H100 (``bench/results/gpu_check_h100.json``: Llama-3.2-1B
LoRA/QLoRA/full, QA and instruction, Mistral-7B QLoRA with and without gradient checkpointing),
then a safety factor and the CUDA context on top. It is meant to err high: a trial that still
runs out of memory is retried with a larger share (``trainables.training.trial``), never fails the study.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

GIB = 2**30
# Bytes per token per transformer layer kept for the backward pass, per unit of hidden size
# (``per_hidden``) and of MLP width (``per_intermediate``): adapters on 16-bit weights, and
# 4-bit weights (QLoRA: prepare_model_for_kbit_training keeps norms and embeddings in fp32 and
# the adapter path computes in fp32). Fitted on the H100 peaks named above.
ACTIVATION_BYTES = {"16bit": (20.5, 10.0), "4bit": (28.5, 14.0)}
CHECKPOINTED_BYTES_PER_HIDDEN = 16.5  # per token per layer with gradient checkpointing (+ one layer in full)
LOGIT_BYTES = 13.0  # per token per vocabulary entry (causal LM loss: bf16 logits, fp32 upcast, gradient)
NF4_BYTES = 0.53  # per 4-bit weight, quantization constants included
TRAINABLE_BYTES = 16.0  # fp32 adapter weight + gradient + two AdamW moments
SAFETY = 1.15  # on everything above: allocator fragmentation, transient buffers
CONTEXT_GIB = 1.0  # CUDA context, cuBLAS workspace: outside torch's allocator statistics


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model, read from its config."""

    params: int  # all parameters, head included
    block_linear_params: int  # weights of the linear layers inside the blocks (what 4-bit quantizes)
    block_linear_dims: int  # sum of (in + out) over those layers: LoRA adds rank x this
    hidden: int
    intermediate: int
    layers: int
    vocab: int
    dtype_bytes: int  # the checkpoint's weight dtype (what from_pretrained loads without a dtype)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """GiB per component; ``total_gib`` is what one trial's worker may take on its GPU."""

    weights_gib: float
    trainable_gib: float
    activations_gib: float
    logits_gib: float

    @property
    def total_gib(self) -> float:
        return CONTEXT_GIB + SAFETY * (self.weights_gib + self.trainable_gib + self.activations_gib + self.logits_gib)

    def describe(self) -> str:
        return (f"{self.total_gib:.1f} GiB (weights {self.weights_gib:.1f}, trainable state {self.trainable_gib:.1f}, "
                f"activations {self.activations_gib:.1f}, logits {self.logits_gib:.1f}, x{SAFETY} + {CONTEXT_GIB:g} context)")


def shape_of(config: Any, auto_model: Any) -> ModelShape:
    """Count a model's parameters from its config, on the meta device (no weights, no memory)."""
    import torch
    from accelerate import init_empty_weights

    from trainables.model.methods import HEAD_MODULES

    with init_empty_weights():
        model = auto_model.from_config(config)
    skip = (*HEAD_MODULES, "lm_head")
    linear = dims = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(part in skip for part in name.split(".")):
            linear += module.in_features * module.out_features
            dims += module.in_features + module.out_features
    text = getattr(config, "get_text_config", lambda: config)()
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "d_model", 0) or getattr(text, "dim", 0))
    dtype = getattr(text, "dtype", None) or getattr(text, "torch_dtype", None)
    dtype_bytes = 2 if str(dtype).replace("torch.", "") in ("bfloat16", "float16") else 4
    return ModelShape(
        params=sum(p.numel() for p in model.parameters()),
        block_linear_params=linear,
        block_linear_dims=dims,
        hidden=hidden,
        intermediate=int(getattr(text, "intermediate_size", 0) or getattr(text, "hidden_dim", 0) or getattr(text, "ffn_dim", 0) or 4 * hidden),
        layers=int(getattr(text, "num_hidden_layers", 0) or getattr(text, "n_layers", 0) or getattr(text, "num_layers", 0)),
        vocab=int(getattr(text, "vocab_size", 0)),
        dtype_bytes=dtype_bytes,
    )


def estimate(shape: ModelShape, method: str, *, batch: int, seq_len: int, lora_r: int = 16,
             causal_lm: bool = False, gradient_checkpointing: bool = False, base_bytes: int | None = None) -> MemoryEstimate:
    """Peak GPU memory of one worker training ``shape`` with ``method`` on ``batch`` x ``seq_len``
    tokens per micro-batch. LoRA adapters are counted on every linear layer (the most a
    ``target_modules`` preset can put there), so narrower presets only make it safer.
    ``base_bytes``: bytes per frozen weight where ``training.base_dtype`` fixes it (None: the
    checkpoint's dtype, what an unquantized base loads in otherwise)."""
    from trainables.model.methods import METHODS

    spec = METHODS[method]
    if spec.quantized:
        rest = shape.params - shape.block_linear_params
        weights = shape.block_linear_params * NF4_BYTES + rest * 4  # norms, embeddings, head: fp32
        family = "4bit"
    else:
        dtype_bytes = shape.dtype_bytes if base_bytes is None or spec.trains == "all" else base_bytes
        weights = shape.params * dtype_bytes
        family = "16bit" if dtype_bytes == 2 else "4bit"  # fp32 activations cost like the 4-bit path's
    if spec.trains == "all":
        trainable = shape.params * 3 * shape.dtype_bytes  # gradient + two AdamW moments in the weights' dtype
    elif "lora_r" in spec.hyperparams:  # a low-rank adapter on every targeted linear layer
        trainable = lora_r * shape.block_linear_dims * TRAINABLE_BYTES
    else:  # IA3 vectors, a head: small; counted as if one adapter vector per linear output
        trainable = shape.block_linear_dims * TRAINABLE_BYTES
    tokens = batch * seq_len
    per_hidden, per_intermediate = ACTIVATION_BYTES[family]
    one_layer = tokens * (per_hidden * shape.hidden + per_intermediate * shape.intermediate)
    if gradient_checkpointing:
        activations = tokens * shape.layers * CHECKPOINTED_BYTES_PER_HIDDEN * shape.hidden + one_layer
    else:
        activations = shape.layers * one_layer
    logits = tokens * shape.vocab * LOGIT_BYTES if causal_lm else 0.0
    return MemoryEstimate(weights / GIB, trainable / GIB, activations / GIB, logits / GIB)


def trials_per_gpu(estimate_gib: float, gpu_gib: float, headroom: float, most: int) -> int:
    """How many trials of ``estimate_gib`` fit one GPU of ``gpu_gib`` keeping ``headroom`` (a
    fraction) free, at most ``most``; 0 when not even one fits."""
    usable = gpu_gib * (1.0 - headroom)
    return max(0, min(most, math.floor(usable / estimate_gib + 1e-9)))


def share(per_gpu: int) -> float:
    """The Ray GPU fraction that packs ``per_gpu`` trials on one GPU (Ray resolves 1e-4)."""
    return 1.0 if per_gpu <= 1 else math.floor(10_000 / per_gpu) / 10_000


def fallback_share(current: float) -> float:
    """After an out-of-memory: the share that halves the trials on that GPU (at most a whole GPU)."""
    return min(1.0, share(max(1, math.floor(1.0 / current + 1e-9) // 2)))
