"""Benchmark: a study of a thousand trials through the real driver, Ray Tune, MLflow and
``sweeps.report``: what the driver adds per trial, whether every trial lands in MLflow exactly
once, how long the report of such a study takes, and whether the driver's memory stays flat.

The trials are as cheap as a real trial gets, so the driver's share shows: the tiny from-config
Llama (``trainables.model.tiny``), generated emotion rows, two optimizer steps and one eval
point, no before-training scores; random search over a continuous learning rate and three
ranks (a space that is never spent), no early stopping (Tune reuses each trial actor, as for
every FIFO study), ``--concurrency`` trials at a time, each on one CPU. The study runs through
``python -m sweeps.run``'s own ``main`` in this process, on a local Ray and a local SQLite
MLflow store, exactly as a user's would.

Measured:
- wall time of the sweep and per trial; each trial's own time (its ``wall_time_s``: from
  building its model to its last report, measured in the trial; a reused actor adds ~0.1 s of
  start-up before that, ``startup_s``); the driver's overhead per trial
  = (wall - sum of trial times / concurrency) / trials:
  what the driver, Tune's bookkeeping and the MLflow logger add beyond the trials themselves,
  with the sweep's fixed start (Ray, data, floors) and end (report) spread over the trials, and
  the same within the trials' window (first trial's start to last trial's end) without them,
  and per tenth of the study (does the driver's cost per trial grow with the trials behind it?);
- the driver process's resident memory, sampled every second: a tenth into the trials' window,
  at the last trial's end (its growth per 100 trials between the two: flat = a few MiB), and
  at the very end, after the study read every trial back for its summary and report;
- MLflow: one parent run, one child run per trial, each with its trial name once and its
  metric; ``sweeps.report``'s wall time on the finished study;
- the plain baseline for the memory (``--no-baseline`` skips it): a plain ``tune.Tuner`` of
  a function trainable, in its own process, with the same trials, concurrency, results per trial
  and numeric keys per result as the study's trials reported (read back from their
  ``result.json``), and once more with the metric alone. Tune keeps every trial's record for the
  ``ResultGrid`` (its last result and, per numeric key, running min/max/avg and two moving
  windows), so no Tune driver is flat; what ours must show is that it adds nothing beyond that.

    .venv/bin/python bench/thousand_trials.py [--trials 1000] [--concurrency 2] [--json bench/results/thousand_trials.json] [--count-objects SECONDS] [--no-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def study(model: str, trials: int, concurrency: int) -> dict[str, Any]:
    return {
        "name": "thousand",
        "model": model,
        "task": "single_label",
        "data": {"source": "generated", "name": "emotion", "rows": 96},
        "methods": ["lora"],
        "search_space": {"name": "small_encoder", "overrides": {
            "lora_r": [2, 4, 8], "lora_alpha_ratio": 2, "lora_dropout": 0.0, "warmup_ratio": 0.0, "lr_scheduler": "linear",
            "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
        }},
        "search": {"algorithm": "random", "num_samples": trials, "max_concurrent_trials": concurrency, "metric": "f1_macro", "mode": "max", "seed": 0},
        "scheduler": {"name": "none"},
        "training": {"max_steps": 2, "eval_every_steps": 2, "batch_size": 8, "max_length": 16, "eval_base": False},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "tracking": {"register": False},
    }


class MemorySampler(threading.Thread):
    """This process's resident memory every ``every`` seconds, with the time it was read."""

    def __init__(self, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.is_set():
            self.samples.append((time.time(), me.memory_info().rss / 2**20))
            self.stop.wait(self.every)


# what Tune adds to every result itself; the baseline's trainable reports the rest
TUNE_OWN = {"done", "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "pid", "time_since_restore", "iterations_since_restore"}


def reported_keys(results: Path) -> tuple[list[str], int]:
    """The numeric keys one trial of the study reported to Tune per result (without Tune's own
    and the ``config/`` ones, which the baseline's sampled config brings) and its results per trial."""
    one = next(results.rglob("result.json"))
    rows = [json.loads(line) for line in one.read_text().splitlines() if line.strip()]
    keys = sorted(k for k, v in rows[-1].items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in TUNE_OWN)
    return keys, len(rows)


def growth_per_100(samples: list[tuple[float, float]], start: float, end: float, trials: int) -> tuple[float, float, float]:
    """Resident memory a tenth into [start, end] and at its end, and the growth per 100 trials between."""
    early = next(m for ts, m in samples if ts >= start + 0.1 * (end - start))
    late = [m for ts, m in samples if ts <= end][-1]
    return early, late, (late - early) / (0.9 * trials) * 100


def plain_tune(keys: list[str], results: int, trials: int, concurrency: int) -> dict[str, Any]:
    """Runs in its own process: a plain Tune study of a function trainable that reports
    ``keys`` (numbers) ``results`` times; its driver's memory growth per 100 trials."""
    import ray
    from ray import tune

    def trainable(config: dict[str, Any]) -> None:
        for step in range(results):
            tune.report({k: config["learning_rate"] * (i + 1) + step for i, k in enumerate(keys)})

    ray.init(num_cpus=concurrency, include_dashboard=False, log_to_driver=False)
    sampler = MemorySampler()
    sampler.start()
    started = time.time()
    tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"learning_rate": tune.loguniform(1e-4, 1e-2)},
        tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=concurrency, metric=keys[0], mode="max", reuse_actors=True),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="thousand-plain-"), verbose=0),
    ).fit()
    ended = time.time()
    sampler.stop.set()
    sampler.join()
    early, late, growth = growth_per_100(sampler.samples, started, ended, trials)
    return {"numeric_keys": len(keys), "results_per_trial": results, "wall_s": round(ended - started, 1),
            "rss_mib_at_10pct": round(early, 1), "rss_mib_at_end": round(late, 1), "growth_per_100_trials": round(growth, 2)}


def baseline(keys: list[str], results: int, trials: int, concurrency: int) -> dict[str, Any]:
    """``plain_tune`` in a fresh process (a fresh Ray and heap, as the study had)."""
    spec = json.dumps({"keys": keys, "results": results, "trials": trials, "concurrency": concurrency})
    done = subprocess.run([sys.executable, __file__, "--plain-tune", spec], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def trial_figures(kids: list, concurrency: int) -> dict[str, Any]:
    """From the trials' MLflow runs: each trial's own time (``wall_time_s``, measured in the
    trial from building its model to its last report) against the time the driver took per trial,
    over the whole window and per tenth of the study in start order (a driver whose cost per
    trial grows with the trials behind it shows here)."""
    runs = sorted((r for r in kids if r.info.end_time), key=lambda r: r.info.start_time)
    own = [r.data.metrics.get("wall_time_s", 0.0) for r in runs]
    busy = sum(own) / concurrency
    window = (runs[-1].info.end_time - runs[0].info.start_time) / 1000
    tenths = []
    size = max(len(runs) // 10, 1)
    for i in range(0, len(runs) - size + 1, size):
        part = runs[i:i + size]
        span = (part[-1].info.start_time - part[0].info.start_time) / 1000 * len(part) / max(len(part) - 1, 1)
        tenths.append(round((span - sum(own[i:i + size]) / concurrency) / len(part), 3))
    return {
        "trial_own_s_mean": round(sum(own) / len(own), 3),  # the trial's own wall_time_s
        "busy_s": round(busy, 1),  # the trials' own time / concurrency: the wall with a driver that costs nothing
        "trials_window_s": round(window, 1),  # first trial's start to last trial's end
        "driver_overhead_per_trial_in_window_s": round((window - busy) / len(runs), 3),
        "driver_overhead_per_trial_by_tenth_s": tenths,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--count-objects", type=float, metavar="SECONDS", help="the driver's Python objects by type, SECONDS into the sweep and at its end: which kinds grow with the trials")
    ap.add_argument("--no-baseline", action="store_true", help="skip the plain Tune studies the driver's memory is compared with")
    ap.add_argument("--plain-tune", metavar="JSON", help=argparse.SUPPRESS)  # the baseline's own process
    args = ap.parse_args()
    if args.plain_tune:
        print(json.dumps(plain_tune(**json.loads(args.plain_tune))))
        return 0
    if args.count_objects:
        import collections
        import gc

        def census() -> collections.Counter:
            gc.collect()
            return collections.Counter(type(o).__qualname__ for o in gc.get_objects())

        marks: list = []
        threading.Timer(args.count_objects, lambda: marks.append(census())).start()

    import mlflow

    from sweeps import report
    from sweeps.run import main as run_main
    from trainables.model.tiny import write_tiny_model

    work = Path(tempfile.mkdtemp(prefix="thousand-"))
    os.chdir(work)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    model = str(write_tiny_model("llama", work / "tiny-llama"))
    path = work / "study.yaml"
    path.write_text(yaml.safe_dump(study(model, args.trials, args.concurrency), sort_keys=False))

    sampler = MemorySampler()
    sampler.start()
    started = time.time()
    rc = run_main([str(path)])
    wall = time.time() - started
    sampler.stop.set()
    sampler.join()
    assert rc == 0, f"the sweep exited {rc}"
    if args.count_objects:
        grown = census()
        grown.subtract(marks[0])
        print("objects that grew:", ", ".join(f"{name} +{n}" for name, n in grown.most_common(25)))

    client = mlflow.tracking.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("thousand")
    all_runs = client.search_runs([exp.experiment_id], max_results=50_000)
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
    names = [r.data.tags.get("trial_name") for r in kids]
    metric = study(model, args.trials, args.concurrency)["search"]["metric"]
    missing_metric = sum(metric not in r.data.metrics for r in kids)
    trials = trial_figures(kids, args.concurrency)

    t = time.time()
    assert report.main([parents[0].info.run_id, "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--out", str(work / "report")]) == 0
    report_s = time.time() - t

    samples = sampler.samples
    # memory while trials run: from a tenth into the trials' window to the last trial's end
    # (the study's end then reads every trial back for its summary and report)
    first_start = min(r.info.start_time for r in kids) / 1000
    last_end = max(r.info.end_time for r in kids if r.info.end_time) / 1000
    early, late, growth = growth_per_100(samples, first_start, last_end, args.trials)
    end = samples[-1][1]
    plain = {}
    if not args.no_baseline:
        keys, results = reported_keys(work / "ray_results")
        plain = {"same_keys": baseline(keys, results, args.trials, args.concurrency),
                 "metric_only": baseline([metric], results, args.trials, args.concurrency)}
    out = {
        "trials": args.trials, "concurrency": args.concurrency, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "wall_s": round(wall, 1), "wall_per_trial_s": round(wall / args.trials, 3),
        "driver_overhead_per_trial_s": round((wall - trials["busy_s"]) / args.trials, 3),
        **trials,
        "mlflow": {"parents": len(parents), "children": len(kids), "distinct_trial_names": len(set(names)), "children_without_metric": missing_metric,
                   "parent_trials_completed": parents[0].data.metrics.get("trials_completed") if parents else None},
        "report_s": round(report_s, 1),
        "driver_rss_mib": {"at_10pct_of_trials": round(early, 1), "at_last_trial_end": round(late, 1), "end": round(end, 1), "max": round(max(m for _, m in samples), 1),
                           "growth_per_100_trials": round(growth, 2)},
        # plain Tune's driver, same trials and results: with the keys our trials report, and with the metric alone
        "plain_tune": plain,
        "growth_vs_plain_same_keys": round(growth / plain["same_keys"]["growth_per_100_trials"], 2) if plain else None,
        "folder": str(work),
    }
    print(json.dumps(out, indent=1))
    if args.json:
        Path(REPO / args.json if not os.path.isabs(args.json) else args.json).write_text(json.dumps(out, indent=1) + "\n")
    ok = len(parents) == 1 and len(kids) == len(set(names)) == args.trials and missing_metric == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
