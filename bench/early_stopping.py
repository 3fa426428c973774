"""Benchmark: what early stopping would have cut, on a study whose trials all ran to the end.

Run a study with ``--set scheduler.name=none`` (every trial's whole learning curve lands in
MLflow), then replay its eval points through each scheduler of the registry, in the order they
were logged (two trials at a time interleave as they did), with the study's own grace period and
reduction factor: the real Tune ``ASHAScheduler`` objects the study would have used decide, as in
``tests/test_schedulers.py``. Per scheduler: where each trial would have been stopped, the best
score the study would have kept, and the stopped trials that would have ended better than that
(a configuration judged by its first steps). The searcher's own choices are held fixed: a real
run with early stopping may have sampled other configurations after the first stops.

    .venv/bin/python -m sweeps.run bench/emotion_quality.yaml --set scheduler.name=none --set final=null \\
        --set storage_path=/tmp/eq/ray_results --set tracking.tracking_uri=sqlite:////tmp/eq/mlflow.db
    .venv/bin/python bench/early_stopping.py bench/emotion_quality.yaml --tracking-uri sqlite:////tmp/eq/mlflow.db [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCHEDULERS_COMPARED = ("asha", "asha_per_method")


def curves(client: Any, trials: list[Any], metric: str) -> list[tuple[int, str, int, float]]:
    """Every eval point of every trial as (timestamp ms, trial run id, eval point 1.., score), in
    the order MLflow got them."""
    points = []
    for run in trials:
        history = sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: (m.step, m.timestamp))
        points += [(m.timestamp, run.info.run_id, i, m.value) for i, m in enumerate(history, 1)]
    return sorted(points)


def replay(name: str, spec: Any, eval_points: int, metric: str, mode: str, methods: dict[str, str], points: list[tuple[int, str, int, float]]) -> dict[str, int]:
    """Trial run id -> the eval points it would have had under scheduler ``name``."""
    from ray.tune.experiment import Trial

    from sweeps.tuning.schedulers import SCHEDULERS

    scheduler = SCHEDULERS[name](spec, eval_points)  # grace and reduction are the study's
    scheduler.set_search_properties(metric, mode)
    trials: dict[str, Any] = {}
    ran: dict[str, int] = {}
    stopped: set[str] = set()
    for _, run_id, point, value in points:
        if run_id in stopped:
            continue
        if run_id not in trials:
            trials[run_id] = Trial("replay", config={"method": methods[run_id]}, trial_id=run_id[:8], stub=True)
            scheduler.on_trial_add(None, trials[run_id])
        ran[run_id] = point
        result = {"training_iteration": point, metric: value}
        if scheduler.on_trial_result(None, trials[run_id], result) == "STOP" or point == eval_points:
            scheduler.on_trial_complete(None, trials[run_id], result)  # what Tune tells it when a trial ends
            stopped.add(run_id)
    return ran


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", help="the study file (its scheduler settings and metric)")
    p.add_argument("--tracking-uri", required=True, help="the MLflow store of its run with scheduler.name=none")
    p.add_argument("--json", help="also write the table here")
    args = p.parse_args()

    from sweeps.study import load_study
    from sweeps.tracking import runs

    study = load_study(args.study, [])
    metric, mode = study.search.metric, study.search.mode
    client, parent = runs.find_parent(args.study, args.tracking_uri)
    if parent.data.tags.get("scheduler") != "none":
        raise SystemExit(f"bench: the latest run of {args.study} stopped trials early (scheduler {parent.data.tags.get('scheduler')}): run it with --set scheduler.name=none")
    trials = [r for r in runs.trial_runs(client, parent) if r.data.tags.get("stage", "search") == "search"]
    eval_points = int(float(parent.data.params["plan.eval_points"]))
    methods = {r.info.run_id: r.data.tags.get("method", "") for r in trials}
    points = curves(client, trials, metric)
    full = {r.info.run_id: [v for _, rid, _, v in points if rid == r.info.run_id] for r in trials}
    better = max if mode == "max" else min

    def beats(a: float, b: float) -> bool:
        return a > b if mode == "max" else a < b

    rows = {name: replay(name, study.scheduler, eval_points, metric, mode, methods, points) for name in SCHEDULERS_COMPARED}
    print(f"{len(trials)} trials of {args.study}, {eval_points} eval points each; {metric} ({mode}); grace {study.scheduler.grace_period}, reduction {study.scheduler.reduction_factor}")
    print(f"| trial | method | learning rate | {metric} at each eval point | best | " + " | ".join(f"{n}: eval points run" for n in rows) + " |")
    print("|---|---|---|---|---|" + "---|" * len(rows))
    for r in trials:
        rid = r.info.run_id
        curve = " ".join(f"{v:.3f}" for v in full[rid])
        print(f"| {r.data.tags.get('trial_name', rid[:8])} | {methods[rid]} | {float(r.data.params.get('learning_rate', 'nan')):.2e} | {curve} | {better(full[rid]):.4f} | "
              + " | ".join(str(ran[rid]) for ran in rows.values()) + " |")
    summary = {}
    for name, ran in rows.items():
        kept = better(better(full[rid][:ran[rid]]) for rid in ran)
        cut = [rid for rid in ran if ran[rid] < eval_points and beats(better(full[rid]), kept)]
        steps = sum(ran.values()) / (eval_points * len(ran))
        summary[name] = {"kept_best": kept, "eval_points_run": sum(ran.values()), "share_of_all": steps,
                         "stopped": sum(ran[rid] < eval_points for rid in ran), "stopped_but_would_have_ended_better": [methods[rid] for rid in cut]}
        print(f"{name}: keeps best {kept:.4f}; {summary[name]['stopped']} of {len(ran)} stopped; {steps:.0%} of the eval points; "
              f"stopped trials that would have ended better than that: {len(cut)} ({', '.join(methods[rid] for rid in cut) or '-'})")
    print(f"run to the end: best {better(better(v) for v in full.values()):.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"study": args.study, "parent_run_id": parent.info.run_id, "eval_points": eval_points,
                                               "trials": {rid: {"method": methods[rid], "curve": full[rid], "runs": {n: ran[rid] for n, ran in rows.items()}} for rid in full},
                                               "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
