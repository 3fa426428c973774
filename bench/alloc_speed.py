"""Benchmark: the memory allocator under a trial's CPU training loop.

The same three fixed configs as ``sweep_overhead.py`` (``bench/emotion_bench.yaml``: LoRA, QLoRA
and IA3 on 800 real emotion tweets, one CPU thread, bf16 autocast where the CPU has it) are
trained by its plain loop, on a thread as a trial's loop runs (Tune's function trainable,
Train V2's worker), in a fresh process per allocator:

- ``glibc``: the system's malloc (what a process gets by default);
- ``jemalloc, its defaults``: Ray's bundled jemalloc preloaded, nothing else set;
- ``jemalloc as trials get it``: the environment ``trainables.training.allocator.worker_runtime_env``
  gives a CPU study's trial processes (``resources.jemalloc: true``, the default).

Runs alternate (glibc, jemalloc, trials, glibc, ...) ``--repeats`` times, so drift in the
machine's speed spreads over all three. Prints, per allocator, the median seconds in optimizer
steps and in evals per config, the process's minor page faults, and the ratio of step time to
glibc's. Run from the repo root:

    .venv/bin/python bench/alloc_speed.py [--repeats 3] [--json out.json]     # ~8 min on 2 CPUs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def child() -> dict[str, Any]:
    """Train the three configs here, each on a thread; their times and this process's faults."""
    import sweep_overhead as bench

    from sweeps.study import load_study
    from trainables.data import load as data_mod
    from trainables.training.allocator import uses_jemalloc
    from trainables.kinds import TASKS
    from trainables.model.load import load_tokenizer

    study = load_study(str(bench.STUDY), [])
    prepared = data_mod.prepare(study.data, TASKS[study.task], load_tokenizer(study.model), study.training.max_length, study.training.seed)
    assert study.space is not None
    runs: dict[str, Any] = {}
    for config in study.space.grid_points(study.methods):
        out: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: out.update(bench.plain_run(study, prepared, config)))
        thread.start()
        thread.join()
        runs[config["method"]] = {"train_s": out["train_s"], "eval_s": out["eval_s"], "f1_macro": out["f1_macro"]}
    return {"runs": runs, "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt, "jemalloc": uses_jemalloc()}


def allocators() -> dict[str, dict[str, str]]:
    """Each allocator's environment on top of this process's (LD_PRELOAD / MALLOC_CONF unset)."""
    from core.specs import ResourcesSpec
    from trainables.training.allocator import jemalloc, worker_runtime_env

    lib = jemalloc()
    if lib is None:
        raise SystemExit("bench: this Ray ships no libjemalloc.so")
    return {
        "glibc": {},
        "jemalloc, its defaults": {"LD_PRELOAD": lib},
        "jemalloc as trials get it": worker_runtime_env(ResourcesSpec(workers=1, cpus_per_worker=1, gpus_per_worker=0))["env_vars"],
    }


def cpu_model() -> str:
    """The CPU's model name (allocator costs differ between machines), else its architecture."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.machine())
    except OSError:
        return platform.machine()


def run_child(env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child"], env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: a run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(results: dict[str, list[dict[str, Any]]]) -> str:
    methods = list(next(iter(results.values()))[0]["runs"])
    med = {name: {m: {k: statistics.median(r["runs"][m][k] for r in runs) for k in ("train_s", "eval_s")} for m in methods}
           for name, runs in results.items()}
    base = med["glibc"]
    head = " | ".join(f"{m} steps s / evals s" for m in methods)
    lines = [f"| allocator | {head} | minor page faults | steps vs glibc |", "|---" * (len(methods) + 3) + "|"]
    for name, runs in results.items():
        cells = " | ".join(f"{med[name][m]['train_s']:.2f} / {med[name][m]['eval_s']:.2f}" for m in methods)
        faults = statistics.median(r["minor_faults"] for r in runs)
        ratio = sum(med[name][m]["train_s"] for m in methods) / sum(base[m]["train_s"] for m in methods)
        lines.append(f"| {name} | {cells} | {faults / 1e6:.2f}M | {ratio:.2f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="runs of each allocator, alternating")
    p.add_argument("--json", help="also write the raw numbers here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child()))
        return 0
    for name in ("LD_PRELOAD", "MALLOC_CONF"):  # the runs' allocators are this bench's to set, yours too
        os.environ.pop(name, None)
    envs = allocators()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in envs}
    for i in range(args.repeats):
        for name, env in envs.items():
            results[name].append(run_child(env))
            expected = name != "glibc"
            if results[name][-1]["jemalloc"] != expected:
                raise SystemExit(f"bench: {name!r} ran {'without' if expected else 'with'} jemalloc")
            print(f"run {i + 1}/{args.repeats} {name}: {json.dumps(results[name][-1]['runs'])}", flush=True)
    print(f"\n{cpu_model()}, {os.cpu_count()} CPUs\n{report(results)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "env": envs, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
