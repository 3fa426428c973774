"""``python -m sweeps.serve STUDY|RUN_ID [--trial RUN_ID] [--port N]``: try a study's model in
the browser (Gradio; ``pip install -e ".[ui]"``).

The model is the one ``sweeps.predict`` answers with: the study's model (the final stage's pick
where there is one) or ``--trial``, exported once by ``sweeps.export`` into the cache and loaded
the way its README says, so the app, ``predict`` and an exported folder give the same answers.
Each task kind has a view (``VIEWS``): classification shows every label's probability beside the
base model's (adapter off) and validation texts to click; extractive QA the answer span in its
context with its probability ("no answer" for SQuAD v2 studies); instruction tuning a streamed
chat with the tuned or the base model. A kind without a view gets text boxes for its
``input_fields`` and its answer as JSON.

Listens on 127.0.0.1 unless ``--host`` says otherwise; a public gradio.live link only with
``--share``. Exit codes: 0 stopped, 2 bad input (unknown study/run, no finished trial, port in
use, Gradio missing), all before the model loads.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from core.errors import StudyError
from core.registry import Registry
from sweeps import predict
from sweeps.tracking import runs
from trainables.kinds import Task

EXAMPLES = 8  # validation inputs offered to click


@dataclasses.dataclass
class Served:
    """What the app serves: the loaded model and where it came from."""

    model: Any
    tokenizer: Any
    info: dict[str, Any]  # the export's sweep_export.json
    task: Task
    trial_name: str
    examples: list[dict[str, str]]  # validation inputs (fields: the kind's input_fields)

    def answer(self, rows: list[dict[str, str]], base: bool = False) -> list[dict[str, Any]]:
        """The tuned model's answers, or with ``base`` the same model with its adapter off."""
        from trainables import inference

        with self.adapter_off() if base else contextlib.nullcontext():
            return inference.answer(self.model, self.tokenizer, self.info, rows)

    @property
    def has_base(self) -> bool:
        """Whether the base model can answer beside the tuned one (an adapter to switch off;
        merged exports of the ``full``/``head`` baselines have none)."""
        return hasattr(self.model, "disable_adapter")

    def adapter_off(self) -> Any:
        return self.model.disable_adapter()

    def header(self) -> str:
        i = self.info
        value = f"{i['value']:.4f}" if isinstance(i.get("value"), float) else "n/a"
        params = ", ".join(f"{k}={v}" for k, v in sorted(i["params"].items()) if k != "method")
        return (
            f"### {i['study']}: {i['task']} with `{i['model']}`\n"
            f"Trial **{self.trial_name}** (MLflow run `{i['trial_run_id']}`, study run `{i['parent_run_id']}`) · "
            f"method **{i['method']}** · validation {i['metric']} **{value}**  \n{params}"
        )


def check_port(host: str, port: int) -> None:
    """Fail before loading anything when the port is taken (Gradio would only say so after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise StudyError("--port", f"{host}:{port} is not free ({exc.strerror})", "pass another --port, or stop what listens there") from None


def check_gradio() -> None:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise StudyError("gradio", "not installed", 'pip install -e ".[ui]" (scripts/setup.sh installs it)') from None


def validation_examples(client: Any, trial_run_id: str, task: Task) -> list[dict[str, str]]:
    """A few validation inputs from the trial's eval file (none if it has no such columns)."""
    import mlflow
    import pandas as pd

    fields = list(task.kind.input_fields(task))
    try:
        path = mlflow.artifacts.download_artifacts(run_id=trial_run_id, artifact_path=task.kind.eval_file, tracking_uri=client.tracking_uri)
        frame = pd.read_csv(path, keep_default_na=False)
    except Exception:
        return []
    if not set(fields) <= set(frame.columns):
        return []
    return frame[fields].astype(str).head(EXAMPLES).to_dict("records")


def load(ref: str, tracking_uri: Optional[str], trial_run_id: Optional[str]) -> Served:
    """Find, export (once) and load the model; StudyError for bad input."""
    client, parent = runs.find_parent(ref, tracking_uri)
    task = predict.study_task(client, parent, ref)
    folder = predict.exported(client, parent, trial_run_id)
    from trainables import inference

    model, tokenizer, info = inference.load(folder)
    trial = client.get_run(info["trial_run_id"])
    examples = validation_examples(client, trial.info.run_id, task)
    return Served(model, tokenizer, info, task, trial.data.tags.get("trial_name", trial.info.run_name), examples)


# --- views: one per task kind -------------------------------------------------------------

View = Callable[[Served], None]  # adds the kind's components and events to the open gr.Blocks
VIEWS: Registry[View] = Registry("serve view")


def classification_view(served: Served) -> None:
    import gradio as gr

    fields = served.task.kind.input_fields(served.task)
    with gr.Row():
        with gr.Column():
            inputs = [gr.Textbox(label=f, lines=3, elem_id=f"input-{f}") for f in fields]
            button = gr.Button("Classify", variant="primary", elem_id="submit")
        with gr.Column():
            predicted = gr.Textbox(label="tuned model: predicted label(s)", elem_id="tuned-labels", interactive=False)
            tuned = gr.Label(label="tuned model: every label's probability", elem_id="tuned-scores")
            base = gr.Label(label="base model (adapter off, untrained head)", elem_id="base-scores", visible=served.has_base)

    def classify(*values: str) -> tuple[str, dict[str, float], Optional[dict[str, float]]]:
        row = dict(zip(fields, values))
        out = served.answer([row])[0]
        before = served.answer([row], base=True)[0]["scores"] if served.has_base else None
        return ", ".join(out["labels"]) or "(no label above 0.5)", out["scores"], before

    button.click(classify, inputs, [predicted, tuned, base], api_name="classify")
    if served.examples:
        gr.Examples([[e[f] for f in fields] for e in served.examples], inputs, label="validation examples (click one)")


def qa_view(served: Served) -> None:
    import gradio as gr

    with gr.Row():
        with gr.Column():
            question = gr.Textbox(label="question", elem_id="input-question")
            context = gr.Textbox(label="context", lines=8, elem_id="input-context")
            button = gr.Button("Answer", variant="primary", elem_id="submit")
        with gr.Column():
            answer = gr.Textbox(label="answer", elem_id="answer", interactive=False)
            score = gr.Number(label="probability", elem_id="answer-score", interactive=False)
            where = gr.HighlightedText(label="in the context", elem_id="answer-in-context")

    no_answer = "(no answer in the context)"

    def ask(q: str, c: str) -> tuple[str, float, list[tuple[str, Optional[str]]]]:
        out = served.answer([{"question": q, "context": c}])[0]
        if out["no_answer"]:
            return no_answer, out["score"], [(c, None)]
        start, end = out["start"], out["start"] + len(out["answer"])
        return out["answer"], out["score"], [(c[:start], None), (c[start:end], "answer"), (c[end:], None)]

    button.click(ask, [question, context], [answer, score, where], api_name="answer")
    if served.examples:
        gr.Examples([[e["question"], e["context"]] for e in served.examples], [question, context], label="validation questions (click one)")


def chat_view(served: Served) -> None:
    import gradio as gr

    from trainables.inference import training_of
    from trainables.kinds.sft import stream

    choices = ["tuned", "base (adapter off)"] if served.has_base else ["tuned"]
    which = gr.Radio(choices, value="tuned", label="model", elem_id="which-model")
    max_new_tokens = training_of(served.info).max_new_tokens

    def respond(message: str, history: list[dict[str, Any]], model_choice: str) -> Iterator[str]:
        msgs = [{"role": m["role"], "content": str(m["content"])} for m in history if m.get("role") in ("user", "assistant")]
        msgs.append({"role": "user", "content": message})
        with served.adapter_off() if model_choice != "tuned" else contextlib.nullcontext():
            yield from stream(served.model, served.tokenizer, msgs, max_new_tokens)

    gr.ChatInterface(respond, additional_inputs=[which], chatbot=gr.Chatbot(elem_id="chat", height=420), textbox=gr.Textbox(elem_id="chat-input", placeholder="Ask the tuned model"))


def generic_view(served: Served) -> None:
    """Any kind: its input fields in, its answer as JSON out."""
    import gradio as gr

    fields = served.task.kind.input_fields(served.task)
    inputs = [gr.Textbox(label=f, elem_id=f"input-{f}") for f in fields]
    button = gr.Button("Answer", variant="primary", elem_id="submit")
    output = gr.JSON(label="answer", elem_id="answer")
    button.click(lambda *values: served.answer([dict(zip(fields, values))])[0], inputs, output, api_name="answer")


VIEWS.register("classification", classification_view)
VIEWS.register("qa", qa_view)
VIEWS.register("sft", chat_view)


def build_app(served: Served) -> Any:
    """The Gradio app: the header saying what is served, then the kind's view."""
    import gradio as gr

    title = f"{served.info['study']}: {served.trial_name}"
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(served.header(), elem_id="served")
        name = served.task.kind.name
        (VIEWS[name] if name in VIEWS else generic_view)(served)
    return app


# A theme with local fonts: the default one fetches Google Fonts, which an offline machine cannot.
def theme() -> Any:
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sweeps.serve", description="Try a study's model in the browser (Gradio).")
    runs.add_run_arguments(p)
    p.add_argument("--trial", help="serve this trial run id instead of the study's model")
    p.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (anyone with it can use the model)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from trainables.inference import quiet

    quiet()
    try:
        check_gradio()
        check_port(args.host, args.port)
        served = load(args.ref, args.tracking_uri, args.trial)
    except StudyError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    app = build_app(served)
    print(f"serving {served.info['study']} trial {served.trial_name} ({served.info['method']}) from {Path(predict.cache_folder(served.info['trial_run_id']))}")
    try:
        app.launch(server_name=args.host, server_port=args.port, share=args.share, theme=theme(), ssr_mode=False, footer_links=[], quiet=False)
    except OSError as exc:  # the port was taken between the check and the launch
        print(f"error: --port: {args.host}:{args.port} is not free ({exc}) (fix: pass another --port)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
