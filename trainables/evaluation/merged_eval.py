"""Evaluate with the adapter folded into the base weights, then put the base back bit for bit.

An unmerged LoRA layer runs its base matmul plus the adapter's own small ops (dropout, A, B,
scale, add) on every forward pass. Merged (peft's ``merge_adapter``), each layer is one matmul:
evals on MiniLM run 1.14-1.20x faster on a CPU with LoRA on every linear layer, 1.03-1.12x
with IA3 or LoRA on query + value (``bench/eval_speed.py``), and the scores are those of
``sweeps.export --merge``'s model.
Merging in fp32 is exact to rounding (logits within 1.5e-7, the same predictions).

Only where that holds and is cheap: fp32 base weights on the CPU. A 4-bit (QLoRA) or 16-bit
base would round the merged weights, and on a GPU the copy kept for restoring would take
memory that trial packing counts on.

Why a copy instead of peft's ``unmerge_adapter`` alone: unmerging subtracts what merging added,
which in floating point leaves the frozen weights an ulp off; after many evals training would
then depend on the eval cadence and a resumed trial (which reloads the base) would drift from
an uninterrupted one. The copy makes the restore exact.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch


def _tuner_layers(net: torch.nn.Module) -> list[torch.nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in net.modules() if isinstance(m, BaseTunerLayer)]


def mergeable(net: torch.nn.Module) -> bool:
    """A peft model whose adapted layers all sit on fp32 CPU weights (LoRA, IA3 on an
    unquantized base); not QLoRA, not a 16-bit base, not the ``full``/``head`` baselines."""
    from peft import PeftModel

    if not isinstance(net, PeftModel):
        return False
    layers = _tuner_layers(net)
    weights = [p for m in layers for p in m.get_base_layer().parameters(recurse=False)]
    return bool(weights) and all(type(p) in (torch.nn.Parameter, torch.Tensor) and p.dtype == torch.float32 and p.device.type == "cpu" for p in weights)


@contextlib.contextmanager
def merged_adapters(net: torch.nn.Module) -> Iterator[bool]:
    """Inside: the adapters merged where ``mergeable`` (yields whether they are). On leaving,
    also after an error: unmerged, and every base weight exactly as before."""
    if not mergeable(net):
        yield False
        return
    bases = [p for m in _tuner_layers(net) for p in m.get_base_layer().parameters(recurse=False)]
    saved = [p.detach().clone() for p in bases]
    try:
        net.merge_adapter()  # type: ignore[operator]
    except ValueError:  # peft refuses some models (e.g. an adapter on a tied output layer)
        _restore(net, bases, saved)
        yield False
        return
    try:
        yield True
    finally:
        _restore(net, bases, saved)


def _restore(net: torch.nn.Module, bases: list[torch.nn.Parameter], saved: list[torch.Tensor]) -> None:
    with warnings.catch_warnings():  # peft's "unmerge can be inaccurate" (IA3): the copy below makes it exact
        warnings.simplefilter("ignore", UserWarning)
        net.unmerge_adapter()  # type: ignore[operator]  # peft's bookkeeping: layers no longer merged
    with torch.no_grad():
        for p, s in zip(bases, saved):
            p.copy_(s)
