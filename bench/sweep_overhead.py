"""Benchmark: what running trials through the sweep costs on top of plain training.

The same fixed configs (``bench/emotion_bench.yaml``: LoRA, QLoRA, IA3 on 800 real emotion
tweets) are trained three ways in one run:

- ``plain``:   one Python process, a plain PyTorch + peft loop per config, one after another
               (no Ray, no Tune, no MLflow), one CPU thread each, like a 1-CPU trial,
               evaluating at the same steps as a trial, and once before training when the
               study keeps ``training.eval_base`` (a trial's ``before_*`` scores): equal work;
- ``sweep x1``: ``sweeps.sweep.run_study`` (local Ray start, Tune, MLflow), one trial at a
               time: the same serial schedule, so the ratio is pure overhead; each trial trains
               in its own Tune actor (``resources.in_process``, the one-node default);
- ``sweep x1 train workers``: the same with a Train V2 controller + worker per trial
               (``in_process: false``, what a multi-node cluster runs);
- ``sweep x2``: two trials at a time on the 2 CPUs: what packing trials buys back;
- ``sweep x1, Ray up, store exists`` (``--running``): a user's next study: Ray was started once
               (``ray start --head``, outside the timer) and the sweep joins it (``--address``),
               into an MLflow store an earlier study created; what each study then costs.

Prints wall times, ratios against ``plain``, per-trial overhead and each config's validation
macro F1 (the sweep must train the same model to the same quality). Run from the repo root:

    .venv/bin/python bench/sweep_overhead.py [--concurrency 1 2] [--modes true false] [--running] [--train-rows N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, get_scheduler, set_seed

from core import hparams
from core.schedule import schedule
from sweeps.study import Study, load_study
from trainables.data import load as data_mod
from trainables.kinds import TASKS, classification
from trainables.training.loop import optimizer_for, train_loader
from trainables.model.load import build_model, load_tokenizer
from trainables.training.precision import autocast, autocast_dtype

STUDY = Path(__file__).with_name("emotion_bench.yaml")


def plain_run(study: Study, prepared: data_mod.PreparedData, config: dict[str, Any]) -> dict[str, float]:
    """Train one config the way a careful notebook would: build, loop (the trial's batching and
    precision), evaluate at the same points as a trial (so the sweep's extra cost is
    Ray/Tune/MLflow, not extra evaluation or a slower loop)."""
    started = time.perf_counter()
    training, task = study.training, TASKS[study.task]
    torch.set_num_threads(int(study.resources.cpus_per_worker))
    set_seed(training.seed)
    hp = hparams.resolve(config)
    device = torch.device("cpu")
    model = build_model(study.model, task, prepared.label_names, hp["method"], hp, device, prepared.tokenizer.pad_token_id)
    collate = DataCollatorWithPadding(prepared.tokenizer)
    # the trial's batching (length-grouped) and precision (bf16 autocast where the CPU has it)
    loader = train_loader(prepared.splits["train"], training, collate, torch.Generator().manual_seed(training.seed), world=1)
    amp = autocast_dtype(device, training.precision)
    eval_bs = training.eval_batch_size or 2 * training.batch_size
    val = DataLoader(prepared.splits["validation"], batch_size=eval_bs, collate_fn=collate, generator=torch.Generator())
    plan = schedule(len(prepared.splits["train"]), training, 1)
    total, every = plan.total_steps, plan.eval_every
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer_for(model, hp)  # the trial's AdamW (fused, a head rate where set)
    lr_schedule = get_scheduler(hp["lr_scheduler"], optimizer, num_warmup_steps=int(hp["warmup_ratio"] * total), num_training_steps=total)
    step, metrics = 0, {}
    train_s = eval_s = 0.0  # seconds in optimizer steps and in evals (the one before training too, as a trial counts them)
    if training.eval_base:  # as a trial does by default: the before_* scores of the untrained model
        t0 = time.perf_counter()
        classification.evaluate(model, val, prepared, "validation", device, task, training)
        eval_s += time.perf_counter() - t0
    model.train()
    while step < total:
        for batch in loader:
            t0 = time.perf_counter()
            with autocast(device, amp):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            t1 = time.perf_counter()
            train_s += t1 - t0
            if step % every == 0 or step == total:
                metrics = classification.evaluate(model, val, prepared, "validation", device, task, training)[0]
                eval_s += time.perf_counter() - t1
            if step >= total:
                break
    return {"f1_macro": metrics["f1_macro"], "seconds": time.perf_counter() - started, "train_s": train_s, "eval_s": eval_s}


def plain(study: Study) -> dict[str, Any]:
    started = time.perf_counter()
    tokenizer = load_tokenizer(study.model)
    prepared = data_mod.prepare(study.data, TASKS[study.task], tokenizer, study.training.max_length, study.training.seed)
    assert study.space is not None
    trials = {cfg["method"]: plain_run(study, prepared, cfg) for cfg in study.space.grid_points(study.methods)}
    return {"seconds": time.perf_counter() - started, "trials": trials}


def sweep(concurrency: int, workdir: Path, in_process: str, overrides: list[str], address: str | None = None) -> dict[str, Any]:
    """One timed ``run_study``: on a local Ray it starts and stops itself, or joining ``address``
    (a running cluster) into an MLflow store that already exists, as a user's next study would."""
    from sweeps.tuning.tuner import run_study

    out = workdir / f"x{concurrency}-{in_process}{'-running' if address else ''}"
    uri = f"sqlite:///{out / 'mlflow.db'}"
    study = load_study(str(STUDY), [
        *overrides, f"search.max_concurrent_trials={concurrency}", f"resources.in_process={in_process}",
        f"storage_path={out / 'ray_results'}", f"tracking.tracking_uri={uri}",
    ])
    out.mkdir(parents=True)
    if address:  # an earlier study's store: created by another process, so this one opens it as a user's would
        subprocess.run([sys.executable, "-c", f"from mlflow.tracking import MlflowClient; MlflowClient({uri!r}).search_experiments()"], check=True)
    started = time.perf_counter()
    outcome = run_study(study, address=address, local=address is None)
    seconds = time.perf_counter() - started
    trials = {}
    for r in outcome.results:
        if r.error is not None:
            raise SystemExit(f"bench: a sweep trial failed: {r.error}")
        trials[r.config["method"]] = {"f1_macro": float(r.metrics["f1_macro"]), "seconds": float(r.metrics["time_total_s"]),
                                      # the trial's own seconds in optimizer steps and in evaluations (with the one before training)
                                      "train_s": float(r.metrics["train_time_s"]), "eval_s": float(r.metrics["eval_time_s"])}
    return {"seconds": seconds, "trials": trials}


def running_cluster_sweep(workdir: Path, overrides: list[str]) -> dict[str, Any]:
    """``sweep`` x1 on a single-node Ray started here (untimed, like a user's ``ray start --head``)."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray_cli, "start", "--head", "--include-dashboard", "true", "--disable-usage-stats"], check=True, capture_output=True)
    try:
        return sweep(1, workdir, "auto", overrides, address="auto")
    finally:
        import ray

        ray.shutdown()  # leave the cluster before stopping it (a driver left joined waits 60 s, then dies)
        subprocess.run([ray_cli, "stop", "--force"], check=False, capture_output=True)


def report(results: dict[str, Any]) -> str:
    base = results["plain"]["seconds"]
    n = len(results["plain"]["trials"])
    lines = ["| run | wall s | ratio vs plain | overhead per trial s |", "|---|---|---|---|"]
    for name, res in results.items():
        extra = "" if name == "plain" else f"{(res['seconds'] - base) / n:+.1f}"
        lines.append(f"| {name} | {res['seconds']:.1f} | {res['seconds'] / base:.2f} | {extra} |")
    lines += ["", "| config | " + " | ".join(f"{k} F1 macro" for k in results) + " |", "|---" * (len(results) + 1) + "|"]
    for method in results["plain"]["trials"]:
        lines.append(f"| {method} | " + " | ".join(f"{res['trials'][method]['f1_macro']:.3f}" for res in results.values()) + " |")
    lines += ["", "| config | " + " | ".join(f"{k} steps s / evals s" for k in results) + " |", "|---" * (len(results) + 1) + "|"]
    for method in results["plain"]["trials"]:
        lines.append(f"| {method} | " + " | ".join(f"{res['trials'][method]['train_s']:.1f} / {res['trials'][method]['eval_s']:.1f}" for res in results.values()) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2], help="sweep runs to time (trials at once)")
    p.add_argument("--modes", nargs="+", default=["true", "false"], help="resources.in_process values (false: Train workers, timed one at a time only)")
    p.add_argument("--train-rows", type=int, help="train on this many tweets (the study's 800 by default: ~10 s trials; "
                   "3200 gives trials of a realistic length, ~40 s each)")
    p.add_argument("--running", action="store_true", help="also time a study that joins a Ray started beforehand (ray start --head) "
                   "and logs into an existing MLflow store: a user's next study")
    p.add_argument("--json", help="also write the raw numbers here")
    args = p.parse_args()
    overrides = [f"data.max_train_rows={args.train_rows}"] if args.train_rows else []
    study = load_study(str(STUDY), overrides)
    results: dict[str, Any] = {"plain": plain(study)}
    with tempfile.TemporaryDirectory() as tmp:
        for c in args.concurrency:
            for mode in args.modes:
                if mode == "false" and c > 1 and "true" in args.modes:
                    continue
                results[f"sweep x{c}" + (" train workers" if mode == "false" else "")] = sweep(c, Path(tmp), mode, overrides)
        if args.running:
            results["sweep x1, Ray up, store exists"] = running_cluster_sweep(Path(tmp), overrides)
    text = report(results)
    print(f"\n{platform.node()}: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads available\n{text}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
