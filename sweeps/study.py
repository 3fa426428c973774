"""A study: one YAML file in ``sweeps/studies/`` (or any path), validated into typed dataclasses.

Everything that can be checked without loading data or weights is checked here, so bad input
fails before Ray starts or MLflow is touched; the registries it checks names against import
none of their entries' libraries (torch, peft, MLflow), so the whole command takes ~2 s.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import Any, Optional

import yaml

from core import hparams
from core.errors import StudyError
from core.schema import Listed, Spec, parse, spec
from core.specs import (
    DataSpec,
    FinalSpec,
    ResourcesSpec,
    SchedulerSpec,
    SearchSpec,
    SpaceRef,
    TrackingSpec,
    TrainingSpec,
)
from search_spaces import SearchSpace, load_space
from sweeps.tracking import TRACKERS
from sweeps.tuning.schedulers import SCHEDULERS
from sweeps.tuning.searchers import SEARCHERS
from trainables.kinds import TASKS
from trainables.model.methods import METHODS

STUDIES_DIR = Path(__file__).parent / "studies"


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@spec
class Study(Spec):
    """The top level of a study file: what to tune (model, task, data, methods), how to search,
    how each trial trains, where it runs and where it is recorded."""

    name: str  # the study's name (MLflow experiment, Ray run folder); default: the file's name
    model: str  # hub id, local folder, or packaged:<name>
    task: str  # single_label | multi_label | sentence_pair | extractive_qa | extractive_qa_v2 | instruction
    data: DataSpec  # where the rows come from and which columns hold what
    methods: Listed[str]  # lora | qlora | ia3 | full | head (baselines): each trial uses one; compared in one study
    search_space: SpaceRef = dataclasses.field(default_factory=lambda: SpaceRef("defaults"))  # a named space (search_spaces/NAME.yaml) and overrides; default: defaults
    description: str = ""  # one line: what the study is for
    search: SearchSpec = dataclasses.field(default_factory=SearchSpec)  # how trials are picked (grid, random, Optuna TPE) and ranked
    scheduler: SchedulerSpec = dataclasses.field(default_factory=SchedulerSpec)  # early stopping of weak trials (ASHA)
    training: TrainingSpec = dataclasses.field(default_factory=TrainingSpec)  # each trial's schedule, batches, precision
    resources: ResourcesSpec = dataclasses.field(default_factory=ResourcesSpec)  # what each trial asks Ray for, and its failure budget
    tracking: TrackingSpec = dataclasses.field(default_factory=TrackingSpec)  # where MLflow records the study
    final: Optional[FinalSpec] = None  # retrain the search's best configurations on all rows (see FinalSpec)
    storage_path: Optional[str] = None  # Ray Tune storage (path or s3://...); default $SWEEPS_STORAGE_PATH, else ./ray_results
    space: Optional[SearchSpace] = dataclasses.field(default=None, init=False, repr=False)

    def check(self) -> None:
        task = TASKS.get(self.task, "task")
        if not self.methods:
            raise StudyError("methods", "no methods", f"list one or more of {', '.join(METHODS)}")
        for i, m in enumerate(self.methods):
            if not METHODS.get(m, f"methods[{i}]").applies_to(task.kind):
                fits = [n for n, spec in METHODS.items() if spec.applies_to(task.kind)]
                raise StudyError(f"methods[{i}]", f"method {m!r} does not apply to {task.kind.name} tasks", f"use one of {', '.join(fits)}")
        if self.search.metric not in task.metrics:
            raise StudyError("search.metric", f"task {self.task} does not produce {self.search.metric!r}", f"use one of {', '.join(task.metrics)}")
        task.kind.check(task, self.data, self.training)
        if self.data.source == "generated":
            from trainables.data.load import GENERATORS

            if self.data.name not in GENERATORS:
                raise StudyError("data.name", f"unknown generator {self.data.name!r}", f"use one of {', '.join(GENERATORS)}")
        self._validate_model()
        self.space = load_space(self.search_space.name, self.search_space.overrides).for_methods(self.methods)
        for name, param in self.space.params.items():
            field = f"search_space.overrides.{name}" if name in self.search_space.overrides else f"search_space ({self.search_space.name}).{name}"
            hparams.check_name(name, field)
            for value in param.bounds():
                hparams.check_value(name, value, field)
        algorithm = SEARCHERS.get(self.search.algorithm, "search.algorithm")
        SCHEDULERS.get(self.scheduler.name, "scheduler.name")
        for i, name in enumerate(self.tracking.trackers):
            TRACKERS.get(name, f"tracking.trackers[{i}]")
        if "mlflow" not in self.tracking.trackers:
            raise StudyError("tracking.trackers", "mlflow is missing: it is the study's record (report, export and predict read it)", "list mlflow first, then any other tracker")
        if algorithm.enumerates:
            self.space.grid_points(self.methods)  # raises on continuous ranges
            if self.search.first_points:
                raise StudyError("search.first_points", "a grid already runs every point", "remove first_points or use random / optuna")
        for i, point in enumerate(self.search.first_points):
            self._validate_point(point, f"search.first_points[{i}]")
        if self.final is not None:
            trials = algorithm.trial_count(self.space, self.methods, self.search.num_samples, self.search.grid_repeats)
            if self.final.top_k > trials:
                raise StudyError("final.top_k", f"{self.final.top_k} configurations, but the search runs only {trials} trial(s)", f"use final.top_k <= {trials} or search more")

    def _validate_point(self, point: dict[str, Any], field: str) -> None:
        assert self.space is not None
        method = point.get("method", self.methods[0] if len(self.methods) == 1 else None)
        if method not in self.methods:
            raise StudyError(f"{field}.method", f"{method!r} is not one of the study's methods", f"use one of {', '.join(self.methods)}")
        wanted = {k for k, p in self.space.params_for(method).items() if p.type != "fixed"}
        given = set(self.space.complete(point, method)) - {"method"}
        for name in sorted(given - wanted):
            raise StudyError(f"{field}.{name}", f"not a searched hyperparameter of {method}", f"use {', '.join(sorted(wanted))}")
        for name in sorted(wanted - given):
            raise StudyError(f"{field}", f"missing {name!r}", "give every searched hyperparameter a value")
        for name, value in point.items():
            if name != "method":
                hparams.check_value(name, value, f"{field}.{name}")

    def _validate_model(self) -> None:
        ref = self.model
        if ref.startswith("packaged:"):
            from trainables.model.load import PACKAGED_MODELS

            if ref not in PACKAGED_MODELS:
                raise StudyError("model", f"unknown packaged model {ref!r}", f"use one of {', '.join(PACKAGED_MODELS)}")
            return
        looks_local = ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or Path(ref).exists()
        if looks_local or not HUB_ID.match(ref):
            if not Path(ref).expanduser().is_dir():
                raise StudyError("model", f"no model folder at {ref!r}", "pass --model with an existing folder or a hub id like org/name")

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name


def known_studies() -> list[str]:
    return sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))


def study_file(ref: str) -> Path:
    """A study name from ``sweeps/studies/`` or a path to a YAML file."""
    path = Path(ref).expanduser()
    if path.suffix in (".yaml", ".yml") or os.sep in ref:
        if not path.is_file():
            raise StudyError("study", f"no study file at {ref!r}", "check the path")
        return path
    candidate = STUDIES_DIR / f"{ref}.yaml"
    if candidate.is_file():
        return candidate
    near = difflib.get_close_matches(ref, known_studies(), n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise StudyError("study", f"unknown study {ref!r}", f"{hint}known studies: {', '.join(known_studies())}; or pass a path to a .yaml file")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyError(where, f"YAML syntax error: {problem}", "fix the YAML on that line") from None
    if not isinstance(raw, dict):
        raise StudyError(str(path), "a study file must be a YAML mapping", "see sweeps/studies/emotion_demo.yaml")
    return raw


def apply_set(raw: dict[str, Any], assignment: str) -> None:
    """``--set a.b.c=value``: value parsed as YAML (numbers, lists, booleans)."""
    if "=" not in assignment:
        raise StudyError("--set", f"{assignment!r} has no '='", "use --set key.path=value")
    key, _, text = assignment.partition("=")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise StudyError(f"--set {key}", f"{part!r} is not a mapping", "set the parent key instead")
        node = child
    node[parts[-1]] = value


def load_study(ref: str, sets: Optional[list[str]] = None) -> Study:
    """Read, override and validate a study. Raises StudyError on any bad input."""
    path = study_file(ref)
    raw = read_yaml(path)
    raw.setdefault("name", path.stem)
    for assignment in sets or []:
        apply_set(raw, assignment)
    return parse(Study, raw)
