"""Tables of a finished study, from its MLflow runs: the leaderboard, the method comparison,
the floors next to the study's model, and the model before training (a fresh random task head:
chance level, not a baseline) vs after.

Each trial is ranked by its best eval point (the checkpoint it kept), the same rule the sweep
uses to name the best trial.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from core import outcomes
from sweeps.tracking.runs import sampled_params

# Cost columns: what a trial took (latest value = the whole run).
COSTS = ("trainable_params", "total_params", "peak_memory_mb", "train_time_s", "wall_time_s", "examples_per_s", "gpu_hours")
# Scores compared in base vs best, in this order, where the task produces them.
SCORES = ("accuracy", "subset_accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro", "precision_micro", "recall_micro", "eval_loss")


@dataclasses.dataclass
class TrialScore:
    run: Run
    best: Optional[float]  # metric at the trial's best eval point
    best_step: Optional[int]


def score_trials(client: MlflowClient, trials: list[Run], metric: str, mode: str, named_best: Optional[str] = None) -> list[TrialScore]:
    """Each trial's best eval point, from its metric history. Ranked best first (on a tie, the
    run the sweep named best, ``named_best``, then the earlier trial); trials that failed after
    some eval points (diverged, say) after every trial that did not, and trials with no score
    (failed before their first eval) last."""
    scored = []
    for run in trials:
        found = outcomes.best_point(((m.value, m.step) for m in client.get_metric_history(run.info.run_id, metric)), mode)
        scored.append(TrialScore(run, *found) if found else TrialScore(run, None, None))
    return sorted(scored, key=lambda t: (*outcomes.rank_key(t.best, t.run.data.tags.get("status") == "failed", mode), t.run.info.run_id != named_best))


def _fmt_params(params: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "method")


def leaderboard(scores: list[TrialScore], metric: str) -> pd.DataFrame:
    rows = []
    for rank, t in enumerate(scores, 1):
        m, tags = t.run.data.metrics, t.run.data.tags
        row: dict[str, Any] = {
            "rank": rank if t.best is not None else None,
            "trial": tags.get("trial_name", t.run.info.run_name),
            "method": tags.get("method", ""),
            "status": tags.get("status", t.run.info.status.lower()),
            "stage": tags.get("stage", "search"),
            metric: t.best,
            "at_step": t.best_step,
            f"before_{metric}": m.get(f"before_{metric}"),
            f"test_{metric}": m.get(f"test_{metric}"),
            "params": _fmt_params(sampled_params(t.run)),
        }
        for key in COSTS:
            row[key] = m.get(key)
            if key == "total_params" and row["trainable_params"] and row["total_params"]:
                row["trainable_%"] = 100.0 * row["trainable_params"] / row["total_params"]
        row["run_id"] = t.run.info.run_id
        if tags.get("error"):
            row["params"] += f" | error: {tags['error']}"
        rows.append(row)
    return pd.DataFrame(rows).dropna(axis=1, how="all")


def method_comparison(board: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """One row per method: trials by outcome, its best and median score, and what its best
    trial cost (trainable parameters, memory, time)."""
    rows = []
    for method, group in board.groupby("method", sort=False):
        scored = group.dropna(subset=[metric]) if metric in group else group.iloc[0:0]
        best = scored.iloc[0] if len(scored) else None  # the board is sorted best first
        row: dict[str, Any] = {
            "method": method,
            "trials": len(group),
            "completed": int((group["status"] == "completed").sum()),
            "early_stopped": int((group["status"] == "early_stopped").sum()),
            "failed": int((group["status"] == "failed").sum()),
            f"best_{metric}": best[metric] if best is not None else None,
            f"median_{metric}": float(scored[metric].median()) if len(scored) else None,
        }
        for key in (f"before_{metric}", f"test_{metric}", "trainable_params", "trainable_%", "peak_memory_mb", "train_time_s", "gpu_hours"):
            if best is not None and key in best:
                row[key] = best[key]
        row["best_trial"] = best["trial"] if best is not None else None
        rows.append(row)
    out = pd.DataFrame(rows)
    key = f"best_{metric}"
    return out.sort_values(key, ascending=mode != "max", na_position="last").reset_index(drop=True)


def before_vs_best(client: MlflowClient, best: TrialScore) -> pd.DataFrame:
    """The best trial's scores at its best eval point next to the same model before training."""
    run_id, m = best.run.info.run_id, best.run.data.metrics
    rows = []
    for key in SCORES:
        if key not in m:
            continue
        at_best = [p.value for p in client.get_metric_history(run_id, key) if p.step == best.best_step]
        tuned = at_best[-1] if at_best else m[key]
        base = m.get(f"before_{key}")
        rows.append({"metric": key, "before training": base, "fine-tuned (best trial)": tuned,
                     "change": None if base is None else tuned - base})
    return pd.DataFrame(rows)


def floors_vs_best(floors: list[dict[str, Any]], run: Run, m: dict[str, float], metrics: tuple[str, ...]) -> pd.DataFrame:
    """One row per floor and one for the study's model (``run``, scores ``m``): validation and
    test side by side. ``floors``: the entries of the parent's ``floors.json``."""
    rows = [{"model": f"floor: {f['name']}", **{k: f["validation"].get(k) for k in metrics}, **{f"test_{k}": f["test"].get(k) for k in metrics}} for f in floors]
    tags = run.data.tags
    what = "final model" if tags.get("stage") == "final" else "best trial"
    rows.append({"model": f"{what}: {tags.get('method', '')} ({tags.get('trial_name', '')})", **{k: m.get(k) for k in metrics}, **{f"test_{k}": m.get(f"test_{k}") for k in metrics}})
    return pd.DataFrame(rows).dropna(axis=1, how="all")


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        if v.is_integer() and abs(v) >= 1000:
            return f"{int(v):,}"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown(frame: pd.DataFrame, drop: tuple[str, ...] = ()) -> str:
    """A GitHub-flavoured markdown table (MLflow renders .md artifacts; terminals read it too)."""
    cols = [c for c in frame.columns if c not in drop]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(row[c]) for c in cols) + " |")
    return "\n".join(lines)
