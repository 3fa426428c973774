"""A toy task kind and a toy tracker, each added the documented way: one module (this one
holds both, for the test) and one registration line each. Nothing else in the project knows
them; tests/test_architecture.py runs a sweep with both."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from ray import tune

from core.errors import StudyError
from sweeps.tracking import TRACKERS, TrackerContext
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


TOY = ShortTexts()
register(TOY, Task("toy_short_texts", TOY, ("toy_accuracy", "eval_loss"), "short texts, toy-scored (tests)", "single_label_classification"))
TRACKERS.register("jsonl", JsonLinesTracker)
