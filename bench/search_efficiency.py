"""Benchmark: how much compute a search needs to find (nearly) the best configuration.

The demo study (``sweeps/studies/emotion_demo.yaml``: MiniLM, LoRA/QLoRA/IA3, generated
emotion data, 60 steps per trial) on a discrete version of its space, so that a grid can
cover all of it: method x rank {4, 8} x alpha ratio {2, 4} x learning rate {1e-3, 3e-3, 1e-2}
(27 points; dropout 0, 10% warmup, linear decay). Searched two ways, one after the other:

- ``grid``: every point, every trial to the end (what a grid sweep by hand costs);
- ``tpe+asha``: Optuna TPE over the same points for a third of the grid's trials, ASHA
  stopping the trailing ones (the demo's grace period 2 eval points, reduction 2), several seeds.

For each run, trials are taken in the order they finished; the compute a run needed is the
sum of its trials' optimizer steps (and trial seconds, start-up included) up to the first trial
whose best validation macro F1 is within 1% of the grid's best. Prints one row per run.

    .venv/bin/python bench/search_efficiency.py [--seeds 0 1 2] [--json out.json]   # ~20 min on 2 CPUs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPACE = ("search_space={name: small_encoder, overrides: {lora_r: [4, 8], lora_alpha_ratio: [2, 4], lora_dropout: [0.0], "
         "learning_rate: [0.001, 0.003, 0.01], warmup_ratio: [0.1], lr_scheduler: [linear]}}")
WITHIN = 0.01  # "found": within 1% of the grid's best


def run(name: str, overrides: list[str], workdir: Path) -> list[dict[str, Any]]:
    """One study run; its trials in the order they finished."""
    from sweeps.study import load_study
    from sweeps.tuning.tuner import run_study

    out = workdir / name
    out.mkdir(parents=True)
    study = load_study("emotion_demo", [SPACE, "final=null", *overrides, f"storage_path={out / 'ray_results'}",
                                        f"tracking.tracking_uri=sqlite:///{out / 'mlflow.db'}"])
    outcome = run_study(study, local=True)
    trials = []
    for r in outcome.results:
        df = r.metrics_dataframe
        if r.error is not None or df is None or "f1_macro" not in df:
            continue
        trials.append({"config": {k: v for k, v in r.config.items()}, "best": float(df["f1_macro"].max()),
                       "steps": int(df["step"].iloc[-1]), "seconds": float(df["time_total_s"].iloc[-1]),
                       "finished": float(df["timestamp"].iloc[-1])})
    trials.sort(key=lambda t: t["finished"])
    return trials


def compute_to_reach(trials: list[dict[str, Any]], target: float) -> Optional[dict[str, float]]:
    steps = seconds = 0.0
    for n, t in enumerate(trials, 1):
        steps += t["steps"]
        seconds += t["seconds"]
        if t["best"] >= target:
            return {"steps": steps, "seconds": seconds, "trials": n}
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="TPE+ASHA runs, one per seed")
    p.add_argument("--json", help="also write the raw numbers here")
    args = p.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs["grid"] = run("grid", ["search.algorithm=grid", "search.grid_repeats=1", "scheduler.name=none"], Path(tmp))
        for seed in args.seeds:
            runs[f"tpe+asha seed {seed}"] = run(f"tpe{seed}", ["search.algorithm=optuna", "search.num_samples=9", f"search.seed={seed}",
                                                              "scheduler.name=asha"], Path(tmp))
    grid_best = max(t["best"] for t in runs["grid"])
    target = grid_best * (1 - WITHIN)
    full = {"steps": sum(t["steps"] for t in runs["grid"]), "seconds": sum(t["seconds"] for t in runs["grid"])}
    print(f"\ngrid best validation macro F1 {grid_best:.4f}; target (within 1%) {target:.4f}; full grid {len(runs['grid'])} trials, "
          f"{full['steps']:.0f} steps, {full['seconds']:.0f} trial-s")
    print("| run | trials | best macro F1 | steps to target | trial-s to target | steps vs full grid | all steps |\n|---|---|---|---|---|---|---|")
    summary = {}
    for name, trials in runs.items():
        reached = compute_to_reach(trials, target)
        all_steps = sum(t["steps"] for t in trials)
        best = max(t["best"] for t in trials)
        cells = ("not reached", "-", "-") if reached is None else (f"{reached['steps']:.0f} ({reached['trials']} trials)", f"{reached['seconds']:.0f}", f"{reached['steps'] / full['steps']:.2f}")
        print(f"| {name} | {len(trials)} | {best:.4f} | " + " | ".join(cells) + f" | {all_steps} |")
        summary[name] = {"best": best, "reached": reached, "all_steps": all_steps, "trials": trials}
    if args.json:
        Path(args.json).write_text(json.dumps({"grid_best": grid_best, "target": target, "full_grid": full, "runs": summary}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
