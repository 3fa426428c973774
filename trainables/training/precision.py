"""Mixed precision: which dtype a trial's training forward passes run in, by hardware.

bf16 autocast halves the bytes every matmul moves and, where the hardware has bf16 units
(CUDA GPUs with bf16, CPUs with AVX512-BF16 or AMX), runs ~2x faster; trained weights, their
gradients and the optimizer stay fp32, and evaluation runs without autocast (scores = what the
exported model gives). CPUs without those instructions emulate bf16 and get slower, so ``auto``
checks the CPU's own flags instead of assuming: machines differ.

The frozen base weights of an adapter trial need no fp32 at all: the dtype they load in
(``base_dtype``) is a separate choice, bf16 on GPUs that train in bf16.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:
    from core.specs import TrainingSpec

FAST_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty where /proc/cpuinfo is absent)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "flags:")
    except OSError:  # not Linux
        return frozenset()
    return frozenset(flags.split(":", 1)[1].split())


def autocast_dtype(device: torch.device, precision: str, flags: Optional[frozenset[str]] = None) -> Optional[torch.dtype]:
    """The autocast dtype for ``training.precision`` on ``device`` (None: plain fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    flags = cpu_flags() if flags is None else flags
    return torch.bfloat16 if any(f in flags for f in FAST_BF16_CPU_FLAGS) else None


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype``, or nothing (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def base_dtype(device: torch.device, training: "TrainingSpec", method: str) -> Optional[torch.dtype]:
    """The dtype ``from_pretrained`` loads the base model in (None: the checkpoint's own, which
    is transformers' default). Only frozen weights are affected: ``full`` trains every weight
    (it keeps the checkpoint's dtype) and a quantized method's base is 4-bit (its compute dtype
    is the method's own)."""
    from trainables.model.methods import METHODS

    spec = METHODS[method]
    if spec.quantized or spec.trains == "all":
        return None
    if training.base_dtype == "bf16":
        return torch.bfloat16
    if training.base_dtype == "fp32":
        return torch.float32
    if device.type == "cuda" and autocast_dtype(device, training.precision) is torch.bfloat16:
        return torch.bfloat16
    return None
