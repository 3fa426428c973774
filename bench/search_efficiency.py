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
A grid's own order decides how soon it gets there (the demo's puts a winning learning rate
third), so the table also gives the grid in a random order, in expectation: with K of its N
points within 1%, the first such point is trial (N + 1) / (K + 1) on average; that is also what
random search over the same points costs.

``--data real`` runs the same space on real tweets (``../shared/data/emotion``: 1,600 training,
400 validation rows, 100 steps per trial) instead of the demo's generated data, where far fewer
points come near the best; ``--data tweeteval`` on TweetEval's emotion tweets
(``../shared/data/tweet_eval_emotion``, 1,600 training and its 374 validation rows, 100 steps).

    .venv/bin/python bench/search_efficiency.py [--data generated|real|tweeteval] [--seeds 0 1 2] [--json out.json]   # ~20 min on 2 CPUs
    .venv/bin/python bench/search_efficiency.py --from-json bench/results/search_efficiency.json             # the table again, from a run's raw numbers
    .venv/bin/python bench/search_efficiency.py --data real --grid-from OUT.json --json OUT2.json            # new TPE runs against an earlier run's grid
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
# --data real: the demo's model and space on a slice of the real dair-ai/emotion tweets
REAL_DATA = [
    "data={source: local, files: {train: ../shared/data/emotion/train.txt, validation: ../shared/data/emotion/val.txt}, "
    "format: csv, delimiter: ';', column_names: [text, label], splits: {train: train, validation: validation}, "
    "max_train_rows: 1600, max_eval_rows: 400}",
    "training.epochs=2", "training.max_length=48", "training.evals_per_epoch=3",  # 100 steps, 6 eval points (ASHA rungs)
]
# --data tweeteval: the same on TweetEval emotion (../shared/data/tweet_eval_emotion: 4 classes, other
# tweets and labels than dair-ai's), sliced and scheduled as --data real: a second table for the replays
TWEETEVAL = "../shared/data/tweet_eval_emotion"
TWEETEVAL_DATA = [
    f"data={{source: local, format: lines, files: {{train: {TWEETEVAL}/train_text.txt, validation: {TWEETEVAL}/val_text.txt}}, "
    f"label_files: {{train: {TWEETEVAL}/train_labels.txt, validation: {TWEETEVAL}/val_labels.txt}}, "
    "label_names: [anger, joy, optimism, sadness], splits: {train: train, validation: validation}, max_train_rows: 1600, max_eval_rows: 400}",
    *REAL_DATA[1:],
]
DATA = {"generated": [], "real": REAL_DATA, "tweeteval": TWEETEVAL_DATA}  # --data: overrides of the study


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
        evals = df.dropna(subset=["f1_macro"])
        trials.append({"config": {k: v for k, v in r.config.items()}, "best": float(df["f1_macro"].max()),
                       "steps": int(df["step"].iloc[-1]), "seconds": float(df["time_total_s"].iloc[-1]),
                       "finished": float(df["timestamp"].iloc[-1]),
                       # each eval point: (step, macro F1, trial seconds so far); bench/search_replay.py replays these
                       "curve": [[int(a), float(b), float(c)] for a, b, c in zip(evals["step"], evals["f1_macro"], evals["time_total_s"])]})
    trials.sort(key=lambda t: t["finished"])
    return trials


def grid_random_order(trials: list[dict[str, Any]], target: float) -> Optional[dict[str, float]]:
    """The grid's compute to ``target`` with its points in a random order, in expectation:
    the first of K hits among N points comes at trial (N + 1) / (K + 1) on average (every grid
    trial runs its full budget, so steps and seconds scale with the mean trial)."""
    hits = sum(t["best"] >= target for t in trials)
    if not hits:
        return None
    n = (len(trials) + 1) / (hits + 1)
    mean_steps = sum(t["steps"] for t in trials) / len(trials)
    mean_seconds = sum(t["seconds"] for t in trials) / len(trials)
    return {"steps": n * mean_steps, "seconds": n * mean_seconds, "trials": n}


def compute_to_reach(trials: list[dict[str, Any]], target: float) -> Optional[dict[str, float]]:
    steps = seconds = 0.0
    for n, t in enumerate(trials, 1):
        steps += t["steps"]
        seconds += t["seconds"]
        if t["best"] >= target:
            return {"steps": steps, "seconds": seconds, "trials": n}
    return None


def report(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Print the table; returns the summary that --json writes."""
    grid_best = max(t["best"] for t in runs["grid"])
    target = grid_best * (1 - WITHIN)
    full = {"steps": sum(t["steps"] for t in runs["grid"]), "seconds": sum(t["seconds"] for t in runs["grid"])}
    hits = sum(t["best"] >= target for t in runs["grid"])
    print(f"\ngrid best validation macro F1 {grid_best:.4f}; target (within 1%) {target:.4f}; full grid {len(runs['grid'])} trials "
          f"({hits} within 1%), {full['steps']:.0f} steps, {full['seconds']:.0f} trial-s")
    print("| run | trials | best macro F1 | steps to target | trial-s to target | steps vs full grid | all steps |\n|---|---|---|---|---|---|---|")
    summary: dict[str, Any] = {}
    rows = [(name, trials, compute_to_reach(trials, target)) for name, trials in runs.items()]
    rows.insert(1, ("grid, random order (expected)", runs["grid"], grid_random_order(runs["grid"], target)))
    for name, trials, reached in rows:
        all_steps = sum(t["steps"] for t in trials)
        best = max(t["best"] for t in trials)
        cells = ("not reached", "-", "-") if reached is None else (
            f"{reached['steps']:.0f} ({reached['trials']:.3g} trials)", f"{reached['seconds']:.0f}", f"{reached['steps'] / full['steps']:.2f}")
        print(f"| {name} | {len(trials)} | {best:.4f} | " + " | ".join(cells) + f" | {all_steps} |")
        summary[name] = {"best": best, "reached": reached, "all_steps": all_steps, "trials": trials}
    return {"grid_best": grid_best, "target": target, "full_grid": full, "runs": summary}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="TPE+ASHA runs, one per seed (none: the grid only)")
    p.add_argument("--data", choices=list(DATA), default="generated", help="the demo's generated emotion data, or real tweets (dair-ai emotion, TweetEval emotion)")
    p.add_argument("--from-json", help="print the table from an earlier run's --json file instead of running")
    p.add_argument("--grid-from", help="take the grid's trials from an earlier run's --json file (same --data) instead of running it again")
    p.add_argument("--json", help="also write the raw numbers here")
    args = p.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())["runs"]
        report({name: saved[name]["trials"] for name in saved if not name.startswith("grid, ")})
        return 0
    data = DATA[args.data]
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.grid_from:
            earlier = json.loads(Path(args.grid_from).read_text())
            if earlier.get("data", "generated") != args.data:
                raise SystemExit(f"bench: --grid-from {args.grid_from} ran on {earlier.get('data', 'generated')} data, not {args.data}")
            runs["grid"] = earlier["runs"]["grid"]["trials"]
        else:
            runs["grid"] = run("grid", [*data, "search.algorithm=grid", "search.grid_repeats=1", "scheduler.name=none"], Path(tmp))
        for seed in args.seeds:
            runs[f"tpe+asha seed {seed}"] = run(f"tpe{seed}", [*data, "search.algorithm=optuna", "search.num_samples=9", f"search.seed={seed}",
                                                              "scheduler.name=asha"], Path(tmp))
    summary = report(runs)
    if args.json:
        Path(args.json).write_text(json.dumps({"data": args.data, **summary}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
