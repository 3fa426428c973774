"""Fine-tuning method registry, peft style: one small builder per method.

Adding DoRA or LoHa is one new ``register(Method(...))`` entry: the search spaces name
the hyperparameters, the trial looks the method up here, nothing else changes.
Two baselines sit beside the peft methods: ``full`` (every weight trains) and ``head``
(frozen base, only the task head trains), so a report can say what the adapter buys.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Optional

from core import hparams
from core.registry import Registry

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig

# peft and torch are imported by the builders, not here: a study is validated against this
# registry, and importing peft (which imports bitsandbytes and much of transformers) took ~4 s
# of the ~11 s a one-line bad-input error cost.

# Classification heads are freshly initialised: they must stay in full precision
# (bitsandbytes cannot quantize an uninitialised layer) and stay trainable.
HEAD_MODULES = ["classifier", "score", "pooler", "pre_classifier", "qa_outputs"]

# Architectures peft has no default targets for: (LoRA targets, IA3 targets, IA3 feed-forward).
DEFAULT_TARGETS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "distilbert": (["q_lin", "v_lin"], ["k_lin", "v_lin", "lin2"], ["lin2"]),
}


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    description: str
    # (hyperparameters, peft TaskType name, model type) -> peft config; None = no adapter
    peft_config: Optional[Callable[[dict[str, Any], str, str], PeftConfig]]
    quantization: Optional[Callable[[torch.device], Any]] = None  # -> transformers BitsAndBytesConfig
    trains: str = "adapter"  # "adapter" | "head" (only the task head) | "all" (full fine-tuning)
    # Only for task kinds that train a freshly initialised head (the ``head`` baseline).
    needs_fresh_head: bool = False
    # The adapter leaves the model's outputs unchanged when built (LoRA's B = 0, IA3's ones): trials
    # that share base weights and seed then share their before-training scores (base_scores.py).
    identity_at_init: bool = True
    # The hyperparameters only this method reads, with their rules (core.hparams.Rule); made
    # known to search spaces and studies when the method is registered.
    hyperparams: dict[str, hparams.Rule] = dataclasses.field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        return self.quantization is not None

    def applies_to(self, kind: Any) -> bool:
        """Whether the method makes sense for a task kind (``trainables.kinds.TaskKind``)."""
        return kind.fresh_head or not self.needs_fresh_head


METHODS: Registry[Method] = Registry("method")


def register(method: Method) -> Method:
    hparams.add_rules(method.hyperparams)
    return METHODS.register(method.name, method)


def _target_modules(hp: dict[str, Any], model_type: str) -> Any:
    preset = hp.get("target_modules", "default")
    if preset in (None, "default"):
        # peft picks the architecture's attention projections (we fill in what it lacks)
        return DEFAULT_TARGETS[model_type][0] if model_type in DEFAULT_TARGETS else None
    if isinstance(preset, str) and preset != "all-linear":
        return [m.strip() for m in preset.split(",") if m.strip()]
    return preset


def lora_alpha(hp: dict[str, Any]) -> int:
    """alpha from an absolute ``lora_alpha`` or from ``lora_alpha_ratio * lora_r``."""
    if hp.get("lora_alpha") is not None:
        return int(hp["lora_alpha"])
    return int(round(float(hp.get("lora_alpha_ratio", 2)) * int(hp.get("lora_r", 8))))


def _extra_heads(model_type: str) -> Optional[list[str]]:
    # DistilBERT's classification head is two layers; peft only keeps ``classifier`` trainable.
    return ["pre_classifier"] if model_type == "distilbert" else None


def _lora(hp: dict[str, Any], task_type: str, model_type: str) -> PeftConfig:
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType[task_type],
        r=int(hp.get("lora_r", 8)),
        lora_alpha=lora_alpha(hp),
        lora_dropout=float(hp.get("lora_dropout", 0.0)),
        target_modules=_target_modules(hp, model_type),
        # 'all-linear' would also wrap the task head, which trains in full (modules_to_save);
        # a causal LM has no such head (peft warns about an exclusion that matches nothing).
        exclude_modules=None if task_type == "CAUSAL_LM" else [m for m in HEAD_MODULES if m != "pooler"],
        modules_to_save=_extra_heads(model_type),
    )


def _ia3(hp: dict[str, Any], task_type: str, model_type: str) -> PeftConfig:
    # peft's per-architecture defaults pick the key/value (+ feed-forward) modules.
    from peft import IA3Config, TaskType

    targets = DEFAULT_TARGETS.get(model_type)
    return IA3Config(
        task_type=TaskType[task_type],
        target_modules=targets[1] if targets else None,
        feedforward_modules=targets[2] if targets else None,
        modules_to_save=_extra_heads(model_type),
    )


def _nf4(device: torch.device) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
        # A given skip list replaces transformers' default one, which keeps the LM's output layer
        # out of 4-bit: lm_head must be named too, or a model whose lm_head is tied to its input
        # embeddings (Llama-3.2-1B, Gemma) fails at its first forward pass.
        llm_int8_skip_modules=HEAD_MODULES + ["lm_head"],
    )


LORA_HPARAMS: dict[str, hparams.Rule] = {
    "lora_r": (hparams.positive_int, "a rank must be an integer > 0", "use ranks like 4, 8, 16"),
    "lora_alpha": (hparams.positive, "alpha must be > 0", "use e.g. 2 x rank"),
    "lora_alpha_ratio": (hparams.positive, "the alpha/rank ratio must be > 0", "use 1, 2 or 4"),
    "lora_dropout": (hparams.unit, "dropout must be in [0, 1)", "use e.g. 0.05"),
    "target_modules": (lambda v: isinstance(v, str) and bool(v), "target modules must be a preset name or comma-separated module names", "use default, all-linear or e.g. q_proj,v_proj"),
}

register(Method("lora", "low-rank adapters on frozen fp32/bf16 weights", _lora, hyperparams=LORA_HPARAMS))
register(Method("qlora", "LoRA on a 4-bit nf4 (bitsandbytes) base, k-bit prepared", _lora, _nf4, hyperparams=LORA_HPARAMS))
register(Method("ia3", "learned rescaling of keys, values and feed-forward activations (no rank)", _ia3))
register(Method("full", "baseline: full fine-tuning, every weight trains (most memory; no adapter)", None, trains="all"))
register(Method("head", "baseline: frozen pretrained base, only the fresh task head trains (a linear probe)", None, trains="head", needs_fresh_head=True))
