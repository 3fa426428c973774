"""Task kinds: what a study's task needs from the data, which model head it trains, how it is
scored. One module per kind, one registered ``TaskKind`` object each.

A kind answers the five questions of a trial (``prepare`` the data in the driver; ``collator``
and ``train_split`` for training; ``evaluate`` and ``write_files`` at each eval point) plus what
the driver needs before anything starts (``check``, ``floors``), what shapes the model
(``auto_model_name``, ``peft_task_type``, ``head_kwargs``) and how a trained model answers a
user (``input_fields``, ``answer``: ``sweeps.predict`` and ``sweeps.serve``). A kind offers one or more ``Task``s:
the names a study's ``task:`` takes (classification offers single_label, multi_label and
sentence_pair).

Adding a kind: a module with the kind's functions, and a declaration that names it,
``register(ModuleKind("name", "dotted.module", ...), Task(...), ...)`` (the built-in ones are in
``builtin.py``; any class with the ``TaskKind`` members works too). See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any, Optional, Protocol

from core.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

    from core.specs import DataSpec, TrainingSpec
    from trainables.data.load import PreparedData


class TaskKind(Protocol):
    """The contract between a task kind and the trial loop / the sweep driver."""

    name: str  # "classification"
    auto_model_name: str  # the transformers Auto class whose head it trains
    peft_task_type: str  # peft TaskType name
    fresh_head: bool  # trains a freshly initialised task head (the `head` baseline applies)
    eval_file: str  # the validation file each checkpoint carries (relative to the checkpoint)
    no_floor_because: Optional[str]  # why no classical floor is fitted (None: ``floors`` fits some)

    def check(self, task: "Task", data: "DataSpec", training: "TrainingSpec") -> None:
        """Raise StudyError for study settings this kind cannot use (before anything runs)."""

    def head_kwargs(self, task: "Task", label_names: list[str]) -> dict[str, Any]:
        """``from_pretrained`` arguments that shape the task head."""

    def prepare(self, data: "DataSpec", task: "Task", tokenizer: Any, training: "TrainingSpec", seed: int) -> "PreparedData":
        """Load, check and tokenize the study's data (in the driver, once per study)."""

    def floors(self, data: "PreparedData", task: "Task", seed: int) -> list[Any]:
        """Classical baselines fitted on the trials' own training rows (trainables.evaluation.floors)."""

    def collator(self, tokenizer: Any, task: "Task") -> Any:
        """Batches of the tokenized rows."""

    def train_split(self, data: "PreparedData", hp: dict[str, Any], training: "TrainingSpec") -> Any:
        """The rows a trial trains on (instruction tuning may pack them per trial)."""

    def evaluate(self, model: "torch.nn.Module", loader: "DataLoader", data: "PreparedData", split: str, device: "torch.device", task: "Task", training: "TrainingSpec") -> tuple[dict[str, float], Any]:
        """Metrics over ``split`` and the payload ``write_files`` turns into eval files."""

    def write_files(self, folder: str, payload: Any, base_payload: Optional[Any], data: "PreparedData", task: "Task") -> None:
        """The checkpoint's validation files (``eval/``), next to the model before training."""

    def input_fields(self, task: "Task") -> tuple[str, ...]:
        """What a user gives a trained model, per input (``sweeps.predict``, ``sweeps.serve``)."""

    def answer(self, model: "torch.nn.Module", tokenizer: Any, rows: list[dict[str, str]], task: "Task", training: "TrainingSpec") -> list[dict[str, Any]]:
        """The trained model's answer to each input row (keys: ``input_fields``), as a
        JSON-ready dict; computed as ``evaluate`` computes its predictions."""


@dataclasses.dataclass(frozen=True)
class ModuleKind:
    """A task kind whose functions are those of one module (the built-in kinds): the kind
    travels to Ray's processes as a few strings, and its module is imported where it is used."""

    name: str
    module: str  # dotted name of the module holding the kind's functions
    auto_model_name: str
    peft_task_type: str
    fresh_head: bool
    eval_file: str
    no_floor_because: Optional[str] = None

    def _functions(self) -> Any:
        return importlib.import_module(self.module)

    def check(self, task: "Task", data: "DataSpec", training: "TrainingSpec") -> None:
        self._functions().check(task, data, training)

    def head_kwargs(self, task: "Task", label_names: list[str]) -> dict[str, Any]:
        return self._functions().head_kwargs(task, label_names)

    def prepare(self, data: "DataSpec", task: "Task", tokenizer: Any, training: "TrainingSpec", seed: int) -> "PreparedData":
        return self._functions().prepare(data, task, tokenizer, training, seed)

    def floors(self, data: "PreparedData", task: "Task", seed: int) -> list[Any]:
        return self._functions().floors(data, task, seed)

    def collator(self, tokenizer: Any, task: "Task") -> Any:
        return self._functions().collator(tokenizer, task)

    def train_split(self, data: "PreparedData", hp: dict[str, Any], training: "TrainingSpec") -> Any:
        return self._functions().train_split(data, hp, training)

    def evaluate(self, model: Any, loader: Any, data: "PreparedData", split: str, device: Any, task: "Task", training: "TrainingSpec") -> tuple[dict[str, float], Any]:
        return self._functions().evaluate(model, loader, data, split, device, task, training)

    def write_files(self, folder: str, payload: Any, base_payload: Optional[Any], data: "PreparedData", task: "Task") -> None:
        self._functions().write_files(folder, payload, base_payload, data, task)

    def input_fields(self, task: "Task") -> tuple[str, ...]:
        return self._functions().input_fields(task)

    def answer(self, model: Any, tokenizer: Any, rows: list[dict[str, str]], task: "Task", training: "TrainingSpec") -> list[dict[str, Any]]:
        return self._functions().answer(model, tokenizer, rows, task, training)


@dataclasses.dataclass(frozen=True)
class Task:
    """A name a study's ``task:`` takes, with the kind that runs it and its variant flags."""

    name: str
    kind: TaskKind
    metrics: tuple[str, ...]
    description: str
    problem_type: Optional[str] = None  # transformers' config.problem_type (classification)
    needs_text_pair: bool = False
    multi_label: bool = False
    allow_no_answer: bool = False  # QA: SQuAD v2 (questions the context cannot answer)

    @property
    def auto_model(self) -> Any:
        """The transformers Auto class whose head this task trains."""
        import transformers

        return getattr(transformers, self.kind.auto_model_name)

    @property
    def peft_task_type(self) -> str:
        return self.kind.peft_task_type


KINDS: Registry[TaskKind] = Registry("task kind")
TASKS: Registry[Task] = Registry("task")


def register(kind: TaskKind, *tasks: Task) -> TaskKind:
    """Register a task kind and the tasks it offers (each task's ``kind`` must be ``kind``)."""
    KINDS.register(kind.name, kind)
    for task in tasks:
        assert task.kind is kind, f"task {task.name} belongs to another kind"
        TASKS.register(task.name, task)
    return kind


# The built-in kinds, declared on import; each one's module is imported where it is first used.
from trainables.kinds import builtin  # noqa: E402,F401
