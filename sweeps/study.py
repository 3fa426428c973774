"""A study: one YAML file in ``sweeps/studies/`` (or any path), validated into typed dataclasses.

Everything that can be checked without loading data or weights is checked here, so bad input
fails in well under a second, before Ray starts or MLflow is touched.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from search_spaces import SearchSpace, load_space
from sweeps.errors import StudyError
from sweeps.schema import build
from trainables import hparams
from trainables.methods import METHODS
from trainables.tasks import TASKS

STUDIES_DIR = Path(__file__).parent / "studies"
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class Columns:
    """Which data columns hold what. Multi-label data either has one column of label lists
    (``label``) or one 0/1 column per label (``labels``). QA reads question/context/answers
    (SQuAD layout: answers = {text: [..], answer_start: [..]}); instruction tuning reads
    ``messages`` (a list of {role, content} or ShareGPT {from, value} turns)."""

    text: str = "text"
    text_pair: Optional[str] = None
    label: Optional[str] = "label"
    labels: Optional[list[str]] = None
    question: str = "question"
    context: str = "context"
    answers: str = "answers"
    id: str = "id"
    messages: str = "conversations"


@dataclasses.dataclass
class DataSpec:
    source: Literal["hub", "local", "generated"] = "local"
    name: Optional[str] = None  # hub data set id, or generator name for source=generated
    config: Optional[str] = None  # hub config name
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # split -> path (local)
    format: Optional[Literal["csv", "tsv", "jsonl", "json", "squad", "lines"]] = None  # default: from the extension; squad = official nested SQuAD JSON; lines = one text per line, labels in label_files
    label_files: dict[str, str] = dataclasses.field(default_factory=dict)  # format lines: split -> file of labels, line by line with files (TweetEval)
    delimiter: Optional[str] = None  # csv only, e.g. ";"
    column_names: Optional[list[str]] = None  # csv without a header row
    splits: dict[str, Optional[str]] = dataclasses.field(default_factory=lambda: {"train": "train"})
    columns: Columns = dataclasses.field(default_factory=Columns)
    label_names: Optional[list[str]] = None
    drop_labels: Optional[list[Any]] = None  # rows with these label values are dropped (SNLI: -1 = no gold label)
    validation_fraction: float = 0.2  # stratified split of train when there is no validation split
    # Pool every split and cut it anew, stratified, e.g. {train: 0.7, validation: 0.1, test: 0.2}
    resplit: Optional[dict[str, float]] = None
    max_train_rows: Optional[int] = None
    max_eval_rows: Optional[int] = None
    rows: Optional[int] = None  # generated data: how many rows

    def validate(self, path: str) -> None:
        for split in self.splits:
            if split not in SPLITS:
                raise StudyError(f"{path}.splits.{split}", "unknown split", f"use {', '.join(SPLITS)}")
        if self.source == "hub" and not self.name:
            raise StudyError(f"{path}.name", "a hub data set needs a name", "e.g. name: dair-ai/emotion")
        if self.source == "local":
            if "train" not in self.files:
                raise StudyError(f"{path}.files.train", "local data needs a train file", "add files: {train: path/to/train.csv}")
            for split, file in self.files.items():
                if split not in SPLITS:
                    raise StudyError(f"{path}.files.{split}", "unknown split", f"use {', '.join(SPLITS)}")
                if not Path(file).expanduser().is_file():
                    raise StudyError(f"{path}.files.{split}", f"no such file {file!r}", "fix the path (relative paths start at the current directory) or pass --data")
        if self.source == "generated":
            from trainables.data import GENERATORS

            if self.name not in GENERATORS:
                raise StudyError(f"{path}.name", f"unknown generator {self.name!r}", f"use one of {', '.join(GENERATORS)}")
        if self.format == "lines":
            for split in self.files:
                if split != "test" and split not in self.label_files:
                    raise StudyError(f"{path}.label_files.{split}", "format lines needs a labels file per split", f"add label_files: {{{split}: path/to/{split}_labels.txt}}")
            for split, file in self.label_files.items():
                if split not in self.files:
                    raise StudyError(f"{path}.label_files.{split}", f"no text file for split {split!r}", f"add files.{split} or remove this labels file")
                if not Path(file).expanduser().is_file():
                    raise StudyError(f"{path}.label_files.{split}", f"no such file {file!r}", "fix the path (relative paths start at the current directory)")
        elif self.label_files:
            raise StudyError(f"{path}.label_files", "label files go with format: lines", "set data.format: lines, or remove label_files")
        if self.resplit is not None:
            if set(self.resplit) != {"train", "validation", "test"} or abs(sum(self.resplit.values()) - 1) > 1e-6 or min(self.resplit.values()) <= 0:
                raise StudyError(f"{path}.resplit", f"{self.resplit} is not three positive shares of train, validation, test summing to 1", "use e.g. {train: 0.7, validation: 0.1, test: 0.2}")
        if not 0 < self.validation_fraction < 1:
            raise StudyError(f"{path}.validation_fraction", f"{self.validation_fraction} is not in (0, 1)", "use e.g. 0.2")
        for key in ("max_train_rows", "max_eval_rows", "rows"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise StudyError(f"{path}.{key}", f"{value} rows", "use a positive number or remove the key")


@dataclasses.dataclass
class SpaceRef:
    name: str
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SearchSpec:
    algorithm: Literal["grid", "random", "optuna"] = "optuna"
    num_samples: int = 8  # trials for random / optuna (a grid runs each of its points)
    grid_repeats: int = 1  # grid only: run the whole grid this many times (same seed: shows run-to-run noise, e.g. GPU nondeterminism)
    max_concurrent_trials: Optional[int] = None  # default: as many as the cluster fits
    metric: str = "f1_macro"
    mode: Literal["max", "min"] = "max"
    seed: int = 0
    # random / optuna: settings to try first (e.g. a paper's), each a complete point of the space
    first_points: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def validate(self, path: str) -> None:
        if self.num_samples < 1:
            raise StudyError(f"{path}.num_samples", f"{self.num_samples} trials", "use --num-samples N with N >= 1")
        if self.grid_repeats < 1:
            raise StudyError(f"{path}.grid_repeats", f"{self.grid_repeats}", "use >= 1")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise StudyError(f"{path}.max_concurrent_trials", f"{self.max_concurrent_trials}", "use a value >= 1 or remove it")


@dataclasses.dataclass
class SchedulerSpec:
    name: Literal["none", "asha"] = "asha"
    grace_period: int = 1  # eval points a trial always gets before it can be stopped
    reduction_factor: int = 2  # keep the top 1/reduction_factor at each rung

    def validate(self, path: str) -> None:
        if self.grace_period < 1:
            raise StudyError(f"{path}.grace_period", f"{self.grace_period}", "use >= 1 eval point")
        if self.reduction_factor < 2:
            raise StudyError(f"{path}.reduction_factor", f"{self.reduction_factor}", "use >= 2")


@dataclasses.dataclass
class TrainingSpec:
    epochs: float = 1.0
    max_steps: Optional[int] = None  # optimizer steps; overrides epochs
    batch_size: int = 16  # per worker
    eval_batch_size: Optional[int] = None  # default: 2 x batch_size
    grad_accum: int = 1
    max_length: int = 128  # tokens; longer texts are truncated
    seed: int = 42
    evals_per_epoch: int = 2  # eval points per epoch (what ASHA rungs count)
    eval_every_steps: Optional[int] = None  # overrides evals_per_epoch
    # Score the model before training too (before_* metrics, base-vs-tuned error analysis in the
    # report); costs one validation pass per trial.
    eval_base: bool = True
    # Recompute activations in the backward pass: ~1/3 slower, far less memory (7B QLoRA at
    # 2k tokens per batch: 23.7 GB without it, see bench/RESULTS.md).
    gradient_checkpointing: bool = False
    # Training forward passes in bf16 autocast (weights, optimizer and evaluation stay fp32): auto = where the
    # hardware runs bf16 fast (CUDA with bf16, CPUs with AVX512-BF16 / AMX), else fp32.
    # About 2x the examples/s on such CPUs (bench/RESULTS.md).
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # Batches of similar-length examples (transformers' LengthGroupedSampler: shuffled, then
    # sorted within windows of 50 batches): far less padding on texts of mixed length.
    # Single-worker trials; DDP trials shuffle plainly.
    group_by_length: bool = True
    # Extractive QA: overlap of the windows a long context is cut into (tokens; < max_length / 2)
    # and the longest answer span considered.
    doc_stride: int = 128
    max_answer_length: int = 30
    # Instruction tuning: join examples into full max_length rows (more tokens per step; a
    # search space may sample it), and how many validation prompts to answer for BLEU/ROUGE
    # at each eval point (greedy; each costs up to max_new_tokens forward passes).
    packing: bool = False
    generate_samples: int = 16
    max_new_tokens: int = 64

    def validate(self, path: str) -> None:
        positive = {
            "epochs": self.epochs, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
            "evals_per_epoch": self.evals_per_epoch, "doc_stride": self.doc_stride,
            "max_answer_length": self.max_answer_length, "max_new_tokens": self.max_new_tokens,
        }
        for key in ("max_steps", "eval_every_steps", "eval_batch_size"):
            if getattr(self, key) is not None:
                positive[key] = getattr(self, key)
        for key, value in positive.items():
            if value <= 0:
                raise StudyError(f"{path}.{key}", f"{value} must be > 0", "use a positive value")
        if self.generate_samples < 0:
            raise StudyError(f"{path}.generate_samples", f"{self.generate_samples}", "use 0 (no generation) or more")
        if self.max_length < 8:
            raise StudyError(f"{path}.max_length", f"{self.max_length} tokens", "use >= 8")


@dataclasses.dataclass
class ResourcesSpec:
    workers: int = 1  # Ray Train workers per trial (> 1 = DDP)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # fractional shares a GPU between trials
    start_timeout_s: float = 120.0  # a trial that cannot get its workers in this long fails
    # On a cluster whose autoscaler can add a node that fits a trial, the wait instead (cloud
    # GPU nodes take 3-10 min to boot and set up).
    autoscale_timeout_s: float = 900.0
    # torch.distributed backend of multi-worker (DDP) trials: null = Ray's choice (nccl when
    # workers have GPUs, else gloo); gloo where the "GPUs" are only Ray resources (tests).
    backend: Optional[str] = None
    # Restarts of a trial after a worker crash, each from the trial's last checkpoint (eval
    # point): its workers first (Ray Train), then the whole trial if its driver was lost (Tune).
    # 0 on one machine, where a crash is a bug; the cluster studies use 3. Errors that would
    # repeat (NaN loss, out of memory, a configuration the model rejects) are never retried.
    max_failures: int = 0
    # Restarts after a node preemption (spot reclaim), counted apart from max_failures, as Ray
    # Train does: -1 = no limit (a preemption says nothing about the trial).
    max_preemptions: int = -1

    def validate(self, path: str) -> None:
        if self.workers < 1:
            raise StudyError(f"{path}.workers", f"{self.workers}", "use >= 1")
        if self.cpus_per_worker <= 0:
            raise StudyError(f"{path}.cpus_per_worker", f"{self.cpus_per_worker}", "use > 0")
        if self.gpus_per_worker < 0 or (self.gpus_per_worker > 1 and not float(self.gpus_per_worker).is_integer()):
            raise StudyError(f"{path}.gpus_per_worker", f"{self.gpus_per_worker}", "use a fraction <= 1 or a whole number")
        if self.max_failures < 0:
            raise StudyError(f"{path}.max_failures", f"{self.max_failures}", "use 0 (no restarts) or more")
        if self.max_preemptions < -1:
            raise StudyError(f"{path}.max_preemptions", f"{self.max_preemptions}", "use -1 (no limit), 0 (no restarts) or more")
        if self.backend not in (None, "nccl", "gloo"):
            raise StudyError(f"{path}.backend", f"{self.backend!r}", "use nccl, gloo, or leave it out (Ray picks)")
        for key in ("start_timeout_s", "autoscale_timeout_s"):
            if getattr(self, key) <= 0:
                raise StudyError(f"{path}.{key}", f"{getattr(self, key)}", "use > 0 seconds")


@dataclasses.dataclass
class FinalSpec:
    """After the search, train its best configurations properly (multi-fidelity search, as
    Hyperband / BOHB spend budget: search cheap on a subset or a short schedule, then give the
    winners all the data and the long schedule). Runs under the same MLflow parent, child runs
    tagged ``stage=final``; the final model is what report, export and predict use."""

    top_k: int = 1  # best search configurations to retrain
    seeds: int = 1  # runs per configuration (seeds training.seed, +1, ...): the pick is the best mean, the spread is logged
    data: Literal["full", "search"] = "full"  # full: every row (data.max_train_rows / max_eval_rows lifted); search: the search's rows
    epochs: Optional[float] = None  # the final schedule; default: training.epochs
    max_steps: Optional[int] = None  # optimizer steps instead of epochs (smoke runs)
    cpus_per_worker: Optional[float] = None  # default: resources.cpus_per_worker; a final run alone may take the whole node
    max_concurrent_trials: Optional[int] = None  # default: as many as fit

    def validate(self, path: str) -> None:
        for key in ("top_k", "seeds"):
            if getattr(self, key) < 1:
                raise StudyError(f"{path}.{key}", f"{getattr(self, key)}", "use >= 1")
        for key in ("epochs", "max_steps", "cpus_per_worker", "max_concurrent_trials"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise StudyError(f"{path}.{key}", f"{value} must be > 0", "use a positive value or remove the key")


@dataclasses.dataclass
class TrackingSpec:
    experiment: Optional[str] = None  # MLflow experiment; default: the study name
    tracking_uri: Optional[str] = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@dataclasses.dataclass
class Study:
    name: str
    model: str  # hub id, local folder, or packaged:<name>
    task: str
    data: DataSpec
    methods: list[str]
    search_space: SpaceRef = dataclasses.field(default_factory=lambda: SpaceRef("defaults"))  # search_spaces/defaults.yaml
    description: str = ""
    search: SearchSpec = dataclasses.field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = dataclasses.field(default_factory=SchedulerSpec)
    training: TrainingSpec = dataclasses.field(default_factory=TrainingSpec)
    resources: ResourcesSpec = dataclasses.field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = dataclasses.field(default_factory=TrackingSpec)
    final: Optional[FinalSpec] = None  # retrain the search's best configurations on all rows (see FinalSpec)
    storage_path: Optional[str] = None  # Ray Tune storage (path or s3://...); default $SWEEPS_STORAGE_PATH, else ./ray_results
    space: Optional[SearchSpace] = dataclasses.field(default=None, init=False, repr=False)

    def validate(self, path: str) -> None:
        if self.task not in TASKS:
            near = difflib.get_close_matches(self.task, list(TASKS), n=1)
            raise StudyError("task", f"unknown task {self.task!r}", f"did you mean {near[0]!r}?" if near else f"use one of {', '.join(TASKS)}")
        task = TASKS[self.task]
        if not self.methods:
            raise StudyError("methods", "no methods", f"list one or more of {', '.join(METHODS)}")
        for i, m in enumerate(self.methods):
            if m not in METHODS:
                near = difflib.get_close_matches(m, list(METHODS), n=1)
                raise StudyError(f"methods[{i}]", f"unknown method {m!r}", f"did you mean {near[0]!r}?" if near else f"use one of {', '.join(METHODS)}")
            if task.kind not in METHODS[m].kinds:
                fits = [n for n, spec in METHODS.items() if task.kind in spec.kinds]
                raise StudyError(f"methods[{i}]", f"method {m!r} does not apply to {task.kind} tasks", f"use one of {', '.join(fits)}")
        if self.search.metric not in task.metrics:
            raise StudyError("search.metric", f"task {self.task} does not produce {self.search.metric!r}", f"use one of {', '.join(task.metrics)}")
        if task.needs_text_pair and not self.data.columns.text_pair:
            raise StudyError("data.columns.text_pair", f"task {self.task} needs a second text column", "set data.columns.text_pair")
        if task.multi_label and not (self.data.columns.labels or self.data.columns.label):
            raise StudyError("data.columns.labels", "multi-label data needs label columns", "set labels: [col, ...] or label: <column of lists>")
        if task.kind == "qa" and self.training.doc_stride >= self.training.max_length // 2:
            raise StudyError("training.doc_stride", f"{self.training.doc_stride} overlaps too much for max_length {self.training.max_length}", "use a stride below max_length / 2 (e.g. 128 for 384)")
        self._validate_model()
        self.space = load_space(self.search_space.name, self.search_space.overrides).for_methods(self.methods)
        for name, param in self.space.params.items():
            field = f"search_space.overrides.{name}" if name in self.search_space.overrides else f"search_space ({self.search_space.name}).{name}"
            hparams.check_name(name, field)
            for value in param.bounds():
                hparams.check_value(name, value, field)
        if self.search.algorithm == "grid":
            self.space.grid_points(self.methods)  # raises on continuous ranges
            if self.search.first_points:
                raise StudyError("search.first_points", "a grid already runs every point", "remove first_points or use random / optuna")
        for i, point in enumerate(self.search.first_points):
            self._validate_point(point, f"search.first_points[{i}]")
        if self.final is not None:
            trials = self.space.trial_count(self.search.algorithm, self.methods, self.search.num_samples, self.search.grid_repeats)
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
            from trainables.model import PACKAGED_MODELS

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
    return build(Study, raw)
