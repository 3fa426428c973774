"""CLI: ``python -m sweeps.run STUDY`` runs a named study (or a YAML path) as a Ray Tune sweep.

Exit codes: 0 done, 1 the sweep started but every trial failed (or none could get resources),
2 bad input (nothing written).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional

from core.errors import StudyError, SweepError
from sweeps.tuning.searchers import SEARCHERS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sweeps.run", description="Run a PEFT hyperparameter sweep (Ray Tune + Optuna, tracked in MLflow).")
    p.add_argument("study", help="study name from sweeps/studies/ or a path to a study YAML")
    p.add_argument("--search", choices=SEARCHERS.names(), help="override search.algorithm")
    p.add_argument("--num-samples", type=int, help="override search.num_samples (random/optuna trials; a grid runs each point)")
    p.add_argument("--model", help="override model (hub id or local folder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any study key, e.g. --set training.epochs=2 (repeatable)")
    p.add_argument("--data", metavar="PATH", help="use local files in the study's column layout instead of its data source: a train file, or a folder with train.* [validation.*] [test.*]")
    p.add_argument("--smoke", action="store_true", help="a minutes-long end-to-end check: few rows, 2 steps, one trial per method, fits this machine; MLflow experiment <study>-smoke")
    p.add_argument("--dry-run", action="store_true", help="validate the study and print its plan; start nothing")
    p.add_argument("--local", action="store_true", help="start a local Ray cluster even if RAY_ADDRESS is set")
    p.add_argument("--resume", action="store_true", help="continue this study's latest interrupted run (finished trials are kept, unfinished ones resume from their checkpoints)")
    p.add_argument("--extend", type=int, metavar="N", help="N more search trials for this study's latest finished run, under the same MLflow parent; the searcher starts from every trial already recorded")
    p.add_argument("--storage-path", help="override storage_path: where Ray keeps results and checkpoints (a path, or s3://... on a cluster)")
    p.add_argument("--address", help="Ray cluster address to join (default: $RAY_ADDRESS, else local)")
    return p


def overrides(args: argparse.Namespace) -> list[str]:
    sets = []
    if args.search:
        sets.append(f"search.algorithm={args.search}")
    if args.num_samples is not None:
        sets.append(f"search.num_samples={args.num_samples}")
    if args.model:
        sets.append(f"model={args.model}")
    if args.storage_path:
        sets.append(f"storage_path={args.storage_path}")
    if args.data:
        from sweeps.smoke import data_overrides

        sets += data_overrides(args.data)
    return sets + list(args.set)


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    from sweeps.study import load_study

    try:
        sets = overrides(args)
        study = load_study(args.study, sets)
        if args.smoke:  # shrink the validated study; the command line's own --set still wins
            import torch

            from sweeps.smoke import smoke_overrides

            study = load_study(args.study, smoke_overrides(study, torch.cuda.is_available()) + sets)
        if args.dry_run:
            from sweeps.dry_run import describe

            print(describe(study))
            print("dry run: study is valid; nothing started")
            return 0
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sweeps.tuning.tuner import run_study

        if args.extend is not None and args.resume:
            raise StudyError("--extend", "cannot be combined with --resume", "resume the interrupted run first, then extend it")
        outcome = run_study(study, address=args.address, local=args.local, resume_run=args.resume, extend_by=args.extend)
    except StudyError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from trainables.training.failures import trial_failure

    for r in outcome.results:
        why = trial_failure(r)
        if why is not None:
            name = r.path.rstrip("/").rsplit("/", 1)[-1]
            print(f"trial {name} failed: {why[:300]} (traceback: {r.path}/error.txt; MLflow: run {name}, tag 'error')", file=sys.stderr)
    c = outcome.counts
    print(f"\nstudy {study.name}: {c['trials']} trials ({c['completed']} completed, {c['early_stopped']} stopped early, {c['failed']} failed)")
    if "final_trials" in c:
        print(f"final stage: {c['final_trials']} run(s) of the top {study.final.top_k} configuration(s) on {'all' if study.final.data == 'full' else 'the search'} training rows ({c['final_failed']} failed)")
    print(f"MLflow parent run {outcome.parent_run_id} in experiment {study.experiment!r}")
    if outcome.best is None and outcome.search_best is not None:  # --extend found nothing better
        s = outcome.search_best
        print(f"extension's best {study.search.metric} = {s['metrics'][study.search.metric]:.4f} with {s['config']}: not above the earlier best; the study's model is unchanged")
        return 0
    if outcome.best is None:
        first = next((why for r in outcome.results if (why := trial_failure(r)) is not None), None)
        print(f"error: every trial failed; first error: {first or 'unknown'} (full tracebacks: error.txt in each trial folder under {outcome.results.experiment_path})", file=sys.stderr)
        return 1
    print(leaderboard_top(study, outcome.parent_run_id))
    summary(study, outcome)
    print(look_further(outcome.parent_run_id, store_uri(study)))
    return 0


def store_uri(study: Any) -> str:
    from sweeps.tracking import store

    return store.tracking_uri(study.tracking.tracking_uri)


def leaderboard_top(study: Any, parent_run_id: str, rows: int = 5) -> str:
    """The study's leaderboard (its first rows), as ``sweeps.report`` ranks it, from MLflow."""
    from mlflow.tracking import MlflowClient

    from sweeps.reporting import leaderboard
    from sweeps.tracking import runs

    metric, mode = study.search.metric, study.search.mode
    try:
        client = MlflowClient(store_uri(study))
        parent = client.get_run(parent_run_id)
        scores = leaderboard.score_trials(client, runs.trial_runs(client, parent), metric, mode, parent.data.tags.get("best_run_id"))
    except Exception as exc:  # every trial is recorded; a read failing now must not fail the sweep
        return f"(leaderboard not read back from MLflow: {type(exc).__name__}: {exc})"
    board = leaderboard.leaderboard(scores, metric)
    cols = [c for c in ("rank", "trial", "method", "stage", "status", metric, f"test_{metric}", "params") if c in board]
    more = f" (top {rows} of {len(board)})" if len(board) > rows else ""
    return f"\nleaderboard{more}:\n{leaderboard.markdown(board[cols].head(rows))}\n"


def look_further(parent_run_id: str, uri: str) -> str:
    """Commands that open this study run's results (by run id: a --smoke run's experiment is
    not the study's; with --tracking-uri where the store is not the default one)."""
    from sweeps.tracking import store

    shown = store.redact(uri)
    ref = parent_run_id if uri == store.tracking_uri(None) else f"{parent_run_id} --tracking-uri {shown}"
    ui = f"open {shown} in a browser" if uri.startswith("http") else f"mlflow ui --backend-store-uri {shown}"
    return "\n".join([
        "\nlook further:",
        f"  python -m sweeps.report {ref}    # leaderboard, method comparison, floors, plots, error analysis",
        f"  python -m sweeps.serve {ref}     # try the model in a browser (http://127.0.0.1:7860)",
        f"  python -m sweeps.predict {ref} --help   # answers from the command line (--json for scripts)",
        f"  {ui}    # every trial's curves, params and files",
    ])


def summary(study: Any, outcome: Any) -> None:
    """The study's model, its floors and whether it beats them, in a few lines."""
    from trainables.evaluation.floors import floor_verdict

    metric, best = study.search.metric, outcome.best
    if outcome.search_best is not None and outcome.final is None:
        s = outcome.search_best
        print(f"search best {metric} = {s['metrics'][metric]:.4f} with {s['config']}")
    elif outcome.final is not None:
        s, f = outcome.search_best, outcome.final
        print(f"search best {metric} = {s['metrics'][metric]:.4f} with {s['config']}")
        spread = f" +- {f.std:.4f} over {f.runs} seeds" if f.runs > 1 else ""
        print(f"final model {metric} = {best['metrics'][metric]:.4f} (configuration mean {f.mean:.4f}{spread}) with {f.config}")
    test = {k: round(v, 4) for k, v in best["metrics"].items() if k.startswith("test_") and k[5:] in ("accuracy", "f1_macro", "exact_match", "f1")}
    if test:
        print(f"{'final model' if outcome.final else 'best trial'} on the held-out test split: {test}")
    for floor in outcome.floors:
        shown = {k: round(v, 4) for k, v in (floor.test or floor.validation).items() if k in ("accuracy", "f1_macro", "exact_match", "f1")}
        print(f"floor {floor.name} ({'test' if floor.test else 'validation'}): {shown}")
    if outcome.cost_to_target is not None:
        print(outcome.cost_to_target.line(metric))
    verdict = floor_verdict(outcome.floors, metric, study.search.mode, best["metrics"])
    if verdict is not None:
        print(verdict.line(), file=sys.stdout if verdict.beats else sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
