"""``python -m sweeps.predict STUDY|RUN_ID INPUTS [--json]``: answers from a study's model, for
every task kind: ``"some text" [--pair P]`` (classification), ``--question Q --context C``
(extractive QA), ``"a prompt"`` (instruction tuning), or ``--file F`` with those columns.

The adapter is exported once per trial into a cache folder (``$SWEEPS_CACHE``, default
``~/.cache/peft-sweeps``) and loaded exactly as ``sweeps.export`` tells users to load it, so
these predictions are the ones an exported model gives.

Exit codes: 0 done, 2 bad input (unknown study/run, no finished trial, no or wrong inputs, unreadable file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

from core.errors import StudyError
from sweeps.tracking import runs
from trainables.inference import EXPORT_INFO
from trainables.kinds import TASKS, Task


def cache_folder(trial_run_id: str) -> Path:
    root = Path(os.environ.get("SWEEPS_CACHE", "~/.cache/peft-sweeps")).expanduser()
    return root / "adapters" / trial_run_id


def read_rows(path: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
    """Inputs from a .txt (one ``fields[0]`` per line; single-field tasks only), .jsonl or
    .csv/.tsv file (one column per field)."""
    import pandas as pd

    file = Path(path).expanduser()
    columns = " and ".join(repr(f) for f in fields)
    if not file.is_file():
        raise StudyError("--file", f"no such file {path!r}", f"pass a .jsonl or .csv file with columns {columns}" + (" or a .txt file (one per line)" if len(fields) == 1 else ""))
    if file.suffix in (".jsonl", ".csv", ".tsv"):
        frame = pd.read_json(file, lines=True) if file.suffix == ".jsonl" else pd.read_csv(file, sep="\t" if file.suffix == ".tsv" else ",", keep_default_na=False)
        missing = [f for f in fields if f not in frame]
        if missing:
            raise StudyError("--file", f"{path} has no {', '.join(map(repr, missing))} column (columns: {', '.join(map(str, frame.columns))})", f"give it the columns {columns}")
        return frame[list(fields)].astype(str).to_dict("records")
    if len(fields) > 1:
        raise StudyError("--file", f"{path}: this study takes {columns} per input", "pass a .jsonl or .csv file with those columns")
    return [{fields[0]: ln} for ln in file.read_text().splitlines() if ln.strip()]


def rows_from(args: argparse.Namespace, fields: tuple[str, ...]) -> list[dict[str, str]]:
    """The inputs of the command line (and ``--file``), one dict per input, checked against
    what the study's task takes (``fields``)."""
    given = {"text_pair": args.pair, "question": args.question, "context": args.context}
    if fields[0] in ("text", "prompt"):
        rows = [{fields[0]: t} for t in args.texts]
        if "text_pair" in fields:
            if args.pair and len(args.pair) != len(rows):
                raise StudyError("--pair", f"{len(args.pair)} pairs for {len(rows)} texts", "give one --pair per text")
            if rows and not args.pair:
                raise StudyError("--pair", "this study classifies text pairs", "give one --pair per text (or a text_pair column in --file)")
            rows = [{**r, "text_pair": p} for r, p in zip(rows, args.pair)]
        elif args.pair:
            raise StudyError("--pair", "this study labels single texts", "leave --pair out")
    else:  # question answering: --question with --context
        if args.texts:
            raise StudyError("texts", "a question-answering study takes --question and --context, not plain texts", 'pass --question "..." --context "..." (repeatable, in pairs)')
        if len(args.question) != len(args.context):
            raise StudyError("--context", f"{len(args.question)} questions for {len(args.context)} contexts", "give one --context per --question")
        rows = [{"question": q, "context": c} for q, c in zip(args.question, args.context)]
    for name, values in given.items():
        if values and name not in fields:
            raise StudyError(f"--{name.replace('_', '-')}" if name != "text_pair" else "--pair", f"this study's task takes {', '.join(fields)}", "leave it out")
    if args.file:
        rows += read_rows(args.file, fields)
    if not rows:
        example = '--question "..." --context "..."' if "question" in fields else '"some text"'
        raise StudyError("inputs", "nothing to predict", f"pass {example} or --file FILE")
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sweeps.predict", description="Answer with a study's best model: labels (classification), answer spans (QA), generated answers (instruction tuning).")
    runs.add_run_arguments(p)
    p.add_argument("texts", nargs="*", help="texts to classify, or prompts for an instruction-tuned model")
    p.add_argument("--pair", action="append", default=[], help="second text for sentence-pair tasks (one per text, in order)")
    p.add_argument("--question", action="append", default=[], help="QA: a question (repeatable, each with a --context)")
    p.add_argument("--context", action="append", default=[], help="QA: the passage that answers the --question of the same position")
    p.add_argument("--file", help="more inputs: .jsonl or .csv with the task's columns (text [text_pair] / question, context / prompt), or .txt with one text or prompt per line")
    p.add_argument("--json", action="store_true", help="print one JSON object per input: the input and the whole answer (every label's score, the span's score)")
    p.add_argument("--trial", help="use this trial run id instead of the study's model")
    return p


def exported(client: Any, parent: Any, trial_run_id: Optional[str]) -> Path:
    """The trial's export folder (the study's model when ``trial_run_id`` is None), written
    once by ``sweeps.export`` into the cache."""
    trial_id = runs.trial_of(client, parent, trial_run_id).info.run_id
    folder = cache_folder(trial_id)
    if not (folder / EXPORT_INFO).is_file():
        from sweeps.export import export

        export(client, parent, folder, trial_run_id=trial_id)
    return folder


def study_task(client: Any, parent: Any, ref: str) -> Task:
    """The task a study run trained (read from its study.yaml), checked to be one we know."""
    name = (runs.parent_yaml(client, parent, runs.STUDY_FILE) or {}).get("task")
    if name not in TASKS:
        raise StudyError("run", f"{ref} records no known task ({name!r})", "pass a study run by this version of sweeps")
    return TASKS[name]


def shown(row: dict[str, Any], answer: dict[str, Any]) -> str:
    """One readable line per answer."""
    if "labels" in answer:
        top = max(answer["scores"].values()) if answer["scores"] else 0.0
        labels = ", ".join(f"{label} ({answer['scores'][label]:.2f})" for label in answer["labels"]) or f"(no label; top score {top:.2f})"
        return f"{labels}\t{row['text']}"
    if "no_answer" in answer:
        return f"{'(no answer)' if answer['no_answer'] else answer['answer']} ({answer['score']:.2f})\t{row['question']}"
    return answer["answer"]


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_intermixed_args(argv)  # texts may follow options
    from trainables.inference import quiet

    quiet()
    try:
        client, parent = runs.find_parent(args.ref, args.tracking_uri)
        task = study_task(client, parent, args.ref)
        rows = rows_from(args, task.kind.input_fields(task))
        folder = exported(client, parent, args.trial)
    except StudyError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    from trainables import inference

    model, tokenizer, info = inference.load(folder)
    for row, answer in zip(rows, inference.answer(model, tokenizer, info, rows)):
        print(json.dumps({**row, **answer}) if args.json else shown(row, answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
