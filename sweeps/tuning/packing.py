"""``resources.gpus_per_worker: auto``: as many trials per GPU as their memory allows.

A 1B LoRA trial peaks at ~6 GB, yet a whole-GPU request gives each trial an 80 GB card.
Before anything is written, the study's largest trial (over its methods and the space's
largest rank) is estimated (``trainables.training.memory``), and the GPU share every trial asks Ray
for becomes ``1 / trials that fit``. Ray's fractional GPUs do not enforce memory, so the
estimate errs high, and a packed trial that still runs out of memory is retried with a larger
share (``trainables.training.trial``) rather than failing the study.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import ray

from core.errors import StudyError
from trainables.training import memory
from trainables.kinds import TASKS

GPU_PROBE_TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True)
class Packing:
    estimate: memory.MemoryEstimate  # the study's largest trial
    method: str  # the method that estimate is for
    gpu_gib: float
    per_gpu: int
    share: float  # what each worker asks Ray for
    seq_len: int  # tokens per row the estimate assumed
    micro_batch_size: Optional[int] = None  # rows per pass, set when a whole batch would not fit one GPU

    def line(self) -> str:
        passes = f", in passes of {self.micro_batch_size} rows (training.micro_batch_size)" if self.micro_batch_size else ""
        return (f"packing: a trial ({self.method}, rows of up to {self.seq_len} tokens{passes}) needs about {self.estimate.describe()}; "
                f"{self.per_gpu} trial(s) per {self.gpu_gib:.0f} GiB GPU -> gpus_per_worker {self.share:g}")

    def params(self) -> dict[str, Any]:
        """What the parent MLflow run records of the decision."""
        return {"packing.estimated_peak_gib": round(self.estimate.total_gib, 2), "packing.trials_per_gpu": self.per_gpu, "packing.seq_len": self.seq_len,
                "packing.gpu_memory_gib": round(self.gpu_gib, 1), "packing.gpus_per_worker": self.share,
                **({"packing.micro_batch_size": self.micro_batch_size} if self.micro_batch_size else {})}


def largest_rank(study: Any) -> int:
    """The largest LoRA rank the study's space can draw (16 where it draws none)."""
    param = study.space.params.get("lora_r") if study.space is not None else None
    if param is None:
        return 16
    ranks = [param.value] if param.type == "fixed" else (param.values or [param.high])
    ranks += [v for changes in param.per_method.values() for v in (changes.get("values") or [changes.get("high")]) if v is not None]
    return int(max(float(r) for r in ranks if r is not None))


def trained_length(study: Any, prepared: Any) -> int:
    """The longest row a trial trains on, in tokens: batches pad to their longest row, so a
    study of short texts (tweets: 20-40 tokens) never fills ``max_length`` and its trials take
    a fraction of what ``max_length`` rows would (bench/RESULTS.md: 3.9 GiB measured against an
    8.2 GiB estimate at 128 tokens). Instruction rows joined by ``packing`` (set, or drawn by
    the space) fill ``max_length``."""
    max_length = study.training.max_length
    if study.training.packing or (study.space is not None and "packing" in study.space.params):
        return max_length
    lengths = prepared.splits["train"]["input_ids"]
    return min(max_length, max((len(ids) for ids in lengths), default=max_length))


def estimate_study(study: Any, seq_len: Optional[int] = None, rows: Optional[int] = None) -> tuple[str, memory.MemoryEstimate]:
    """The largest per-trial estimate over the study's methods, at ``seq_len`` tokens a row
    (default: ``training.max_length``) and ``rows`` per pass (default: ``training.rows_per_pass``)."""
    from transformers import AutoConfig

    from trainables.model.load import resolve

    task = TASKS[study.task]
    try:
        config = AutoConfig.from_pretrained(resolve(study.model))
    except Exception as exc:
        raise StudyError("resources.gpus_per_worker", f"auto needs the model's config and {study.model!r} has none readable ({str(exc).splitlines()[0]})",
                         "set a number (e.g. 1 or 0.5) instead of auto") from None
    shape = memory.shape_of(config, task.auto_model)
    training = study.training
    found = [
        (method, memory.estimate(shape, method, batch=rows or training.rows_per_pass, seq_len=seq_len or training.max_length, lora_r=largest_rank(study),
                                 causal_lm=task.peft_task_type == "CAUSAL_LM", gradient_checkpointing=training.gradient_checkpointing,
                                 # auto: the checkpoint's bytes, safe on GPUs without bf16 (a trial on one with bf16 takes less)
                                 base_bytes={"bf16": 2, "fp32": 4}.get(training.base_dtype)))
        for method in study.methods
    ]
    return max(found, key=lambda f: f[1].total_gib)


def _gpu_memory_gib() -> Optional[float]:
    import torch

    return torch.cuda.get_device_properties(0).total_memory / memory.GIB if torch.cuda.is_available() else None


def cluster_gpu_gib() -> Optional[float]:
    """The memory of a GPU in the cluster, read by a tiny task on a GPU node (None: none readable,
    e.g. Ray's fake GPUs in tests, or no GPU node up yet)."""
    if ray.cluster_resources().get("GPU", 0) <= 0:
        return None
    ref = ray.remote(num_gpus=0.0001, num_cpus=0)(_gpu_memory_gib).remote()
    ready, _ = ray.wait([ref], timeout=GPU_PROBE_TIMEOUT_S)
    if not ready:
        ray.cancel(ref, force=True)
        return None
    return ray.get(ref)


def plan(study: Any, gpu_gib: Optional[float] = None, seq_len: Optional[int] = None) -> Optional[Packing]:
    """The packing of ``study`` (None unless its resources say ``gpus_per_worker: auto``).
    Call with Ray connected; ``gpu_gib`` overrides what the study or the cluster says;
    ``seq_len``: the longest row the trials train on (``trained_length``; default max_length)."""
    resources = study.resources
    if resources.gpus_per_worker != "auto":
        return None
    gpu_gib = gpu_gib or resources.gpu_memory_gb or cluster_gpu_gib()
    if not gpu_gib:
        raise StudyError("resources.gpu_memory_gb", "gpus_per_worker: auto needs each GPU's memory and none could be read from the cluster",
                         "set resources.gpu_memory_gb (e.g. 80 for an H100, 24 for an L4), or a number for gpus_per_worker")
    seq_len = seq_len or study.training.max_length
    rows = study.training.rows_per_pass
    method, estimate = estimate_study(study, seq_len, rows)
    per_gpu = memory.trials_per_gpu(estimate.total_gib, gpu_gib, resources.gpu_memory_headroom, resources.max_trials_per_gpu)
    micro = study.training.micro_batch_size
    while per_gpu < 1 and rows > 1:  # a whole batch does not fit one GPU: the same batch in smaller passes
        rows = micro = rows // 2
        method, estimate = estimate_study(study, seq_len, rows)
        per_gpu = memory.trials_per_gpu(estimate.total_gib, gpu_gib, resources.gpu_memory_headroom, resources.max_trials_per_gpu)
    if per_gpu < 1:
        raise StudyError("resources.gpus_per_worker", f"a {method} trial needs about {estimate.total_gib:.0f} GiB even one row at a time, more than a {gpu_gib:.0f} GiB GPU holds",
                         "set training.gradient_checkpointing: true, use qlora, lower training.max_length, or use larger GPUs")
    return Packing(estimate, method, gpu_gib, per_gpu, memory.share(per_gpu), seq_len, micro if micro != study.training.micro_batch_size else None)


def apply(study: Any, packing: Optional[Packing]) -> Any:
    """``study`` with its GPU share fixed by ``packing`` (unchanged without one)."""
    if packing is None:
        return study
    training = dataclasses.replace(study.training, micro_batch_size=packing.micro_batch_size) if packing.micro_batch_size else study.training
    packed = dataclasses.replace(study, resources=dataclasses.replace(study.resources, gpus_per_worker=packing.share), training=training)
    packed.space = study.space  # not an init field: replace() leaves it unset
    return packed
