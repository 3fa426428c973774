"""Benchmark: before-training scores once per distinct model in a stage, against once per trial.

The same study twice in one run, through the real sweep (local Ray, Tune, MLflow): four LoRA
trials of ``bench/emotion_bench.yaml`` (MiniLM, 800 real emotion tweets, 400 validation tweets,
rank {8, 16} x learning rate {1e-3, 3e-3}, one at a time), first with every trial scoring the
model before training itself (what trials did before ``trainables/evaluation/base_scores.py``; the bench
turns the stage's cache off in its own driver), then as trials do now. Prints each trial's
start-up (scheduled to first step), evaluation and total seconds, whether its ``before_*``
scores were shared, and the study's wall time both ways; the ``before_*`` scores and the final
F1 must be the same both ways.

    .venv/bin/python bench/base_scores.py [--json out.json]        # ~3 min on 2 CPUs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STUDY = Path(__file__).resolve().parent / "emotion_bench.yaml"
OVERRIDES = ["methods=[lora]", "search_space.overrides.lora_r=[8, 16]", "search_space.overrides.learning_rate=[0.001, 0.003]",
             "search.max_concurrent_trials=1"]


def sweep(workdir: Path, shared: bool) -> dict[str, Any]:
    from sweeps.study import load_study
    from sweeps.tuning import tuner

    workdir.mkdir(parents=True)
    start = tuner.base_scores.start
    if not shared:
        tuner.base_scores.start = lambda: None  # no cache for this study's trials: each scores its own
    try:
        study = load_study(str(STUDY), [*OVERRIDES, f"storage_path={workdir / 'ray_results'}", f"tracking.tracking_uri=sqlite:///{workdir / 'mlflow.db'}"])
        started = time.perf_counter()
        outcome = tuner.run_study(study, local=True)
        wall = time.perf_counter() - started
    finally:
        tuner.base_scores.start = start
    trials = []
    for r in sorted(outcome.results, key=lambda r: (r.config["lora_r"], r.config["learning_rate"])):
        if r.error is not None:
            raise SystemExit(f"bench: a trial failed: {r.error}")
        m = r.metrics
        trials.append({
            "config": f"r={r.config['lora_r']},lr={r.config['learning_rate']}", "before_shared": int(m["before_shared"]),
            "startup_s": m["startup_s"], "eval_s": m["eval_time_s"], "total_s": m["time_total_s"], "f1_macro": m["f1_macro"],
            "before": {k: v for k, v in m.items() if k.startswith("before_") and k != "before_shared"},
        })
    return {"wall_s": wall, "trials": trials}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the raw numbers here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {"each trial": sweep(Path(tmp) / "each", shared=False), "shared": sweep(Path(tmp) / "shared", shared=True)}
    each, shared = results["each trial"], results["shared"]
    print("\n| trial | each trial: start-up s / evals s / total s | shared: start-up s / evals s / total s | before_shared | F1 macro (both) |")
    print("|---|---|---|---|---|")
    for a, b in zip(each["trials"], shared["trials"]):
        assert a["config"] == b["config"] and a["f1_macro"] == b["f1_macro"] and a["before"] == b["before"], (a, b)
        print(f"| {a['config']} | {a['startup_s']:.1f} / {a['eval_s']:.1f} / {a['total_s']:.1f} | "
              f"{b['startup_s']:.1f} / {b['eval_s']:.1f} / {b['total_s']:.1f} | {b['before_shared']} | {a['f1_macro']:.3f} |")
    print(f"\nstudy wall s: each trial {each['wall_s']:.1f}, shared {shared['wall_s']:.1f} ({each['wall_s'] / shared['wall_s']:.2f}x); "
          f"the same before_* scores and final F1 both ways")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
