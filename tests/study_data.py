"""Small local data sets in a study's own column layout (what ``--data`` takes), generated from
the study's settings, so every catalogue study can run offline in smoke mode."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

from sweeps.study import Study
from trainables.data.synthetic import emotion_rows

PLACES = ["Paris", "Lima", "Oslo", "Quito", "Hanoi", "Accra", "Dakar", "Riga", "Sofia", "Bern"]
THINGS = ["river", "bridge", "museum", "market", "tower", "garden", "harbour", "library"]


def qa_rows(n: int, seed: int, no_answer_share: float) -> list[dict]:
    """SQuAD-layout questions over contexts long enough to need several windows."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        place, thing = rng.choice(PLACES), rng.choice(THINGS)
        year = str(rng.randint(1100, 2000))
        filler = " ".join(f"The {rng.choice(THINGS)} of {rng.choice(PLACES)} is old." for _ in range(rng.randint(4, 12)))
        fact = f"The {thing} of {place} was built in {year}."
        context = f"{filler} {fact} {filler}"
        if rng.random() < no_answer_share:
            rows.append({"id": f"q{seed}-{i}", "title": place, "context": filler, "question": f"When was the {thing} of {place} built?", "answers": {"text": [], "answer_start": []}})
        else:
            rows.append({"id": f"q{seed}-{i}", "title": place, "context": context, "question": f"When was the {thing} of {place} built?", "answers": {"text": [year], "answer_start": [context.index(fact) + fact.index(year)]}})
    return rows


def chat_rows(n: int, seed: int) -> list[list[dict]]:
    """ShareGPT-style conversations (FineTome layout), some with a system turn or two rounds."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        turns = [{"from": "system", "value": "You are a careful calculator."}] if i % 3 == 0 else []
        turns += [{"from": "human", "value": f"What is {a} plus {b}?"}, {"from": "gpt", "value": f"{a} plus {b} is {a + b}."}]
        if i % 4 == 0:
            turns += [{"from": "human", "value": "And doubled?"}, {"from": "gpt", "value": f"Doubled it is {2 * (a + b)}."}]
        out.append(turns)
    return out


def write(study: Study, folder: Path, rows: int = 48, seed: int = 0) -> Path:
    """Write train/validation(/test) files for ``study`` into ``folder``; returns the folder."""
    from trainables.kinds import TASKS

    folder.mkdir(parents=True, exist_ok=True)
    task, cols = TASKS[study.task], study.data.columns
    if task.kind.name == "qa":
        for split, n, s in (("train", rows, seed), ("validation", rows // 2, seed + 1)):
            with open(folder / f"{split}.jsonl", "w") as f:
                for r in qa_rows(n, s, 0.3 if task.allow_no_answer else 0.0):
                    f.write(json.dumps({cols.id: r["id"], "title": r["title"], cols.context: r["context"], cols.question: r["question"], cols.answers: r["answers"]}) + "\n")
        return folder
    if task.kind.name == "sft":
        with open(folder / "train.jsonl", "w") as f:
            for conv in chat_rows(rows, seed):
                f.write(json.dumps({cols.messages: conv, "source": "generated"}) + "\n")
        return folder
    for split, n, s in (("train", rows, seed), ("validation", rows // 2, seed + 1), ("test", rows // 2, seed + 2)):
        base = emotion_rows(n, seed=s)
        df = pd.DataFrame({cols.text: [r["text"] for r in base]})
        if task.needs_text_pair:
            df[cols.text_pair] = [r["text"][::-1] for r in base]
        names = study.data.label_names or cols.labels or ["a", "b"]
        if cols.labels:  # one 0/1 column per label
            rng = random.Random(s)
            for c in cols.labels:
                df[c] = [int(rng.random() < 0.3) for _ in base]
        else:
            df[cols.label] = [hash(r["text"]) % len(names) for r in base]
        df.to_csv(folder / f"{split}.csv", index=False)
    return folder
