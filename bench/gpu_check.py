"""GPU check: our model builder (``trainables.model.load.build``) with LoRA, QLoRA (bitsandbytes nf4,
bf16 compute) and full fine-tuning on CUDA, at real model shapes with random weights (no hub).

For each (shape, task, method): build, train a few steps on random tokens, and report trainable
parameters, peak GPU memory (while loading, and while training), tokens/s, model-FLOPs utilisation
against the GPU's dense bf16 peak (``mfu``) and that the loss is finite; QLoRA's checkpoint
(``save_trained``/``load_trained``) must restore the adapter exactly. Shapes: Llama-3.2-1B and
Mistral-7B (the catalogue's QLoRA model: does a trial fit one 24 GB GPU?).

    python bench/gpu_check.py --json /tmp/gpu.json      # needs a CUDA GPU and bitsandbytes
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PEAK: float | None = None  # --peak-tflops

SHAPES = {
    "llama-3.2-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True)),
    "mistral-7b": ("mistral", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, sliding_window=None)),
}


# Dense bf16 tensor-core peak (TFLOP/s, no sparsity) by device name: the denominator of the
# model-FLOPs utilisation (MFU) column. Override with --peak-tflops.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}


def peak_tflops() -> float | None:
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def model_flops_per_token(total_params: int, trainable_params: int) -> float:
    """Useful training FLOPs per token: forward 2P and input gradients 2P through every weight,
    weight gradients 2P only where weights train (recomputation from checkpointing not counted,
    as MFU is defined). Attention's s^2 terms left out (small at 256 tokens)."""
    return 4 * total_params + 2 * trainable_params


def make_checkpoint(shape: str, folder: Path) -> str:
    """Random bf16 weights of ``shape`` saved as a CausalLM checkpoint (what the hub holds)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    family, dims = SHAPES[shape]
    cfg = AutoConfig.for_model(family, pad_token_id=0, **dims)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return str(folder)


def run(path: str, task_name: str, method: str, steps: int, batch: int, seq: int, checkpointing: bool = False, compiled: bool = False) -> dict:
    from trainables.model import load as models
    from trainables.kinds import TASKS
    from trainables.training.loop import optimizer_for

    task = TASKS[task_name]
    torch.cuda.reset_peak_memory_stats()
    device = torch.device("cuda")
    net = models.build_model(path, task, ["negative", "positive"], method, {"lora_r": 16, "lora_alpha_ratio": 2, "target_modules": "all-linear"}, device, 0, checkpointing)
    if method == "full":
        net.to(torch.bfloat16)  # full fine-tuning in bf16 (fp32 master weights would need 4x)
    trainable, total = models.count_params(net)
    load_peak = torch.cuda.max_memory_allocated() / 2**30  # loading quantizes bf16 shards on the GPU
    torch.cuda.reset_peak_memory_stats()
    net.train()  # as the trial loop does (gradient checkpointing only acts in training mode)
    opt = optimizer_for(net, {"learning_rate": 1e-4, "weight_decay": 0.0})  # the trial's (fused) AdamW
    forward = torch.compile(net) if compiled else net
    vocab = net.config.vocab_size
    losses, t0 = [], None
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps (kernels, allocator) before timing
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        ids = torch.randint(1, vocab, (batch, seq), device=device)
        kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if task.kind.name == "classification":
            kwargs["labels"] = torch.randint(0, 2, (batch,), device=device)
        elif task.kind.name == "sft":
            kwargs["labels"] = ids
        else:
            kwargs["start_positions"] = torch.randint(0, seq, (batch,), device=device)
            kwargs["end_positions"] = kwargs["start_positions"]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = forward(**kwargs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    out = {
        "task": task_name, "method": method, "gradient_checkpointing": checkpointing, "compiled": compiled, "batch": f"{batch}x{seq}",
        "attention": getattr(net.config, "_attn_implementation", None), "trainable_params": trainable, "total_params": total,
        "load_peak_gb": round(load_peak, 2), "train_peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "tokens_per_s": round(steps * batch * seq / elapsed), "loss_finite": all(l == l and abs(l) < 1e4 for l in losses),
    }
    peak = PEAK or peak_tflops()
    if peak:
        out["mfu"] = round(out["tokens_per_s"] * model_flops_per_token(total, trainable) / (peak * 1e12), 3)
    if method in ("qlora", "lora") and not compiled:
        with tempfile.TemporaryDirectory() as tmp:
            models.save_trained(net, tmp, method)
            state = {k: v.clone() for k, v in net.state_dict().items() if "lora_" in k}
            for k, v in net.named_parameters():
                if "lora_" in k:
                    v.data.zero_()
            models.load_trained(net, tmp)
            out["checkpoint_restores"] = all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    del net, opt
    torch.cuda.empty_cache()
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--json", help="write results here")
    p.add_argument("--shapes", default="llama-3.2-1b,mistral-7b")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak (default: by device name)")
    p.add_argument("--mfu", metavar="SIZES", help="instead of the method table: Llama-3.2-1B LoRA (classification and "
                   "instruction) and full fine-tuning at each BATCHxSEQ of SIZES (e.g. 8x256,16x1024), eager (LoRA classification at the first and last size also torch.compile'd)")
    args = p.parse_args()
    global PEAK
    PEAK = args.peak_tflops
    from trainables.inference import quiet

    quiet()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    results = []
    plan = {
        "llama-3.2-1b": [("single_label", "lora"), ("single_label", "qlora"), ("single_label", "full"), ("extractive_qa", "qlora"), ("instruction", "qlora")],
        "mistral-7b": [("single_label", "qlora", False), ("single_label", "qlora", True)],
    }
    if args.mfu:
        sizes = [tuple(int(n) for n in size.split("x")) for size in args.mfu.split(",")]
        plan = {"llama-3.2-1b": [(task, method, False, False, b, s) for b, s in sizes
                                 for task, method in (("single_label", "lora"), ("instruction", "lora"), ("single_label", "full"))]}
        plan["llama-3.2-1b"] += [("single_label", "lora", False, True, b, s) for b, s in (sizes[0], sizes[-1])]  # compiling takes ~1 min a row
        args.shapes = "llama-3.2-1b"
    for shape in args.shapes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            path = make_checkpoint(shape, Path(tmp))
            print(f"{shape}: random checkpoint written in {time.perf_counter() - t:.0f}s", flush=True)
            for task, method, *more in plan[shape]:
                gc, compiled, batch, seq = (more + [False, False, args.batch, args.seq][len(more):])
                try:
                    row = {"shape": shape, **run(path, task, method, args.steps, batch=batch, seq=seq, checkpointing=gc, compiled=compiled)}
                except torch.OutOfMemoryError:
                    row = {"shape": shape, "task": task, "method": method, "compiled": compiled, "batch": f"{batch}x{seq}", "error": "out of memory"}
                    torch.cuda.empty_cache()
                print(json.dumps(row), flush=True)
                results.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
