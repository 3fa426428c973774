"""Benchmark: the searches over many seeds, replayed on a grid's recorded learning curves.

``search_efficiency.py`` trains every trial, so a search costs minutes and three seeds are all a
session can pay for: too few to tell a rate. This bench is a tabular benchmark (as HPO papers use
NAS-Bench/HPOBench tables): a ``search_efficiency.py --json`` run's grid is the table, with each
of its points' validation macro F1 at every eval point and the trial seconds to get there. Every
seed then runs the real thing the study would run, minus the training:

- the study's own searcher as ``build_tuner`` makes it (Optuna TPE or random sampling through
  ``DistinctOptunaSearch``, same sampler settings, same conditional space),
- the study's ASHA scheduler (grace 2 eval points, reduction 2; 9 trials, two at a time),
- a real Ray Tune ``Tuner``, whose trainable looks up the point it was given and reports that
  point's recorded curve eval point by eval point, sleeping ``--time-scale`` of the recorded
  seconds, so trials finish in the order they did (which decides what TPE has seen when it
  suggests the next point, and what ASHA compares a trial with).

A point run twice gives the same curve, as a re-run with the same seed would. Per search, over
``--seeds`` seeds: how often the search gets within 1% of the grid's best within its 9 trials,
the optimizer steps that took (trials in the order they finished, as in search_efficiency.py),
and all its steps; against the grid in a random order (random search without repeats and
without early stopping, computed exactly) and the full grid.

    .venv/bin/python bench/search_efficiency.py --data real --seeds --json GRID.json          # once: the table (the grid alone, ~25 min)
    .venv/bin/python bench/search_replay.py --grid GRID.json --seeds 100 [--trials 9] [--searches NAME ...] [--json out.json]   # ~15 min a search on 2 CPUs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from search_efficiency import DATA, SPACE, WITHIN, compute_to_reach  # noqa: E402

NUM_SAMPLES = 9  # as search_efficiency.py's TPE runs: a third of the 27-point grid
CONCURRENCY = 2


def point_key(config: dict[str, Any], names: list[str]) -> str:
    return json.dumps({n: config.get(n) for n in names}, sort_keys=True)


def replay(config: dict[str, Any], table: dict[str, Any], names: list[str], metric: str, time_scale: float) -> None:
    """The Tune trainable: report the recorded curve of the point in ``config``."""
    from ray import tune

    curve = table[point_key(config, names)]
    last = 0.0
    for step, value, seconds in curve:
        time.sleep(max(0.0, seconds - last) * time_scale)
        last = seconds
        tune.report({metric: value, "step": step})


def read_run(flag: str, path: str) -> dict[str, Any]:
    """A search_efficiency.py --json output, or a one-line error naming ``flag``."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"bench: {flag} {path}: cannot read it as JSON ({type(e).__name__}): give a search_efficiency.py --json output")
    if not isinstance(saved, dict) or not isinstance(saved.get("runs"), dict):
        raise SystemExit(f"bench: {flag} {path}: not a search_efficiency.py --json output (no runs)")
    return saved


def load_table(grid_json: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """point -> curve, from a search_efficiency.py run; and that run's grid trials."""
    saved = read_run("--grid", grid_json)
    if "grid" not in saved["runs"]:
        raise SystemExit(f"bench: --grid {grid_json} holds no grid run: give a search_efficiency.py --json output")
    trials = saved["runs"]["grid"]["trials"]
    if any("curve" not in t for t in trials):
        raise SystemExit(f"bench: {grid_json} has no learning curves (a search_efficiency.py run before they were recorded): run it again")
    return saved, trials


def study_for(data: str, algorithm: str, seed: int, scheduler: str = "asha") -> Any:
    from sweeps.study import load_study

    overrides = [SPACE, "final=null", *DATA[data], f"search.algorithm={algorithm}",
                 f"search.num_samples={NUM_SAMPLES}", f"search.seed={seed}", f"scheduler.name={scheduler}"]
    return load_study("emotion_demo", overrides)


def searcher_for(study: Any, search: "Search") -> Any:
    """The searcher ``build_tuner`` makes for ``study``; ``search.repeats`` drops the no-repeat
    rule (as Ray's plain ``OptunaSearch``: the space treated as endless, so a repeated point runs);
    ``search.name_per_method`` gives each method's params Optuna names of their own (a candidate,
    measured here before the searchers take it: ``NamePerMethod``); ``search.start_per_method``
    makes TPE's random start-up trials one per method (enqueued with only the method fixed, in a
    seeded order; the sampler draws the rest), so each method is seen before TPE models them."""
    from sweeps.tuning.searchers import SEARCHERS

    s = study.search
    if search.sampler == "gp":  # Optuna's Gaussian-process sampler in the study's searcher, as many start-up trials as TPE's
        import optuna

        from sweeps.tuning.searchers import _optuna, startup_trials

        sampler = optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=startup_trials(s.num_samples), warn_independent_sampling=False)
        searcher = _optuna(sampler, s.seed)(study.space, study.methods, s.metric, s.mode, s.first_points)
    else:
        searcher = SEARCHERS[s.algorithm].make(study.space, study.methods, metric=s.metric, mode=s.mode, seed=s.seed,
                                               num_samples=s.num_samples, grid_repeats=s.grid_repeats, first_points=s.first_points)
    if search.repeats:
        searcher._grid = None
    if search.name_per_method:
        searcher.__class__ = name_per_method_class()
        searcher._space = PerMethodNames(study.space, study.methods)
        searcher._grid = [{(k if k == "method" else f"{k}|{p['method']}"): v for k, v in p.items()} for p in searcher._grid or []] or None
    if search.start_per_method:
        import numpy as np

        for method in np.random.default_rng(s.seed).permutation(study.methods):
            searcher._ot_study.enqueue_trial({"method": str(method)})
    return searcher


class PerMethodNames:
    """The study's define-by-run space with every param named per method (``learning_rate|ia3``,
    as Optuna's conditional examples name each branch's params): TPE then models IA3's learning
    rate apart from LoRA's, instead of pooling evidence from rates that suit other methods."""

    def __init__(self, space: Any, methods: list[str]) -> None:
        self.space, self.methods = space, list(methods)

    def __call__(self, trial: Any) -> dict[str, Any]:
        from sweeps.tuning.searchers import _suggest

        method = trial.suggest_categorical("method", self.methods)
        constants = {}
        for name, p in self.space.params_for(method).items():
            if p.type == "fixed":
                constants[name] = p.value
            else:
                _suggest(trial, f"{name}|{method}", p)
        return constants


def name_per_method_class() -> type:
    """``DistinctOptunaSearch`` whose configs carry the params' plain names again."""
    from sweeps.tuning.searchers import DistinctOptunaSearch

    class NamePerMethod(DistinctOptunaSearch):
        def suggest(self, trial_id: str) -> Any:
            config = super().suggest(trial_id)
            return {k.split("|")[0]: v for k, v in config.items()} if isinstance(config, dict) else config

    return NamePerMethod


def run_search(study: Any, table: dict[str, Any], names: list[str], eval_points: int, time_scale: float, search: "Search", workdir: Path) -> list[dict[str, Any]]:
    """One seed of one search through a real Tuner; its trials in the order they finished."""
    from ray import tune

    from sweeps.tuning.schedulers import SCHEDULERS

    metric = study.search.metric
    trainable = tune.with_resources(tune.with_parameters(replay, table=table, names=names, metric=metric, time_scale=time_scale), {"CPU": 1})
    tuner = tune.Tuner(
        trainable,
        param_space={},
        tune_config=tune.TuneConfig(metric=metric, mode=study.search.mode, search_alg=searcher_for(study, search),
                                    scheduler=SCHEDULERS[study.scheduler.name](study.scheduler, eval_points),
                                    num_samples=NUM_SAMPLES, max_concurrent_trials=CONCURRENCY,
                                    reuse_actors=True),  # a replay has no Train run to wait on: reuse is safe here, and quicker
        run_config=tune.RunConfig(storage_path=str(workdir), verbose=0),
    )
    trials = []
    for r in tuner.fit():
        df = r.metrics_dataframe
        if r.error is not None or df is None or metric not in df:
            raise RuntimeError(f"bench: a replayed trial failed: {r.error}")
        trials.append({"config": {n: r.config.get(n) for n in names}, "best": float(df[metric].max()),
                       "steps": int(df["step"].iloc[-1]), "seconds": 0.0, "finished": float(df["timestamp"].iloc[-1])})
    # Tune's timestamps are whole seconds: ties keep the order trials were created in
    trials.sort(key=lambda t: t["finished"])
    return trials


def grid_random_order_exact(points: list[dict[str, Any]], target: float, budget: int) -> dict[str, float]:
    """The grid's points in a random order (random search without repeats or early stopping),
    taking ``budget`` of them: the chance that one is within target, and the expected trials
    to the first hit (over the whole grid, as search_efficiency.py reports)."""
    n, k = len(points), sum(t["best"] >= target for t in points)
    miss = math.comb(n - k, budget) / math.comb(n, budget) if budget <= n else 0.0
    mean_steps = sum(t["steps"] for t in points) / n
    trials = (n + 1) / (k + 1)
    return {"hit_rate": 1.0 - miss, "trials_to_hit": trials, "steps_to_hit": trials * mean_steps, "all_steps": budget * mean_steps}


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate of ``hits`` in ``n`` (sound near 0% and 100%)."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def cut_short(trials: list[dict[str, Any]], table_best: dict[str, float], names: list[str], target: float) -> int:
    """Trials the scheduler stopped whose point, run to its end, reaches ``target`` (the grid's
    best within 1%), while the search itself never got there: a winner judged by its first steps."""
    full = max(t["steps"] for t in trials)
    if max(t["best"] for t in trials) >= target:
        return 0
    return sum(t["steps"] < full and table_best[point_key(t["config"], names)] >= target for t in trials)


def summarize(name: str, runs: list[list[dict[str, Any]]], target: float, full_steps: int, table_best: dict[str, float], names: list[str]) -> dict[str, Any]:
    reached = [compute_to_reach(trials, target) for trials in runs]
    hits = [r for r in reached if r is not None]
    low, high = wilson(len(hits), len(runs))
    all_steps = [sum(t["steps"] for t in trials) for trials in runs]
    repeats = [len(trials) - len({json.dumps(t["config"], sort_keys=True) for t in trials}) for trials in runs]
    row = {
        "seeds": len(runs),
        "hit_rate": len(hits) / len(runs),
        "hit_rate_95": [low, high],
        "median_steps_to_hit": statistics.median(r["steps"] for r in hits) if hits else None,
        "median_trials_to_hit": statistics.median(r["trials"] for r in hits) if hits else None,
        "mean_all_steps": statistics.fmean(all_steps),
        "mean_repeats": statistics.fmean(repeats),
        "best_mean": statistics.fmean(max(t["best"] for t in trials) for trials in runs),
        # seeds that missed the target although they had run a point that reaches it, stopped early
        "missed_by_early_stop": sum(cut_short(trials, table_best, names, target) > 0 for trials in runs),
    }
    hit = "-" if not hits else f"{row['median_steps_to_hit']:.0f} ({row['median_trials_to_hit']:.0f} trials)"
    print(f"| {name} | {row['seeds']} | **{row['hit_rate']:.0%}** ({low:.0%}-{high:.0%}) | {hit} | {row['mean_all_steps']:.0f} ({row['mean_all_steps'] / full_steps:.2f}) | "
          f"{row['mean_repeats']:.2f} | {row['best_mean']:.4f} | {row['missed_by_early_stop']} |", flush=True)
    return row


def fidelity(replayed: list[list[dict[str, Any]]], real_json: str) -> list[str]:
    """How closely the replay follows real runs of the same seeds: for each ``tpe+asha seed N``
    of a search_efficiency.py run (made with today's searcher), the points both ran and the
    trials ASHA stopped at the same step."""
    real = read_run("--real", real_json)["runs"]
    lines = []
    for seed, trials in enumerate(replayed):
        if f"tpe+asha seed {seed}" not in real:
            continue
        theirs = real[f"tpe+asha seed {seed}"]["trials"]
        names = sorted({n for t in theirs + trials for n in t["config"]})
        ran = {point_key(t["config"], names): t["steps"] for t in theirs}
        ours = {point_key(t["config"], names): t["steps"] for t in trials}
        same = set(ran) & set(ours)
        lines.append(f"seed {seed}: {len(same)} of {len(ran)} points the same as the real run, {sum(ran[k] == ours[k] for k in same)} of them stopped at the same step")
    return lines


def compact(runs: dict[str, list[list[dict[str, Any]]]], keys: list[str], names: list[str]) -> dict[str, list[list[list[float]]]]:
    """Each seed's trials as [index of the point in the table's grid order, steps, best macro F1]:
    what the JSON keeps (the configs are the table's)."""
    index = {k: i for i, k in enumerate(keys)}
    return {name: [[[index[point_key(t["config"], names)], t["steps"], round(t["best"], 6)] for t in trials] for trials in seeds]
            for name, seeds in runs.items()}


@dataclasses.dataclass(frozen=True)
class Search:
    algorithm: str  # search.algorithm
    repeats: bool = False  # without the no-repeat rule
    scheduler: str = "asha"  # scheduler.name
    name_per_method: bool = False  # each method's params under Optuna names of their own
    sampler: str = ""  # "gp": Optuna's GPSampler in place of the algorithm's sampler (a candidate)
    start_per_method: bool = False  # the start-up trials one per method, in a seeded order (a candidate)


SEARCHES: dict[str, Search] = {
    "tpe+asha": Search("optuna"),
    "tpe+asha, repeats allowed": Search("optuna", repeats=True),
    "random+asha": Search("random"),
    "tpe+asha per method": Search("optuna", scheduler="asha_per_method"),
    "random+asha per method": Search("random", scheduler="asha_per_method"),
    "tpe+asha, a name per method": Search("optuna", name_per_method=True),
    "tpe+asha per method, a name per method": Search("optuna", scheduler="asha_per_method", name_per_method=True),
    "gp+asha": Search("optuna", sampler="gp"),
    "tpe+asha, a start-up point per method": Search("optuna", start_per_method=True),
    "tpe+asha, a name and a start-up point per method": Search("optuna", name_per_method=True, start_per_method=True),
}


def expand(saved: dict[str, Any]) -> dict[str, list[list[dict[str, Any]]]]:
    """The trials of a ``--json`` output again (``compact`` undone), for ``--from-json``."""
    keys = saved["points"]
    return {name: [[{"config": json.loads(keys[i]), "steps": steps, "best": best, "seconds": 0.0} for i, steps, best in trials] for trials in seeds]
            for name, seeds in saved["runs"].items()}


def main() -> int:
    global NUM_SAMPLES
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", required=True, help="a search_efficiency.py --json file whose grid has learning curves")
    p.add_argument("--from-json", help="print the table of an earlier --json output (replayed on this --grid) instead of replaying")
    p.add_argument("--seeds", type=int, default=30, help="seeds 0..N-1 per search")
    p.add_argument("--trials", type=int, default=NUM_SAMPLES, help="trials per search (the issue's budget: 9); more shows what budget a rate needs")
    p.add_argument("--searches", nargs="+", default=list(SEARCHES), choices=list(SEARCHES))
    p.add_argument("--time-scale", type=float, default=0.02, help="sleep this fraction of each recorded eval interval")
    p.add_argument("--json", help="also write the summary and every seed's trials (point, steps, best) here")
    p.add_argument("--real", help="a search_efficiency.py --json run with real TPE + ASHA seeds (today's searcher): how closely tpe+asha's replay of those seeds follows them")
    args = p.parse_args()
    if args.seeds < 1:
        p.error(f"--seeds {args.seeds}: give at least 1")
    if args.trials < 2:
        p.error(f"--trials {args.trials}: give at least 2")
    NUM_SAMPLES = args.trials
    if args.time_scale < 0:
        p.error(f"--time-scale {args.time_scale}: give 0 or more")
    if args.real:
        read_run("--real", args.real)  # checked before the replay, not after it

    saved, points = load_table(args.grid)
    data = saved.get("data", "generated")
    if data not in DATA:
        raise SystemExit(f"bench: --grid {args.grid}: its data {data!r} is none of {sorted(DATA)}: give a search_efficiency.py --json output")
    names = sorted({n for t in points for n in t["config"]})
    keys = [point_key(t["config"], names) for t in points]
    table = dict(zip(keys, (t["curve"] for t in points)))
    eval_points = max(len(c) for c in table.values())
    grid_best = max(t["best"] for t in points)
    target = grid_best * (1 - WITHIN)
    full_steps = sum(t["steps"] for t in points)
    exact = grid_random_order_exact(points, target, NUM_SAMPLES)
    hits = sum(t["best"] >= target for t in points)
    print(f"table: {len(points)} points ({data} data), best macro F1 {grid_best:.4f}, {hits} within 1%; full grid {full_steps} steps")
    if args.from_json:
        earlier = json.loads(Path(args.from_json).read_text())
        if earlier.get("points") != keys:
            raise SystemExit(f"bench: --from-json {args.from_json} was not replayed on --grid {args.grid}: give the grid it names ({earlier.get('grid')})")
        NUM_SAMPLES = earlier.get("trials", 9)  # outputs before --trials ran 9
        exact = grid_random_order_exact(points, target, NUM_SAMPLES)
        print_table(expand(earlier), target, full_steps, exact, grid_best, keys, points, names)
        return 0

    from core.errors import StudyError

    try:  # the study's data paths are relative to the repo root: a wrong folder fails here, in one line
        study_for(data, SEARCHES[args.searches[0]].algorithm, 0)
    except StudyError as e:
        raise SystemExit(f"bench: {e} (run it from the repository root)")

    import ray

    ray.init(num_cpus=CONCURRENCY, include_dashboard=False, log_to_driver=False)
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.searches:
            search = SEARCHES[name]
            runs[name] = []
            for seed in range(args.seeds):
                study = study_for(data, search.algorithm, seed, search.scheduler)
                workdir = Path(tmp) / f"{len(runs)}-{seed}"
                runs[name].append(run_search(study, table, names, eval_points, args.time_scale, search, workdir))
    ray.shutdown()

    print(f"\n{args.seeds} seeds per search, {NUM_SAMPLES} trials each, {CONCURRENCY} at a time; replayed in {time.time() - started:.0f} s")
    summary = print_table(runs, target, full_steps, exact, grid_best, keys, points, names)
    checks = fidelity(runs["tpe+asha"], args.real) if args.real and "tpe+asha" in runs else []
    for line in checks:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"grid": args.grid, "trials": NUM_SAMPLES, "fidelity": checks, "data": data, "target": target, "time_scale": args.time_scale,
                                               "summary": summary, "grid_random_order": exact, "points": keys, "runs": compact(runs, keys, names)}, separators=(",", ":")))
    return 0


def print_table(runs: dict[str, list[list[dict[str, Any]]]], target: float, full_steps: int, exact: dict[str, float],
                grid_best: float, keys: list[str], points: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """The markdown table of every search's seeds, against the grid in a random order and the full grid."""
    print("| search | seeds | within 1% of the grid's best (95% interval) | median steps to it (hits only) | mean all steps (vs grid) | mean repeats | mean best "
          "| seeds that missed it with a trial of it stopped early |\n|---|---|---|---|---|---|---|---|")
    table_best = {k: t["best"] for k, t in zip(keys, points)}
    summary = {name: summarize(name, r, target, full_steps, table_best, names) for name, r in runs.items()}
    print(f"| grid in a random order, {NUM_SAMPLES} points (exact) | - | **{exact['hit_rate']:.0%}** | {exact['steps_to_hit']:.0f} "
          f"({exact['trials_to_hit']:.1f} trials, whole grid) | {exact['all_steps']:.0f} ({exact['all_steps'] / full_steps:.2f}) | 0 | - | 0 |")
    print(f"| full grid | 1 | 100% | - | {full_steps} (1.00) | 0 | {grid_best:.4f} | 0 |")
    return summary


if __name__ == "__main__":
    sys.exit(main())
