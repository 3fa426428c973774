"""Examples/s of one trial's training loop on CPU: before (fp32, randomly mixed batch lengths)
and after (bf16 autocast where the CPU has bf16 units, length-grouped batches), same model, data,
batch size and thread count, one run, one process; and "after" with torch's default (unfused)
AdamW instead of the trials' fused one, with the frozen base in bf16 (``training.base_dtype``), and
in passes of 8 rows (``training.micro_batch_size``: what splitting a batch costs).

It drives the trial's own pieces (``trainables.model.load.build``, ``trainables.training.loop.train_loader``,
``trainables.training.precision``), not a copy, on real tweets from ../shared/data/emotion. Each way
trains the same number of optimizer steps; the ratio is the speed-up a trial gets.

    .venv/bin/python bench/cpu_speed.py                       # ~3 min on 2 CPUs
    .venv/bin/python bench/cpu_speed.py --method full --rows 1024 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import DataCollatorWithPadding  # noqa: E402

from core.specs import TrainingSpec  # noqa: E402
from trainables.model import load as models  # noqa: E402
from trainables.training import precision as precision_mod  # noqa: E402
from trainables.inference import quiet  # noqa: E402
from trainables.kinds import TASKS  # noqa: E402
from trainables.training.loop import optimizer_for, split_batch, train_loader  # noqa: E402
from trainables.training.precision import autocast, autocast_dtype, cpu_flags  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "emotion" / "train.txt"
MODEL = "packaged:all-minilm-l6-v2"
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def tweets(rows: int, tokenizer, max_length: int) -> Dataset:
    lines = [ln.rsplit(";", 1) for ln in DATA.read_text().splitlines()[:rows]]
    enc = tokenizer([t for t, _ in lines], truncation=True, max_length=max_length)
    return Dataset.from_dict({**enc, "labels": [LABELS.index(y) for _, y in lines]})


def run(way: str, rows: Dataset, tokenizer, method: str, batch: int, precision: str, group: bool, fused: bool = True, base_dtype: str = "auto",
        micro: int | None = None) -> dict:
    torch.manual_seed(0)
    device = torch.device("cpu")
    training = TrainingSpec(batch_size=batch, group_by_length=group, precision=precision, base_dtype=base_dtype)
    net = models.build_model(MODEL, TASKS["single_label"], LABELS, method, {"lora_r": 16, "lora_alpha_ratio": 2, "target_modules": "all-linear"}, device,
                             tokenizer.pad_token_id, base_dtype=precision_mod.base_dtype(device, training, method))
    weights_mb = sum(p.numel() * p.element_size() for p in net.parameters()) / 2**20
    opt = optimizer_for(net, {"learning_rate": 1e-3 if method != "full" else 1e-4, "head_learning_rate": 1e-3, "weight_decay": 0.0})
    if not fused:  # the same groups and settings, torch's default (per-tensor foreach) AdamW
        opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "fused"} for g in opt.param_groups], fused=False)
    gen = torch.Generator().manual_seed(0)
    loader = train_loader(rows, training, DataCollatorWithPadding(tokenizer), gen, world=1)
    amp = autocast_dtype(device, precision)
    net.train()
    seen = tokens = padded = 0
    started = time.perf_counter()
    for batch_ in loader:
        batch_loss = 0.0
        for part, share in split_batch(batch_, micro, token_level=False):
            with autocast(device, amp):
                loss = net(**part).loss * share
            loss.backward()
            batch_loss += float(loss.detach())
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += len(batch_["input_ids"])
        tokens += int(batch_["attention_mask"].sum())
        padded += batch_["input_ids"].numel()
    took = time.perf_counter() - started
    return {"way": way, "dtype": str(amp).replace("torch.", "") if amp else "fp32", "grouped": group, "seconds": round(took, 1),
            "examples_per_s": round(seen / took, 1), "padding_share": round(1 - tokens / padded, 3), "last_loss": round(batch_loss, 4),
            "weights_mb": round(weights_mb, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--method", default="lora", choices=["lora", "full", "ia3", "qlora"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    quiet()  # no weight-loading bars or load reports
    tokenizer = models.load_tokenizer(MODEL)
    rows = tweets(args.rows, tokenizer, args.max_length)
    results = [
        run("before (fp32, mixed lengths)", rows, tokenizer, args.method, args.batch_size, "fp32", False),
        run("after (auto precision, grouped)", rows, tokenizer, args.method, args.batch_size, "auto", True),
        run("after, unfused AdamW", rows, tokenizer, args.method, args.batch_size, "auto", True, fused=False),
        run("after, bf16 frozen base", rows, tokenizer, args.method, args.batch_size, "auto", True, base_dtype="bf16"),
        run("after, in passes of 8 rows", rows, tokenizer, args.method, args.batch_size, "auto", True, micro=8),
    ]
    bf16 = sorted({"avx512_bf16", "amx_bf16"} & cpu_flags())
    print(f"{args.method} on MiniLM, {args.rows} real tweets, batch {args.batch_size}, {args.threads} thread(s); CPU bf16 flags: {bf16 or 'none'}")
    for r in results:
        print(f"  {r['way']:<34} {r['examples_per_s']:>7} examples/s per {args.threads} thread(s)  ({r['seconds']} s, {r['dtype']}, padding {r['padding_share']:.0%}, last loss {r['last_loss']}, weights {r['weights_mb']} MB)")
    print(f"  speed-up: {results[1]['examples_per_s'] / results[0]['examples_per_s']:.2f}x; "
          f"fused AdamW against torch's default: {results[1]['examples_per_s'] / results[2]['examples_per_s']:.2f}x; "
          f"bf16 frozen base against the checkpoint's fp32: {results[3]['examples_per_s'] / results[1]['examples_per_s']:.2f}x; "
          f"passes of 8 rows against whole batches: {results[4]['examples_per_s'] / results[1]['examples_per_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "cpu_bf16_flags": bf16, "results": results}, indent=2))


if __name__ == "__main__":
    main()
