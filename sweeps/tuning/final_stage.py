"""The final stage: retrain the search's best configurations on all training rows.

Multi-fidelity search, with data size and schedule as the budget (as Hyperband / BOHB use
it): trials search on a subset (``data.max_train_rows``) or a short schedule and ASHA stops
the weak ones; then the ``final.top_k`` best configurations train again with every training
row and the final schedule, ``final.seeds`` times each. The pick is the configuration with
the best mean over its seeds (a lucky seed does not win), and that configuration's best run
is the study's model. The runs are ordinary trials of a second Tuner: same trainable, a grid
of the chosen points, no early stopping, child runs of the same MLflow parent tagged
``stage=final``.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from typing import Any, Iterable, Optional

from core import outcomes
from core.specs import SchedulerSpec
from sweeps.study import Study
from trainables.training.failures import trial_failure

SEED_KEY = "seed"  # the hyperparameter a final repeat differs in


def study_for_final(study: Study) -> Study:
    """The study as the final runs train: all rows of every split (``final.data: full``: the
    search may train and score on capped rows), the final schedule and CPUs, no early stopping."""
    final = study.final
    assert final is not None and study.space is not None
    training = dataclasses.replace(
        study.training,
        epochs=final.epochs or study.training.epochs,
        max_steps=final.max_steps if final.max_steps else (None if final.epochs else study.training.max_steps),
    )
    resources = dataclasses.replace(study.resources, cpus_per_worker=final.cpus_per_worker or study.resources.cpus_per_worker)
    data = dataclasses.replace(study.data, max_train_rows=None, max_eval_rows=None) if final.data == "full" else study.data
    search = dataclasses.replace(study.search, max_concurrent_trials=final.max_concurrent_trials, first_points=[])
    out = dataclasses.replace(study, training=training, resources=resources, data=data, search=search, scheduler=SchedulerSpec(name="none"))
    out.space = study.space  # not an init field: replace() leaves it unset
    return out


def needs_own_data(study: Study) -> bool:
    """Whether the final runs see other rows than the search (so data is prepared twice)."""
    capped = study.data.max_train_rows is not None or study.data.max_eval_rows is not None
    return study.final is not None and study.final.data == "full" and capped


def best_score(result: Any, metric: str, mode: str) -> Optional[float]:
    """A trial's best eval point (what its kept checkpoint holds); None if it failed or never scored."""
    df = result.metrics_dataframe
    if trial_failure(result) is not None or df is None or metric not in df:
        return None
    found = outcomes.best_point(zip(df[metric], df.index), mode)
    return found[0] if found else None


def _key(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in sorted(config.items()) if k != SEED_KEY}, sort_keys=True, default=str)


def top_configs(results: Iterable[Any], metric: str, mode: str, k: int) -> list[dict[str, Any]]:
    """The ``k`` best distinct configurations of the search, best first."""
    scored = [(s, dict(r.config)) for r in results if (s := best_score(r, metric, mode)) is not None]
    scored.sort(key=lambda t: outcomes.rank_key(t[0], False, mode))
    seen: dict[str, dict[str, Any]] = {}
    for _, config in scored:
        seen.setdefault(_key(config), config)
    return list(seen.values())[:k]


def points(configs: list[dict[str, Any]], seeds: int, first_seed: int) -> list[dict[str, Any]]:
    """Each configuration once per seed."""
    return [{**c, SEED_KEY: first_seed + i} for c in configs for i in range(seeds)]


@dataclasses.dataclass
class Pick:
    config: dict[str, Any]  # the winning configuration (without seed)
    mean: float  # its mean best score over seeds
    std: float  # spread over its seeds (0 with one seed)
    runs: int  # how many of its seeds finished
    results: list[Any]  # its Tune results (one per seed)


def pick(results: Iterable[Any], metric: str, mode: str) -> Optional[Pick]:
    """The configuration with the best mean score over its seeds."""
    groups: dict[str, list[tuple[float, Any]]] = {}
    for r in results:
        score = best_score(r, metric, mode)
        if score is not None:
            groups.setdefault(_key(dict(r.config)), []).append((score, r))
    if not groups:
        return None
    means = {key: statistics.fmean(s for s, _ in runs) for key, runs in groups.items()}
    _, winner = outcomes.best_point(((m, key) for key, m in means.items()), mode)
    runs = groups[winner]
    scores = [s for s, _ in runs]
    config = {k: v for k, v in runs[0][1].config.items() if k != SEED_KEY}
    return Pick(config, means[winner], statistics.pstdev(scores) if len(scores) > 1 else 0.0, len(scores), [r for _, r in runs])
