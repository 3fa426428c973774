"""``--smoke`` and ``--data``: run any study end to end in minutes, on local files.

``--smoke`` keeps the study's model family, task, methods, search algorithm, scheduler and
tracking, and shrinks the rest: a few dozen rows, two optimizer steps with an eval point after
each, one trial per method, a request that fits this machine (no GPU needed). It proves the
study runs (data layout, model head, methods, MLflow), not what it would score. Smoke runs go
to the MLflow experiment ``<study>-smoke``, away from real results.

``--data PATH`` swaps the study's data source for local files in the same column layout: a
file (the train split) or a folder with ``train.*`` and optionally ``validation.*`` (or
``val.*``, ``dev.*``) and ``test.*`` (csv, tsv, json, jsonl).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.errors import StudyError
from sweeps.study import Study

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt")
SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "val", "dev"), "test": ("test",)}


def _set(key: str, value: Any) -> str:
    # PyYAML's own flow style (2e-05 -> 2.0e-05): apply_set parses it back exactly
    return f"{key}={yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix('...').strip()}"


def local_files(path: str) -> dict[str, str]:
    """Split -> file for a data file (the train split) or a folder with ``train.*`` and
    optionally ``validation.*`` (``val.*``, ``dev.*``) and ``test.*``."""
    root = Path(path).expanduser()
    if root.is_file():
        return {"train": str(root)}
    if not root.is_dir():
        raise StudyError("--data", f"no file or folder at {path!r}", "pass a data file or a folder with train.* (and validation.*, test.*)")
    files = {}
    for split, stems in SPLIT_NAMES.items():
        found = [p for stem in stems for p in sorted(root.glob(f"{stem}.*")) if p.suffix in DATA_SUFFIXES]
        if found:
            files[split] = str(found[0])
    if "train" not in files:
        raise StudyError("--data", f"no train file in {root} (looked for train{{{','.join(DATA_SUFFIXES)}}})", "name the training file train.jsonl / train.csv, or pass the file itself")
    return files


def data_overrides(path: str) -> list[str]:
    """``--set`` assignments that point the study at local files."""
    return ["data.source=local", _set("data.files", local_files(path))]


def smoke_overrides(study: Study, gpu: bool) -> list[str]:
    """``--set`` assignments that shrink ``study`` to a smoke run (see the module docstring)."""
    assert study.space is not None
    t = study.training
    max_length = min(t.max_length, 128)
    sets = [
        _set("data.max_train_rows", 32), _set("data.max_eval_rows", 16),
        _set("training.max_steps", 2), _set("training.eval_every_steps", 1), _set("training.epochs", 1),
        _set("training.batch_size", 4), _set("training.eval_batch_size", 8), _set("training.grad_accum", 1),
        _set("training.max_length", max_length), _set("training.doc_stride", min(t.doc_stride, max_length // 4)),
        _set("training.generate_samples", min(t.generate_samples, 2)), _set("training.max_new_tokens", min(t.max_new_tokens, 8)),
        _set("scheduler.grace_period", 1),
        _set("resources.workers", 1), _set("resources.cpus_per_worker", 1),
        _set("resources.gpus_per_worker", (study.resources.gpus_per_worker if study.resources.gpus_per_worker == "auto" else min(study.resources.gpus_per_worker, 1)) if gpu else 0),
        _set("resources.max_failures", 0), _set("search.max_concurrent_trials", None),
    ]
    if study.final is not None:  # the final stage runs too, as short as the search
        sets += [_set("final.max_steps", 2), _set("final.epochs", None), _set("final.cpus_per_worker", 1), _set("final.max_concurrent_trials", None),
                 _set("final.top_k", 1), _set("final.seeds", 1)]
    if study.tracking.experiment is None:
        sets.append(_set("tracking.experiment", f"{study.name}-smoke"))
    if study.search.algorithm == "grid":
        # one grid point per method: each searched knob at its first value
        for name, param in study.space.params.items():
            if not param.continuous:
                sets.append(_set(f"search_space.overrides.{name}", param.candidates()[:1]))
        sets.append(_set("search.grid_repeats", 1))
    else:  # one trial per method: the study's own first point for a method, else one of ours
        own: dict[str, dict[str, Any]] = {}
        for point in study.search.first_points:
            own.setdefault(point.get("method", study.methods[0]), point)
        points = [*own.values(), *(study.space.first_point(m) for m in study.methods if m not in own)]
        sets += [_set("search.num_samples", len(study.methods)), _set("search.first_points", points)]
    return sets
