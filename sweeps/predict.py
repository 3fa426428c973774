"""``python -m sweeps.predict STUDY|RUN_ID "some text" [...] [--file F]``: predictions from the
best trial's adapter.

The adapter is exported once per trial into a cache folder (``$SWEEPS_CACHE``, default
``~/.cache/peft-sweeps``) and loaded exactly as ``sweeps.export`` tells users to load it, so
these predictions are the ones an exported model gives.

Exit codes: 0 done, 2 bad input (unknown study/run, no texts, unreadable file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

from core.errors import StudyError
from sweeps.tracking import runs
from trainables.inference import EXPORT_INFO
from trainables.kinds import TASKS


def cache_folder(trial_run_id: str) -> Path:
    root = Path(os.environ.get("SWEEPS_CACHE", "~/.cache/peft-sweeps")).expanduser()
    return root / "adapters" / trial_run_id


def read_texts(path: str) -> tuple[list[str], Optional[list[str]]]:
    """Texts (and text pairs) from a .txt (one per line), .jsonl or .csv/.tsv (columns ``text``
    and optionally ``text_pair``) file."""
    import pandas as pd

    file = Path(path).expanduser()
    if not file.is_file():
        raise StudyError("--file", f"no such file {path!r}", "pass a .txt (one text per line), .jsonl or .csv file")
    if file.suffix in (".jsonl", ".csv", ".tsv"):
        frame = pd.read_json(file, lines=True) if file.suffix == ".jsonl" else pd.read_csv(file, sep="\t" if file.suffix == ".tsv" else ",")
        if "text" not in frame:
            raise StudyError("--file", f"{path} has no 'text' column (columns: {', '.join(map(str, frame.columns))})", "name the input column 'text'")
        pairs = frame["text_pair"].astype(str).tolist() if "text_pair" in frame else None
        return frame["text"].astype(str).tolist(), pairs
    return [ln for ln in file.read_text().splitlines() if ln.strip()], None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sweeps.predict", description="Predict with a study's best adapter.")
    runs.add_run_arguments(p)
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--file", help="more texts: .txt (one per line), .jsonl or .csv with a 'text' (and 'text_pair') column")
    p.add_argument("--pair", action="append", default=[], help="second text for sentence-pair tasks (one per text, in order)")
    p.add_argument("--json", action="store_true", help="print one JSON object per text (labels and every label's score)")
    p.add_argument("--trial", help="use this trial run id instead of the best")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    from trainables.inference import quiet

    quiet()
    try:
        texts, pairs = list(args.texts), list(args.pair) or None
        if args.file:
            more, more_pairs = read_texts(args.file)
            if (pairs is None) != (more_pairs is None) and texts:
                raise StudyError("--pair", "pairs given for some texts only", "give a pair for every text, or none")
            texts += more
            pairs = (pairs or []) + more_pairs if more_pairs is not None else pairs
        if not texts:
            raise StudyError("texts", "nothing to predict", 'pass texts ("some text") or --file FILE')
        if pairs is not None and len(pairs) != len(texts):
            raise StudyError("--pair", f"{len(pairs)} pairs for {len(texts)} texts", "give one --pair per text")
        client, parent = runs.find_parent(args.ref, args.tracking_uri)
        task = (runs.parent_yaml(client, parent, runs.STUDY_FILE) or {}).get("task")
        if task in TASKS and TASKS[task].kind.name != "classification":
            raise StudyError("study", f"{args.ref} is a {task} study; sweeps.predict labels texts of classification studies", "export it (python -m sweeps.export) and load it with transformers as its README.md shows")
        trial_id = runs.trial_of(client, parent, args.trial).info.run_id
        folder = cache_folder(trial_id)
        if not (folder / EXPORT_INFO).is_file():
            from sweeps.export import export

            export(client, parent, folder, trial_run_id=trial_id)
    except StudyError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    from trainables import inference

    model, tokenizer, info = inference.load(folder)
    if info["task"] == "sentence_pair" and pairs is None:
        print("error: --pair: this study classifies text pairs; fix: give one --pair per text (or text_pair in --file)", file=sys.stderr)
        return 2
    for row in inference.predict(model, tokenizer, texts, pairs, max_length=info["max_length"]):
        if args.json:
            print(json.dumps(row))
        else:
            top = max(row["scores"].values()) if row["labels"] else 0.0
            shown = ", ".join(f"{label} ({row['scores'][label]:.2f})" for label in row["labels"]) or f"(no label; top score {top:.2f})"
            print(f"{shown}\t{row['text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
