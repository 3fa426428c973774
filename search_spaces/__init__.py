"""Named, reusable search spaces: one YAML definition serves grid, random and Optuna search.

A space is a set of hyperparameters. Each one says which methods it applies to, so a study
that compares methods gets one conditional space (IA3 trials never get a rank). Spaces are
plain data here; ``sweeps.searchers`` turns them into what Ray Tune and Optuna expect.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import math
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import StrictBool

from core.errors import StudyError
from core.schema import Float, Listed, Spec, parse, spec

SPACES_DIR = Path(__file__).parent

Kind = Literal["choice", "uniform", "loguniform", "int", "fixed"]


@spec
class Param(Spec):
    """One hyperparameter: a discrete choice, a continuous or integer range, or a fixed value."""

    type: Kind = "choice"
    values: Optional[Listed[Any]] = None  # choice
    low: Optional[Float] = None  # uniform / loguniform / int
    high: Optional[Float] = None
    log: StrictBool = False  # int only: sample on a log scale
    value: Any = None  # fixed
    methods: Optional[Listed[str]] = None  # methods it applies to; None = all
    help: str = ""  # one line on the knob's effect
    # Per-method replacements of values / low / high / value, e.g. a learning-rate range for
    # IA3 or full fine-tuning that differs from LoRA's: one conditional space, where a shared
    # range would waste trials on rates one method cannot use.
    per_method: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def check(self) -> None:
        if self.type == "choice":
            if not self.values:
                raise StudyError("", "a choice needs a non-empty 'values' list", "add values: [..]")
        elif self.type in ("uniform", "loguniform", "int"):
            if self.low is None or self.high is None:
                raise StudyError("", f"a {self.type} range needs 'low' and 'high'", "set both bounds")
            if self.low > self.high:
                raise StudyError("", f"low {self.low} > high {self.high}", "swap the bounds")
            if self.type == "loguniform" and self.low <= 0:
                raise StudyError("", "a loguniform range needs low > 0", "use a positive lower bound")
        for method, changes in self.per_method.items():
            unknown = set(changes) - {"values", "low", "high", "value"}
            if unknown:
                raise StudyError(f"per_method.{method}", f"cannot change {', '.join(sorted(unknown))} per method", "change values, low, high or value")
            parse(Param, {**dataclasses.asdict(self), "per_method": {}, **changes}, f"per_method.{method}")

    def for_method(self, method: str) -> "Param":
        """This param as ``method`` samples it (its ``per_method`` changes applied)."""
        changes = self.per_method.get(method)
        return dataclasses.replace(self, per_method={}, **changes) if changes else self

    @property
    def continuous(self) -> bool:
        return self.type in ("uniform", "loguniform", "int")

    def candidates(self) -> list[Any]:
        """Every value a grid would visit (only for discrete params)."""
        if self.type == "fixed":
            return [self.value]
        return list(self.values or [])

    def bounds(self) -> list[Any]:
        """Values to range-check: the choices, or the two ends of a range (every method's)."""
        own = [self.low, self.high] if self.continuous else self.candidates()
        return own + [v for m in self.per_method for v in self.for_method(m).bounds()]

    def applies_to(self, method: str) -> bool:
        return self.methods is None or method in self.methods


@dataclasses.dataclass
class SearchSpace:
    """A named space: hyperparameter name -> Param."""

    name: str
    description: str
    params: dict[str, Param]

    def for_methods(self, methods: list[str]) -> "SearchSpace":
        """Drop params that none of ``methods`` uses."""
        kept = {k: p for k, p in self.params.items() if any(p.applies_to(m) for m in methods)}
        return dataclasses.replace(self, params=kept)

    def params_for(self, method: str) -> dict[str, Param]:
        """The params ``method`` samples, with its own ranges (``per_method``)."""
        return {k: p.for_method(method) for k, p in self.params.items() if p.applies_to(method)}

    def complete(self, point: dict[str, Any], method: str) -> dict[str, Any]:
        """``point`` with every one-value choice of ``method`` filled in (nothing to choose there)."""
        filled = dict(point)
        for name, p in self.params_for(method).items():
            if name not in filled and p.type == "choice" and len(p.values or []) == 1:
                filled[name] = p.values[0]  # type: ignore[index]
        return filled

    def first_point(self, method: str) -> dict[str, Any]:
        """A complete point of ``method``: each choice at its first value, each range at its
        middle (geometric for log ranges, rounded for integers)."""
        point: dict[str, Any] = {"method": method}
        for name, p in self.params_for(method).items():
            if p.type == "fixed":
                continue
            if not p.continuous:
                point[name] = p.candidates()[0]
            elif p.type == "loguniform":
                point[name] = float(math.sqrt(p.low * p.high))  # type: ignore[operator]
            else:
                mid = (p.low + p.high) / 2  # type: ignore[operator]
                point[name] = int(round(mid)) if p.type == "int" else float(mid)
        return point

    def grid_points(self, methods: list[str], path: str = "search_space") -> list[dict[str, Any]]:
        """The full grid: per method, the product of its own params (so IA3 gets no rank)."""
        points: list[dict[str, Any]] = []
        for method in methods:
            params = self.params_for(method)
            for name, p in params.items():
                if p.continuous:
                    raise StudyError(
                        f"{path}.{name}",
                        f"grid search cannot enumerate a continuous {p.type} range [{p.low}, {p.high}]",
                        f"override it with a list of values (e.g. --set {path}.overrides.{name}=[...]) "
                        "or use --search random / optuna",
                    )
            names = list(params)
            for combo in itertools.product(*(params[n].candidates() for n in names)):
                points.append({"method": method, **dict(zip(names, combo))})
        return points

    def grid_size(self, methods: list[str]) -> int:
        return sum(
            math.prod(len(p.candidates()) for p in self.params_for(m).values()) for m in methods
        )


def known_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name: str, overrides: Optional[dict[str, Any]] = None, path: str = "search_space") -> SearchSpace:
    """Load ``search_spaces/<name>.yaml`` and apply a study's overrides.

    An override is either a mapping merged into the param (``{values: [8, 16]}``), a list
    (shorthand for a choice), a scalar (a fixed value), or ``null`` (drop the param).
    """
    file = SPACES_DIR / f"{name}.yaml"
    if not file.is_file():
        near = difflib.get_close_matches(name, known_spaces(), n=1)
        fix = f"did you mean {near[0]!r}?" if near else f"known spaces: {', '.join(known_spaces())}"
        raise StudyError(f"{path}.name", f"unknown search space {name!r}", fix)
    raw = yaml.safe_load(file.read_text()) or {}
    params_raw: dict[str, Any] = copy.deepcopy(raw.get("params") or {})
    for key, override in (overrides or {}).items():
        if override is None:
            params_raw.pop(key, None)
        elif isinstance(override, dict):
            base = params_raw.get(key, {})
            if "type" in override and override["type"] != base.get("type"):
                base = {k: v for k, v in base.items() if k in ("methods", "help")}
            params_raw[key] = {**base, **override}
        elif isinstance(override, list):
            base = params_raw.get(key, {})
            params_raw[key] = {"type": "choice", "values": override, "methods": base.get("methods"), "help": base.get("help", "")}
        else:
            base = params_raw.get(key, {})
            params_raw[key] = {"type": "fixed", "value": override, "methods": base.get("methods"), "help": base.get("help", "")}
    params = {}
    for key, value in params_raw.items():
        where = f"{path}.overrides.{key}" if key in (overrides or {}) else f"search_spaces/{name}.yaml:{key}"
        params[key] = parse(Param, value, where)
    return SearchSpace(name=name, description=str(raw.get("description", "")), params=params)
