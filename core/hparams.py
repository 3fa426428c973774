"""The hyperparameters a trial understands, and the values each may take.

Search spaces may only name these; every value a space can produce is checked here before
anything runs, so "rank 0" or "learning rate -1" fail at validation, not mid-sweep.
"""

from __future__ import annotations

import difflib
import functools
import math
from typing import Any, Callable, Optional, Union

from core.errors import StudyError


@functools.cache
def _schedulers() -> list[str]:
    # Imported on first use: transformers.trainer_utils pulls in peft (~7 s here), which the
    # trial's Tune actor and Train controller (they import this module) never need.
    from transformers import SchedulerType

    return sorted(s.value for s in SchedulerType)


def positive_int(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and v > 0


def positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def unit(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


def non_negative(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


# (check, what the value must be, fix (or a function giving it))
Rule = tuple[Callable[[Any], bool], str, Union[str, Callable[[], str]]]

# The hyperparameters every trial understands; a method adds its own when it is registered
# (trainables.model.methods: LoRA's rank, alpha, dropout, target modules).
RULES: dict[str, Rule] = {
    "learning_rate": (positive, "the learning rate must be > 0", "use e.g. 1e-4 .. 5e-3"),
    "head_learning_rate": (positive, "the task head's learning rate must be > 0", "use e.g. 1e-3, or leave it out (= learning_rate)"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a seed is an integer >= 0", "use e.g. 0, 1, 2"),
    "warmup_ratio": (unit, "the warmup ratio must be in [0, 1)", "use e.g. 0.03 or 0.1"),
    "weight_decay": (non_negative, "weight decay must be >= 0", "use 0 or 0.01"),
    "packing": (lambda v: isinstance(v, bool), "packing is true or false", "use [false, true]"),
    "lr_scheduler": (lambda v: v in _schedulers(), "unknown learning-rate schedule", lambda: f"use one of {', '.join(_schedulers())}"),
}

def add_rules(rules: dict[str, Rule]) -> None:
    """Make hyperparameters known (a method's own); a name may be added again by another
    method only with the same rule."""
    for name, rule in rules.items():
        if RULES.setdefault(name, rule) is not rule:
            raise ValueError(f"hyperparameter {name!r} already has another rule")


DEFAULTS: dict[str, Any] = {
    "learning_rate": 2e-4,
    "warmup_ratio": 0.0,
    "weight_decay": 0.0,
    "lr_scheduler": "linear",
}


def check_value(name: str, value: Any, field: str) -> None:
    check, what, fix = RULES[name]
    number = _number_in_text(value)
    if number is not None:  # YAML 1.1 reads 1e-4 and 1.0e30 (no dot / no exponent sign) as text
        raise StudyError(field, f"{value!r} is text, not a number (YAML reads {value} as a string)", f"write {_yaml_float(number)}")
    if not check(value):
        raise StudyError(field, f"{value!r} is not allowed: {what}", fix() if callable(fix) else fix)


def _number_in_text(value: Any) -> Optional[float]:
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _yaml_float(number: float) -> str:
    """How to write ``number`` so that YAML reads a float (1e30 -> 1.0e+30, 1e-4 -> 0.0001)."""
    import yaml

    return yaml.safe_dump(number).split("\n", 1)[0]


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
