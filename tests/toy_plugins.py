"""A toy task kind, PEFT method, searcher and tracker, each added the documented way: one module
(this one holds all four, for the test) and one registration line each. Nothing else in the
project knows them; tests/test_architecture.py runs a sweep with the kind, the searcher and the
tracker, and builds a model with the method."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from ray import tune

from core import hparams
from core.errors import StudyError
from sweeps.tracking import TRACKERS, TrackerContext
from sweeps.tuning.searchers import SEARCHERS, GridSearcher, SearchAlgorithm
from trainables.model import methods
from trainables.kinds import Task, classification, register


class ShortTexts:
    """Classification scored by its own metric (``toy_accuracy``), refusing long inputs, with its
    own eval file: every part a trial calls goes through this object."""

    name = "toy"
    auto_model_name = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    fresh_head = True
    eval_file = "eval/toy.json"
    no_floor_because = "a toy kind fits no floor"
    head_kwargs = staticmethod(classification.head_kwargs)
    prepare = staticmethod(classification.prepare)
    collator = staticmethod(classification.collator)
    train_split = staticmethod(classification.train_split)
    input_fields = staticmethod(classification.input_fields)
    answer = staticmethod(classification.answer)

    def check(self, task: Task, data: Any, training: Any) -> None:
        if training.max_length > 64:
            raise StudyError("training.max_length", f"{training.max_length} tokens: the toy kind reads short texts only", "use <= 64")

    def floors(self, data: Any, task: Task, seed: int) -> list[Any]:
        return []

    def evaluate(self, model: Any, loader: Any, data: Any, split: str, device: Any, task: Task, training: Any) -> tuple[dict[str, float], Any]:
        metrics, (logits, labels) = classification.evaluate(model, loader, data, split, device, task, training)
        return {"toy_accuracy": metrics["accuracy"], "eval_loss": metrics["eval_loss"]}, len(labels)

    def write_files(self, folder: str, payload: Any, base_payload: Optional[Any], data: Any, task: Task) -> None:
        os.makedirs(os.path.join(folder, "eval"), exist_ok=True)
        with open(os.path.join(folder, self.eval_file), "w") as f:
            json.dump({"rows": payload}, f)


class JsonLinesTracker(tune.Callback):
    """Every trial result as one JSON line in ``<storage>/<run name>-<stage>.jsonl``."""

    def __init__(self, ctx: TrackerContext) -> None:
        self.ctx = ctx
        self.path = Path(ctx.storage) / f"{ctx.run_name}-{ctx.stage}.jsonl"

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"trial": str(trial), "step": result.get("step"), self.ctx.metric: result.get(self.ctx.metric)}) + "\n")


def first_point(space: Any, methods: list[str], metric: str, mode: str, **_: Any) -> GridSearcher:
    """A searcher that runs the space's first grid point only."""
    return GridSearcher(space.grid_points(methods)[:1], metric=metric, mode=mode)


def tiny_lora(hp: dict[str, Any], task_type: str, model_type: str) -> Any:
    """LoRA whose rank is the method's own hyperparameter, ``toy_rank``."""
    return methods.METHODS["lora"].peft_config({**hp, "lora_r": hp.get("toy_rank", 2)}, task_type, model_type)


TOY = ShortTexts()
register(TOY, Task("toy_short_texts", TOY, ("toy_accuracy", "eval_loss"), "short texts, toy-scored (tests)", "single_label_classification"))
TRACKERS.register("jsonl", JsonLinesTracker)
SEARCHERS.register("first_point", SearchAlgorithm("first_point", "the first grid point only (tests)", first_point))
methods.register(methods.Method("tiny_lora", "LoRA at its own rank (tests)", tiny_lora, hyperparams={"toy_rank": (hparams.positive_int, "toy_rank is an integer > 0", "use 2")}))
