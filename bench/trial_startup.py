"""Benchmark: where a trial's seconds go before its first optimizer step, and between trials.

Runs short trials of ``bench/emotion_bench.yaml`` (LoRA, QLoRA, IA3 on MiniLM; 128 real emotion
tweets, 4 steps each, so nearly all of a trial is its fixed cost) through the real sweep
(local Ray, Tune, MLflow), one at a time by default, twice in one run: with a Train V2
``TorchTrainer`` (controller + worker) per trial (``resources.in_process: false``) and with the
loop in the trial's own Tune actor (``in_process: true``, the one-node default). It splits each
trial's start-up using what the trial reports (``startup_*`` metrics: ``trainables/training/loop.py``) and
Ray's own task events (when each actor was asked for, started running, finished ``__init__``):

- tune actor:   Tune's trial actor created (scheduled) -> its ``__init__`` done (fresh actors only;
                with ``reuse_actors`` later trials reuse it);
- train setup:  the trial function starts ``TorchTrainer.fit()`` -> the worker's function runs
                (Train controller, placement group, worker process, torch.distributed setup);
- imports:      the worker's function -> the trial recipe starts (peft, transformers, our modules);
- recipe:       data from the object store, model build, loaders, optimizer, first step;
- after:        the worker's last moment -> the next trial's Train controller is asked for
                (worker group shutdown, Tune bookkeeping, MLflow logging of the ended trial;
                Train workers only: in process there is no controller to time it by).

Each mode's sweep wall time per trial is the number that includes everything.

    .venv/bin/python bench/trial_startup.py [--repeats 2] [--concurrency 1] [--modes false,true] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps.study import load_study  # noqa: E402

STUDY = Path(__file__).with_name("emotion_bench.yaml")


def actor_events(since: float) -> dict[str, list[dict[str, float]]]:
    """Per actor class: when each actor was asked for, started running, finished ``__init__``
    (seconds after ``since``), in order of creation."""
    from ray.util.state import list_tasks

    out: dict[str, list[dict[str, float]]] = {}
    for t in list_tasks(detail=True, limit=10000, filters=[("type", "=", "ACTOR_CREATION_TASK")]):
        name = t.func_or_class_name.split(".")[0]
        out.setdefault(name, []).append({
            "created": t.creation_time_ms / 1000 - since,
            "running": (t.start_time_ms or 0) / 1000 - since,
            "ready": (t.end_time_ms or 0) / 1000 - since,
        })
    for events in out.values():
        events.sort(key=lambda e: e["created"])
    return out


def run(repeats: int, concurrency: int, workdir: Path, in_process: str) -> dict[str, Any]:
    from sweeps.tuning.tuner import run_study

    study = load_study(str(STUDY), [
        "data.max_train_rows=128", "data.max_eval_rows=64", "training.evals_per_epoch=1",
        "training.eval_base=false", f"search.grid_repeats={repeats}",
        f"search.max_concurrent_trials={concurrency}", f"resources.in_process={in_process}",
        f"storage_path={workdir / 'ray_results'}", f"tracking.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
    ])
    since = time.time()
    ray.init(address="local", include_dashboard=True, log_to_driver=False)
    try:
        started = time.time()
        outcome = run_study(study)
        wall = time.time() - started
        events = actor_events(since)
    finally:
        ray.shutdown()
    trials = []
    for r in outcome.results:
        if r.error is not None:
            raise SystemExit(f"bench: a trial failed: {r.error}")
        first, last = r.metrics_dataframe.iloc[0], r.metrics_dataframe.iloc[-1]
        trials.append({k: float(first[k]) for k in ("startup_s", "startup_worker_s", "startup_recipe_s")}
                      | {"worker_wall_s": float(last["wall_time_s"]), "train_time_s": float(last["train_time_s"]),
                         "first_report": float(first["timestamp"])})
    controllers = events.get("TrainController", [])
    actors = events.get("ImplicitFunc", [])
    # Trials are matched to Train controllers by start order (exact when one runs at a time);
    # in process, to Tune actors in creation order (a reused actor serves the later trials).
    trials.sort(key=lambda t: t["first_report"])
    rows = []
    for i, trial in enumerate(trials):
        ctl = controllers[i] if i < len(controllers) else None
        if ctl is not None:
            fresh = [a for a in actors if ctl["created"] - 5.0 < a["ready"] <= ctl["created"] + 0.5]
        else:
            fresh = actors[i:i + 1]
        after = None
        if ctl is not None and i + 1 < len(controllers) and concurrency == 1:
            after = controllers[i + 1]["created"] - (ctl["created"] + trial["startup_s"] - trial["startup_recipe_s"] + trial["worker_wall_s"])
        rows.append({
            "tune_actor_s": (fresh[0]["ready"] - fresh[0]["created"]) if fresh else 0.0,
            "train_setup_s": trial["startup_s"] - trial["startup_worker_s"],
            "imports_s": trial["startup_worker_s"] - trial["startup_recipe_s"],
            "recipe_s": trial["startup_recipe_s"],
            "after_s": after,
            "train_time_s": trial["train_time_s"],
        })
    for row in rows:
        row["scheduled_to_first_step_s"] = row["tune_actor_s"] + row["train_setup_s"] + row["imports_s"] + row["recipe_s"]
    return {"wall_s": wall, "trials": rows, "concurrency": concurrency, "in_process": in_process}


def report(result: dict[str, Any]) -> str:
    cols = ["scheduled_to_first_step_s", "tune_actor_s", "train_setup_s", "imports_s", "recipe_s", "after_s", "train_time_s"]
    lines = ["| trial | " + " | ".join(c.removesuffix("_s").replace("_", " ") + " s" for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for i, row in enumerate(result["trials"], 1):
        lines.append(f"| {i} | " + " | ".join("-" if row[c] is None else f"{row[c]:.1f}" for c in cols) + " |")
    known = {c: [r[c] for r in result["trials"] if r[c] is not None] for c in cols}
    means = {c: statistics.mean(v) if v else None for c, v in known.items()}
    lines.append("| mean | " + " | ".join("-" if means[c] is None else f"{means[c]:.1f}" for c in cols) + " |")
    n = len(result["trials"])
    lines.insert(0, f"in_process: {result['in_process']}\n")
    lines.append(f"\n{n} trials, {result['concurrency']} at a time: sweep wall {result['wall_s']:.1f} s "
                 f"({result['wall_s'] / n:.1f} s per trial, of which training {means['train_time_s']:.1f} s)")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2, help="grid repeats: 3 trials each")
    p.add_argument("--concurrency", type=int, default=1, help="trials at once ('after' is only measured at 1)")
    p.add_argument("--modes", default="false,true", help="resources.in_process values to run, in this order")
    p.add_argument("--json", help="also write the raw numbers here")
    args = p.parse_args()
    results = {}
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            results[mode] = run(args.repeats, args.concurrency, Path(tmp), mode)
        print(report(results[mode]) + "\n")
    if "false" in results and "true" in results:
        per_trial = {m: r["wall_s"] / len(r["trials"]) for m, r in results.items()}
        first = {m: statistics.mean(t["scheduled_to_first_step_s"] for t in r["trials"]) for m, r in results.items()}
        print(f"in process vs Train workers: {per_trial['true']:.1f} vs {per_trial['false']:.1f} s per trial "
              f"({per_trial['false'] / per_trial['true']:.2f}x faster), start-up {first['true']:.1f} vs {first['false']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
