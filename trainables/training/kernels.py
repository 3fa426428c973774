"""Kernel choices that depend on the GPU and on the batch shapes trials feed it."""

from __future__ import annotations

import torch


def avoid_cudnn_attention(device: torch.device) -> None:
    """Keep PyTorch's attention (SDPA) off cuDNN's backend in this trial's process.

    On Hopper GPUs PyTorch tries cuDNN's fused attention first. cuDNN builds an execution plan
    on the CPU for each new sequence length, and a trial's batches (padded to their longest
    text, length-grouped) change length nearly every step: on an H100 (torch 2.11, Llama-3.2-1B
    shape, LoRA, 32 tweets a batch) a step took 0.36 s with cuDNN and 0.16 s with the flash /
    memory-efficient kernels SDPA then picks, which need no plan (bench/RESULTS.md). Elsewhere
    (CPU, GPUs where cuDNN is not tried first) this changes nothing."""
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)
