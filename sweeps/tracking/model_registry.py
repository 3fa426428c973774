"""The study's model in MLflow's Model Registry: one version per study run that found a model.

At the end of a study (and of an ``--extend`` that found a better model) the study's model (the
final stage's pick where there is one) is exported as ``sweeps.export`` writes it (the adapter
with the fine-tuned config and tokenizer, or merged weights for full fine-tuning), wrapped as
an MLflow pyfunc model whose ``predict`` is ``sweeps.predict``'s own loading and answering code,
logged under the study's parent run (``model/``) and registered as a new version. The alias
(``tracking.champion_alias``) moves to the new version only when it beats the version holding
it on the study's metric; nothing is overwritten.

    mlflow.pyfunc.load_model("models:/<study>@champion").predict(["a text", "another"])
    mlflow models serve -m models:/<study>@champion --env-manager local
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from core.errors import StudyError

MODEL_PATH = "model"  # the pyfunc model's folder among the parent run's artifacts
# A row a user might send, per input field of the task kinds (the model's input example).
EXAMPLE = {
    "text": "I can't believe how well this turned out!",
    "text_pair": "The result was good.",
    "question": "Where is the Eiffel Tower?",
    "context": "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "prompt": "Summarize in one sentence: the meeting moved to Friday because the room was booked.",
}


def as_rows(model_input: Any, fields: tuple[str, ...]) -> list[dict[str, str]]:
    """The inputs as the task kind's rows: a DataFrame or records with its fields, or (for a
    one-field task) plain strings, as ``sweeps.predict`` takes them on its command line."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if len(fields) == 1 and fields[0] not in model_input.columns and model_input.shape[1] == 1:
            return [{fields[0]: str(v)} for v in model_input.iloc[:, 0]]
        records = model_input.to_dict(orient="records")
    elif isinstance(model_input, dict):
        records = pd.DataFrame(model_input).to_dict(orient="records")
    elif isinstance(model_input, str):
        records = [model_input]
    else:
        records = list(model_input)
    rows = []
    for record in records:
        if isinstance(record, str) and len(fields) == 1:
            rows.append({fields[0]: record})
        elif isinstance(record, dict) and all(f in record for f in fields):
            rows.append({f: str(record[f]) for f in fields})
        else:
            raise ValueError(f"each input needs the fields {', '.join(fields)}; got {record!r}")
    return rows


# MLflow reads a PythonModel's predict type hints as its input schema and warns about hints that
# are not list[...] (ours take strings, rows or a DataFrame; the saved model carries an explicit
# signature per task kind instead): once when the class is defined, again when it is saved. The
# warnings would open every command's output and push a bad-input error off its one line.
_TYPE_HINT_NOTICE = r"(?s).*(type hint|Type hint)"


class SweepModel(mlflow.pyfunc.PythonModel):
    """A sweep's model as MLflow serves it: ``trainables.inference`` loads the export and answers."""

    _skip_type_hint_validation = True  # MLflow's own switch (its ChatModel sets it): no hint-based wrapping, no notice

    def load_context(self, context: Any) -> None:
        from trainables import inference
        from trainables.kinds import TASKS

        inference.quiet()
        self.model, self.tokenizer, self.info = inference.load(context.artifacts["export"])
        task = TASKS[self.info["task"]]
        self.fields = task.kind.input_fields(task)

    def predict(self, context: Any, model_input: Any, params: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
        from trainables import inference

        return inference.answer(self.model, self.tokenizer, self.info, as_rows(model_input, self.fields))


@dataclasses.dataclass(frozen=True)
class Registered:
    name: str
    version: str
    champion: bool
    line: str  # what the console says


def model_name(tracking: Any, experiment: str) -> str:
    """``tracking.registered_model``, else the study's MLflow experiment: the study's name, and
    ``<study>-smoke`` for a ``--smoke`` run, which must not add versions to the real study's model."""
    return tracking.registered_model or experiment


def check(client: MlflowClient, name: str, task: str) -> None:
    """Before anything runs: the store has a registry, and ``name`` is free or holds this task's models."""
    try:
        found = client.search_registered_models(filter_string=f"name = '{name}'", max_results=1)
    except Exception as exc:
        raise StudyError("tracking.register", f"the tracking store has no model registry ({type(exc).__name__})",
                         "use a database store or server (sqlite:///mlflow.db, mlflow server), or set tracking.register: false") from None
    held = found[0].tags.get("task") if found else None
    if held is not None and held != task:
        raise StudyError("tracking.registered_model", f"{name!r} in the Model Registry holds {held} models, this study trains {task}",
                         "set tracking.registered_model to another name")


def beats(new: Optional[float], held: Optional[float], mode: str) -> bool:
    """Whether a new version takes the alias from the version holding it (none held: it does)."""
    if held is None:
        return True
    if new is None:
        return False
    return new > held if mode == "max" else new < held


def _requirements(quantized: bool) -> list[str]:
    """What loading the model needs, pinned to what trained it (given, not inferred: inferring
    loads the model in a subprocess)."""
    names = ["mlflow", "torch", "transformers", "peft", "pandas"] + (["bitsandbytes"] if quantized else [])
    out = []
    for name in names:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(name)
    return out


def register(client: MlflowClient, parent: Run, tracking: Any, study_name: str, experiment: str, mode: str) -> Registered:
    """Log the parent's study model as a pyfunc under the parent run and register a new version."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from sweeps.export import export
    from trainables.kinds import TASKS

    name = model_name(tracking, experiment)
    parent_id = parent.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        info = export(client, parent, Path(tmp) / "export")
        task = TASKS[info["task"]]
        fields = task.kind.input_fields(task)
        # one field (texts, prompts): plain strings, as predict's command line takes them; else named columns
        signature = ModelSignature(inputs=Schema([ColSpec("string")] if len(fields) == 1 else [ColSpec("string", f) for f in fields]))
        example = [EXAMPLE.get(fields[0], "example")] if len(fields) == 1 else {f: [EXAMPLE.get(f, "example")] for f in fields}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TYPE_HINT_NOTICE, category=UserWarning)
            mlflow.pyfunc.save_model(
                Path(tmp) / MODEL_PATH, python_model=SweepModel(), artifacts={"export": str(Path(tmp) / "export")},
                signature=signature, input_example=example, pip_requirements=_requirements(bool(info.get("quantization"))),
                metadata={"study": study_name, "task": info["task"], "base_model": info["model"], "method": info["method"], "merged": info["merged"]},
            )
        client.log_artifacts(parent_id, str(Path(tmp) / MODEL_PATH), MODEL_PATH)
    try:
        client.create_registered_model(name, tags={"task": info["task"], "study": study_name},
                                       description=f"Models of the sweep study {study_name!r} ({info['task']}), one version per study run.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    metric, value = info["metric"], info["value"]
    tags = {"study": study_name, "task": info["task"], "parent_run_id": parent_id, "trial_run_id": info["trial_run_id"],
            "base_model": info["model"], "method": info["method"], "merged": str(info["merged"]).lower(), "metric": metric,
            "value": "" if value is None else repr(float(value)), "mode": mode}
    version = client.create_model_version(name, f"{parent.info.artifact_uri}/{MODEL_PATH}", run_id=parent_id, tags=tags,
                                          description=f"{info['method']} on {info['model']}: {metric} {value}")
    alias = tracking.champion_alias
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        holder = None
    held = None
    if holder is not None and holder.tags.get("value") and holder.tags.get("metric") == metric:
        held = float(holder.tags["value"])
    what = f"{name} version {version.version}"
    if holder is None or beats(value, held, mode) and held is not None:
        client.set_registered_model_alias(name, alias, version.version)
        since = "" if holder is None else f": {metric} {value:.4f} beats version {holder.version}'s {held:.4f}"
        return Registered(name, version.version, True, f"registered {what} as @{alias}{since}")
    why = (f"its {metric} {value} does not beat version {holder.version}'s {held}" if held is not None
           else f"version {holder.version} holds it and records no {metric} to compare with")
    return Registered(name, version.version, False, f"registered {what} without @{alias}: {why}")
