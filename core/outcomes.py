"""What a trial's outcome is: its best eval point, its rank among the study's trials, its status.

One rule for every reader (the sweep naming the study's model, the MLflow logger picking the
checkpoint to log, the final stage's top configurations, the report's leaderboard), whatever
they read the scores from (Tune results, reported checkpoints, MLflow metric histories):

- a trial's score is its best eval point (what its kept checkpoint holds); on a tie the
  earlier point wins;
- trials rank by score; a trial that failed after scoring (diverged, say) ranks after every
  trial that did not fail, and a trial with no score last;
- a trial is ``failed`` (it raised or ended with a failure result), ``completed`` (it trained
  to its last planned step) or ``early_stopped`` (the scheduler stopped it).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, TypeVar

T = TypeVar("T")

STATUSES = ("completed", "early_stopped", "failed")


def usable(value: Any) -> bool:
    """A real score: a finite number (not NaN, not the ±inf a failed trial reports)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def best_point(points: Iterable[tuple[Any, T]], mode: str) -> Optional[tuple[float, T]]:
    """The best ``(score, what)`` of ``points`` in their order (the first of equal scores);
    unusable scores are skipped; None when nothing scored."""
    best: Optional[tuple[float, T]] = None
    for score, what in points:
        if usable(score) and (best is None or (score > best[0] if mode == "max" else score < best[0])):
            best = (float(score), what)
    return best


def rank_key(score: Optional[float], failed: bool, mode: str) -> tuple[bool, bool, float]:
    """Sort key, best first: scored before unscored, not failed before failed, then by score.
    ``sorted`` is stable, so equal keys keep their given (earlier first) order."""
    value = score if score is not None else 0.0
    return (score is None, failed, -value if mode == "max" else value)


def status(failed: bool, progress: Optional[float]) -> str:
    """``progress``: the trial's last reported share of its planned steps (None: never reported)."""
    if failed:
        return "failed"
    if progress is None or progress < 1:
        return "early_stopped"
    return "completed"


def counts(statuses: Iterable[str]) -> dict[str, int]:
    """``{"trials": n, "completed": .., "early_stopped": .., "failed": ..}``."""
    seen = list(statuses)
    return {"trials": len(seen), **{s: seen.count(s) for s in STATUSES}}
