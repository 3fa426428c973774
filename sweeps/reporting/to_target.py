"""Cost to target: what a search spent before it first came within 1% of its own best.

What users compare searches by is not only where a search ends but how soon it gets there: a
search that reaches its best after a third of its compute could have been given less. So at the
end of a study, from its search trials' MLflow records: the first eval point of any trial whose
score is within ``WITHIN`` (relative) of the best any search trial reached; the trials started by
then; the compute every trial had spent by then (GPU-hours where trials hold GPUs, else CPU-hours:
training time x the CPUs or GPUs each worker holds, as each eval point reports it), against the
whole search's; and the wall time from the first trial's start. Trials run side by side, so the
compute is summed over all of them, each at its last eval point by then (what a trial spent since
that point is not counted: a slight underestimate, never an overestimate).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

WITHIN = 0.01  # "within 1% of the best": relative to the best score's magnitude


@dataclasses.dataclass(frozen=True)
class Curve:
    """One trial as cost to target reads it."""

    started: float  # seconds since the epoch: the trial run's start
    points: list[tuple[float, Optional[float], float]]  # (seconds since the epoch, score or None, device-hours so far)


@dataclasses.dataclass(frozen=True)
class ToTarget:
    best: float  # the search's best score
    target: float  # the score that counts as "within 1%"
    trials: int  # trials started when it was first reached
    trials_total: int
    hours: float  # device-hours all trials had spent by then
    hours_total: float  # the whole search's
    wall_s: float  # from the first trial's start
    unit: str  # "gpu" | "cpu": what the hours are

    def metrics(self) -> dict[str, float]:
        """The parent run's ``to_target_*`` metrics."""
        return {"to_target_trials": self.trials, f"to_target_{self.unit}_hours": self.hours, "to_target_wall_s": self.wall_s,
                "to_target_share": self.hours / self.hours_total if self.hours_total > 0 else 1.0}

    def line(self, metric: str) -> str:
        """One console / report line."""
        share = f" ({self.hours / self.hours_total:.0%} of the search's {self.hours_total:.3g})" if self.hours_total > 0 else ""
        return (f"cost to target: within {WITHIN:.0%} of the search's best {metric} ({self.best:.4f}) after {self.trials} of "
                f"{self.trials_total} trials, {self.hours:.3g} {self.unit.upper()}-hours{share}, {self.wall_s / 60:.1f} min")


def target(best: float, mode: str, within: float = WITHIN) -> float:
    """The score that is within ``within`` of ``best`` (relative; the best itself when it is 0)."""
    slack = abs(best) * within
    return best - slack if mode == "max" else best + slack


def reached(value: float, goal: float, mode: str) -> bool:
    return value >= goal if mode == "max" else value <= goal


def to_target(curves: list[Curve], mode: str, unit: str, within: float = WITHIN) -> Optional[ToTarget]:
    """Cost to target over ``curves`` (None: no trial has a score)."""
    scores = [v for c in curves for _, v, _ in c.points if v is not None]
    if not scores:
        return None
    best = max(scores) if mode == "max" else min(scores)
    goal = target(best, mode, within)
    when = min(t for c in curves for t, v, _ in c.points if v is not None and reached(v, goal, mode))
    # fsum: exactly rounded, so the cost to target of a search that reached it in its last trial
    # equals its total in every order the trials are summed in (a plain sum can differ by an ulp)
    spent = math.fsum(max((h for t, _, h in c.points if t <= when), default=0.0) for c in curves)
    total = math.fsum(max((h for _, _, h in c.points), default=0.0) for c in curves)
    first = min(c.started for c in curves)
    return ToTarget(best=best, target=goal, trials=sum(c.started <= when for c in curves), trials_total=len(curves),
                    hours=spent, hours_total=total, wall_s=max(0.0, when - first), unit=unit)


def from_runs(client: Any, trial_runs: list[Any], metric: str, mode: str) -> Optional[ToTarget]:
    """Cost to target of a study's search, from its trial runs' MLflow metric histories (the final
    stage's runs are left out: they retrain a pick, they are not the search's cost)."""
    trial_runs = [r for r in trial_runs if r.data.tags.get("stage", "search") == "search"]
    histories = {r.info.run_id: {m.step: m for m in client.get_metric_history(r.info.run_id, metric)} for r in trial_runs}
    unit = "gpu" if any(r.data.metrics.get("gpu_hours", 0.0) > 0 for r in trial_runs) else "cpu"
    curves = []
    for run in trial_runs:
        # a failed trial's scores before it failed are no model (as for --extend): its compute counts, its scores do not
        scores = {} if run.data.tags.get("status") == "failed" else histories[run.info.run_id]
        spent = {m.step: m for m in client.get_metric_history(run.info.run_id, f"{unit}_hours")}
        points = [(m.timestamp / 1000, m.value, spent[step].value if step in spent else 0.0) for step, m in scores.items()]
        points += [(m.timestamp / 1000, None, m.value) for step, m in spent.items() if step not in scores]
        curves.append(Curve(started=run.info.start_time / 1000, points=sorted(points, key=lambda p: p[0])))
    return to_target(curves, mode, unit) if curves else None
