"""Benchmark: where a trial's seconds go before its first optimizer step, and between trials.

Runs short trials of ``bench/emotion_bench.yaml`` (LoRA, QLoRA, IA3 on MiniLM; 128 real emotion
tweets, 4 steps each, so nearly all of a trial is its fixed cost) through the real sweep
(local Ray, Tune, a Train V2 ``TorchTrainer`` per trial, MLflow), one at a time by default,
and splits each trial's start-up using what the trial reports (``startup_*`` metrics:
``trainables/loop.py``) and Ray's own task events (when each actor was asked for, started
running, finished ``__init__``):

- tune actor:   Tune's trial actor created (scheduled) -> its ``__init__`` done (fresh actors only;
                with ``reuse_actors`` later trials reuse it);
- train setup:  the trial function starts ``TorchTrainer.fit()`` -> the worker's function runs
                (Train controller, placement group, worker process, torch.distributed setup);
- imports:      the worker's function -> the trial recipe starts (peft, transformers, our modules);
- recipe:       data from the object store, model build, loaders, optimizer, first step;
- after:        the worker's last moment -> the next trial's Train controller is asked for
                (worker group shutdown, Tune bookkeeping, MLflow logging of the ended trial).

    .venv/bin/python bench/trial_startup.py [--repeats 2] [--concurrency 1] [--json out.json]
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


def run(repeats: int, concurrency: int, workdir: Path) -> dict[str, Any]:
    from sweeps.tuning.tuner import run_study

    study = load_study(str(STUDY), [
        "data.max_train_rows=128", "data.max_eval_rows=64", "training.evals_per_epoch=1",
        "training.eval_base=false", f"search.grid_repeats={repeats}",
        f"search.max_concurrent_trials={concurrency}",
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
    # Trials are matched to Train controllers by start order (exact when one runs at a time).
    trials.sort(key=lambda t: t["first_report"])
    rows = []
    for i, (trial, ctl) in enumerate(zip(trials, controllers)):
        fresh = [a for a in events.get("ImplicitFunc", []) if ctl["created"] - 5.0 < a["ready"] <= ctl["created"] + 0.5]
        end = ctl["created"] + trial["startup_s"] - trial["startup_recipe_s"] + trial["worker_wall_s"]
        nxt = controllers[i + 1]["created"] if i + 1 < len(controllers) else None
        rows.append({
            "tune_actor_s": (fresh[0]["ready"] - fresh[0]["created"]) if fresh else 0.0,
            "train_setup_s": trial["startup_s"] - trial["startup_worker_s"],
            "imports_s": trial["startup_worker_s"] - trial["startup_recipe_s"],
            "recipe_s": trial["startup_recipe_s"],
            "after_s": (nxt - end) if (nxt is not None and concurrency == 1) else None,
            "train_time_s": trial["train_time_s"],
        })
    for row in rows:
        row["scheduled_to_first_step_s"] = row["tune_actor_s"] + row["train_setup_s"] + row["imports_s"] + row["recipe_s"]
    return {"wall_s": wall, "trials": rows, "concurrency": concurrency}


def report(result: dict[str, Any]) -> str:
    cols = ["scheduled_to_first_step_s", "tune_actor_s", "train_setup_s", "imports_s", "recipe_s", "after_s", "train_time_s"]
    lines = ["| trial | " + " | ".join(c.removesuffix("_s").replace("_", " ") + " s" for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for i, row in enumerate(result["trials"], 1):
        lines.append(f"| {i} | " + " | ".join("-" if row[c] is None else f"{row[c]:.1f}" for c in cols) + " |")
    known = {c: [r[c] for r in result["trials"] if r[c] is not None] for c in cols}
    means = {c: statistics.mean(v) if v else None for c, v in known.items()}
    lines.append("| mean | " + " | ".join("-" if means[c] is None else f"{means[c]:.1f}" for c in cols) + " |")
    n = len(result["trials"])
    lines.append(f"\n{n} trials, {result['concurrency']} at a time: sweep wall {result['wall_s']:.1f} s "
                 f"({result['wall_s'] / n:.1f} s per trial, of which training {means['train_time_s']:.1f} s)")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2, help="grid repeats: 3 trials each")
    p.add_argument("--concurrency", type=int, default=1, help="trials at once ('after' is only measured at 1)")
    p.add_argument("--json", help="also write the raw numbers here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.repeats, args.concurrency, Path(tmp))
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
