"""The hyperparameters a trial understands, and the values each may take.

Search spaces may only name these; every value a space can produce is checked here before
anything runs, so "rank 0" or "learning rate -1" fail at validation, not mid-sweep.
"""

from __future__ import annotations

import difflib
import functools
import math
from typing import Any, Callable, Union

from core.errors import StudyError


@functools.cache
def _schedulers() -> list[str]:
    # Imported on first use: transformers.trainer_utils pulls in peft (~7 s here), which the
    # trial's Tune actor and Train controller (they import this module) never need.
    from transformers import SchedulerType

    return sorted(s.value for s in SchedulerType)


def _positive_int(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and v > 0


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _unit(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


def _non_negative(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


# name -> (check, what it must be, fix (or a function giving it))
RULES: dict[str, tuple[Callable[[Any], bool], str, Union[str, Callable[[], str]]]] = {
    "lora_r": (_positive_int, "a rank must be an integer > 0", "use ranks like 4, 8, 16"),
    "lora_alpha": (_positive, "alpha must be > 0", "use e.g. 2 x rank"),
    "lora_alpha_ratio": (_positive, "the alpha/rank ratio must be > 0", "use 1, 2 or 4"),
    "lora_dropout": (_unit, "dropout must be in [0, 1)", "use e.g. 0.05"),
    "target_modules": (lambda v: isinstance(v, str) and bool(v), "target modules must be a preset name or comma-separated module names", "use default, all-linear or e.g. q_proj,v_proj"),
    "learning_rate": (_positive, "the learning rate must be > 0", "use e.g. 1e-4 .. 5e-3"),
    "head_learning_rate": (_positive, "the task head's learning rate must be > 0", "use e.g. 1e-3, or leave it out (= learning_rate)"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a seed is an integer >= 0", "use e.g. 0, 1, 2"),
    "warmup_ratio": (_unit, "the warmup ratio must be in [0, 1)", "use e.g. 0.03 or 0.1"),
    "weight_decay": (_non_negative, "weight decay must be >= 0", "use 0 or 0.01"),
    "packing": (lambda v: isinstance(v, bool), "packing is true or false", "use [false, true]"),
    "lr_scheduler": (lambda v: v in _schedulers(), "unknown learning-rate schedule", lambda: f"use one of {', '.join(_schedulers())}"),
}

DEFAULTS: dict[str, Any] = {
    "learning_rate": 2e-4,
    "warmup_ratio": 0.0,
    "weight_decay": 0.0,
    "lr_scheduler": "linear",
}


def check_value(name: str, value: Any, field: str) -> None:
    check, what, fix = RULES[name]
    if not check(value):
        raise StudyError(field, f"{value!r} is not allowed: {what}", fix() if callable(fix) else fix)


def check_name(name: str, field: str) -> None:
    if name not in RULES:
        near = difflib.get_close_matches(name, list(RULES), n=1)
        fix = f"did you mean {near[0]!r}?" if near else f"known hyperparameters: {', '.join(RULES)}"
        raise StudyError(field, f"unknown hyperparameter {name!r}", fix)


def resolve(sampled: dict[str, Any]) -> dict[str, Any]:
    """Defaults + what the search sampled (Tune configs may hold numpy scalars: make them plain)."""
    out = dict(DEFAULTS)
    for k, v in sampled.items():
        out[k] = v.item() if hasattr(v, "item") else v
    return out
