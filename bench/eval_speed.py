"""Seconds of one trial evaluation on CPU: the adapter as it trains (unmerged) against folded
into the base weights for the eval (``trainables.evaluation.merged_eval``, what trials do since it landed).

The trial's own pieces: ``trainables.model.load.build_model``, the classification kind's ``predict``
(fp32, batches of the trial's eval size, shortest rows first), on real validation tweets from
../shared/data/emotion; MiniLM with LoRA r16 on every linear layer, LoRA r8 on peft's default
targets (query, value) and IA3. Each way runs ``--repeats`` times, alternating, in one process
on one thread; medians. Also prints how far the merged logits are from the unmerged ones and
whether any prediction changes.

    .venv/bin/python bench/eval_speed.py [--json out.json]        # ~5 min on 2 CPUs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import DataCollatorWithPadding  # noqa: E402

from trainables.model import load as models  # noqa: E402
from trainables.inference import quiet  # noqa: E402
from trainables.kinds import TASKS, classification  # noqa: E402
from trainables.evaluation.merged_eval import merged_adapters  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "emotion" / "val.txt"
MODEL = "packaged:all-minilm-l6-v2"
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
ADAPTERS = {
    "lora r16, all linear": ("lora", {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}),
    "lora r8, query+value": ("lora", {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05}),
    "ia3": ("ia3", {}),
}


def tweets(rows: int, tokenizer, max_length: int) -> Dataset:
    lines = [ln.rsplit(";", 1) for ln in DATA.read_text().splitlines() if ";" in ln][:rows]
    enc = tokenizer([t for t, _ in lines], truncation=True, max_length=max_length)
    return Dataset.from_dict({**enc, "labels": [LABELS.index(y) for _, y in lines]})


def trained_like(method: str, hp: dict, tokenizer) -> torch.nn.Module:
    """The adapter away from its identity init, as after training (LoRA's B starts at zero)."""
    torch.manual_seed(0)
    net = models.build_model(MODEL, TASKS["single_label"], LABELS, method, hp, torch.device("cpu"), tokenizer.pad_token_id)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name or "ia3_l" in name:
                p.add_(torch.randn_like(p) * 0.05)
    return net


def timed(net: torch.nn.Module, loader: DataLoader, merge: bool) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    if merge:
        with merged_adapters(net) as merged:
            assert merged, "this adapter should merge"
            logits, _, _ = classification.predict(net, loader, torch.device("cpu"))
    else:
        logits, _, _ = classification.predict(net, loader, torch.device("cpu"))
    return time.perf_counter() - started, logits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000, help="validation tweets per eval")
    p.add_argument("--eval-batch-size", type=int, default=64, help="the trials' default: 2 x batch_size 32")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    quiet()
    tokenizer = models.load_tokenizer(MODEL)
    loader = DataLoader(tweets(args.rows, tokenizer, args.max_length), batch_size=args.eval_batch_size,
                        collate_fn=DataCollatorWithPadding(tokenizer), generator=torch.Generator())
    results = []
    for name, (method, hp) in ADAPTERS.items():
        net = trained_like(method, hp, tokenizer)
        timed(net, loader, False)  # warm-up: first-call allocations, oneDNN kernels
        times: dict[bool, list[float]] = {False: [], True: []}
        logits: dict[bool, np.ndarray] = {}
        for _ in range(args.repeats):
            for merge in (False, True):
                s, logits[merge] = timed(net, loader, merge)
                times[merge].append(s)
        unmerged, merged = statistics.median(times[False]), statistics.median(times[True])
        results.append({
            "adapter": name, "unmerged_s": round(unmerged, 2), "merged_s": round(merged, 2), "speedup": round(unmerged / merged, 2),
            "max_logit_diff": float(np.abs(logits[True] - logits[False]).max()),
            "same_predictions": float((logits[True].argmax(1) == logits[False].argmax(1)).mean()),
        })
    print(f"MiniLM, {args.rows} validation tweets in batches of {args.eval_batch_size}, fp32, {args.threads} thread(s), median of {args.repeats}")
    for r in results:
        print(f"  {r['adapter']:<22} unmerged {r['unmerged_s']:>6.2f} s  merged {r['merged_s']:>6.2f} s  {r['speedup']:.2f}x  "
              f"max |logit diff| {r['max_logit_diff']:.1e}  same predictions {r['same_predictions']:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
