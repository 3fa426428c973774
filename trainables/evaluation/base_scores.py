"""The model's scores before training, computed once per sweep stage instead of once per trial.

Every trial reports ``before_*`` (its model before training: pretrained base, fresh head, the
adapter at its identity init) so a report can say what fine-tuning bought. That costs a full
validation pass at the start of each trial: one eval in three for a trial that ASHA stops at its
first rung, and seconds of every trial's start-up. Yet trials that share the base weights, the
head's seed and the method's identity init score exactly alike: rank, alpha, learning rate and
the rest only matter once training starts.

So the sweep's driver starts one small actor per stage (``BaseScores``), and a trial asks it
first (``cached_or_computed``). The key is what decides those scores: the method, the seed, the
device and a fingerprint of every weight that is not the adapter's (names, shapes, dtypes and a
sample of values: a 4-bit or bf16 base, another head init or checkpoint gives another key). A
method whose adapter is not the identity at init (``Method.identity_at_init``) is never shared.
Trials that start together may both compute; the scores are the same either way.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Callable, Optional

import ray

if TYPE_CHECKING:
    import torch

SAMPLES_PER_TENSOR = 256  # values of each weight hashed: enough to tell two head inits or dtypes apart


# torch is imported inside the functions that use it, not here: the actor's process imports this
# module to build the class, and torch's import (~2 s of CPU) would be most of the actor's cost.
@ray.remote(num_cpus=0)
class BaseScores:
    """key -> {"metrics": before_* scores, "payload": the kind's validation outputs}."""

    def __init__(self) -> None:
        self.scores: dict[str, Any] = {}

    def get(self, key: str) -> Optional[Any]:
        return self.scores.get(key)

    def put(self, key: str, value: Any) -> None:
        self.scores.setdefault(key, value)


def start() -> Any:
    """A cache for one stage's trials, on the driver's node (owned by the driver, gone with
    it): not on a worker node a cloud may take back mid-study."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return BaseScores.options(scheduling_strategy=here).remote()  # type: ignore[attr-defined]


def adapter_parameters(net: torch.nn.Module) -> set[int]:
    """ids of the adapter's own weights (peft's ``adapter_layer_names`` of each tuner layer)."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    ids: set[int] = set()
    for module in net.modules():
        if isinstance(module, BaseTunerLayer):
            for attr in module.adapter_layer_names:
                part = getattr(module, attr, None)
                if isinstance(part, torch.nn.Module):
                    ids |= {id(p) for p in part.parameters()}
                elif isinstance(part, (torch.nn.ParameterDict, dict)):
                    ids |= {id(p) for p in part.values()}
    return ids


def key(net: torch.nn.Module, method: str, seed: int, device: torch.device) -> str:
    """What the model's scores before training depend on, as one string."""
    import torch

    h = hashlib.sha256(f"{method}|{seed}|{device.type}".encode())
    adapter = adapter_parameters(net)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if id(p) in adapter:
                continue
            flat = p.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // SAMPLES_PER_TENSOR)][:SAMPLES_PER_TENSOR]
            h.update(f"{name}|{tuple(p.shape)}|{p.dtype}".encode())
            h.update(sample.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cached_or_computed(cache: Any, cache_key: Optional[str], compute: Callable[[], Any]) -> tuple[Any, bool]:
    """The scores from ``cache`` under ``cache_key``, or ``compute()``d and stored there;
    also whether they came from the cache. No cache or no key: computed."""
    if cache is None or cache_key is None:
        return compute(), False
    try:
        found = ray.get(cache.get.remote(cache_key))
    except ray.exceptions.RayError:  # the cache is gone (its node, its driver): a trial needs none
        found, cache = None, None
    if found is not None:
        return found, True
    value = compute()
    if cache is not None:
        cache.put.remote(cache_key, value)  # not waited on: a lost put only costs a later trial its pass
    return value, False
