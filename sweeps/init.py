"""``python -m sweeps.init DATA``: a commented study for your own data, ready to run.

DATA is a file (the train split), a folder with ``train.*`` and optionally ``validation.*``
(``val.*``, ``dev.*``) and ``test.*``, or a TweetEval-style folder (``train_text.txt`` +
``train_labels.txt``, optional ``mapping.txt``). The data is read by the same loader a sweep
uses, so what this infers is what the sweep will see: the format (csv, tsv, a ``;``-separated
txt with or without a header, json, jsonl, official SQuAD JSON), the columns, the task and the
label names. It writes a study YAML that validates, and prints the command that runs it.
Where the data leaves a choice open (three text columns, no column that looks like labels),
it stops with one line naming the flag that settles it.

    python -m sweeps.init reviews.csv                      # -> ./reviews.yaml
    python -m sweeps.init data/ --task sentence_pair --text premise --text-pair hypothesis
    python -m sweeps.init chats.jsonl --model meta-llama/Llama-3.2-1B --out chats_study.yaml
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from core.errors import StudyError

DEFAULT_MODEL = "packaged:all-minilm-l6-v2"  # loads offline, trains on a CPU
# Column names that say "this is the label" (compared lower-case).
LABEL_NAMES = ("label", "labels", "gold_label", "class", "category", "target", "sentiment", "emotion", "intent", "topic", "tag", "stars", "rating", "y")
ID_NAMES = ("id", "idx", "index", "uid", "guid", "row_id", "example_id")
# Two text columns in the order a sentence-pair model reads them.
PAIRS = (("premise", "hypothesis"), ("sentence1", "sentence2"), ("question1", "question2"), ("text", "text_pair"),
         ("text_a", "text_b"), ("question", "sentence"), ("query", "passage"), ("sentence_a", "sentence_b"))
# What a trial is ranked by, per task (the task kinds' own metrics).
METRICS = {
    "classification": ("f1_macro", "max", "macro F1: every label counts the same; a majority-class model cannot win"),
    "extractive_qa": ("f1", "max", "official SQuAD F1 (token overlap with the best reference answer)"),
    "extractive_qa_v2": ("f1", "max", "official SQuAD v2 F1 (abstaining on unanswerable questions counts)"),
    "instruction": ("eval_loss", "min", "loss per answer token (perplexity = exp); bleu / rougeL cost generation"),
}
MAX_LABELS = 100  # more distinct values than this in a column: free text, not labels


@dataclasses.dataclass
class Found:
    """What the data says, as study keys."""

    data: dict[str, Any]
    task: str
    rows: dict[str, int]
    labels: list[str] = dataclasses.field(default_factory=list)
    texts: list[str] = dataclasses.field(default_factory=list)  # a sample, to size max_length
    notes: list[str] = dataclasses.field(default_factory=list)  # what was inferred, for the header


def parser() -> argparse.ArgumentParser:
    from trainables.kinds import TASKS

    p = argparse.ArgumentParser(prog="python -m sweeps.init", description="Write a study YAML for your own data file or folder, and print how to run it.")
    p.add_argument("data", help="a data file (csv, tsv, txt, json, jsonl, SQuAD JSON) or a folder with train.* [validation.*] [test.*]")
    p.add_argument("--model", help=f"hub id or local folder (default: {DEFAULT_MODEL}; instruction tuning needs a causal LM)")
    p.add_argument("--task", choices=TASKS.names(), help="the task, where the data does not settle it")
    p.add_argument("--text", metavar="COLUMN", help="the text column (classification)")
    p.add_argument("--text-pair", metavar="COLUMN", help="the second text column (sentence_pair)")
    p.add_argument("--label", metavar="COLUMN", help="the label column (classification)")
    p.add_argument("--name", help="the study's name (default: from the data's file or folder name)")
    p.add_argument("--out", help="where to write the study (default: ./NAME.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return p


# ---- where the files are and how they are written ------------------------------------------

def _tweeteval(root: Path) -> Optional[dict[str, Any]]:
    """``{split}_text.txt`` + ``{split}_labels.txt`` (TweetEval): the loader's ``lines`` format."""
    splits = {"train": "train", "validation": "val", "test": "test"}
    files = {s: root / f"{stem}_text.txt" for s, stem in splits.items() if (root / f"{stem}_text.txt").is_file()}
    if "train" not in files:
        return None
    data: dict[str, Any] = {"format": "lines", "files": {s: str(f) for s, f in files.items()}, "label_files": {}}
    for split in files:
        labels = root / f"{splits[split]}_labels.txt"
        if labels.is_file():
            data["label_files"][split] = str(labels)
    mapping = root / "mapping.txt"
    if mapping.is_file():  # "0<TAB>anger" per line
        pairs = [line.split(None, 1) for line in mapping.read_text(encoding="utf-8").splitlines() if line.strip()]
        if all(len(p) == 2 and p[0].isdigit() for p in pairs):
            data["label_names"] = [name.strip() for _, name in sorted(pairs, key=lambda p: int(p[0]))]
    return data


def _is_squad(path: Path) -> bool:
    try:
        top = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return isinstance(top, dict) and isinstance(top.get("data"), list) and bool(top["data"]) and "paragraphs" in top["data"][0]


def _sniff(path: Path) -> tuple[str, bool]:
    """(delimiter, has a header row) of a delimited text file."""
    with open(path, encoding="utf-8", newline="") as f:
        sample = "".join(line for _, line in zip(range(200), f))
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",\t;|")
    except csv.Error:
        raise StudyError("DATA", f"{path} has no column separator (one text per line, no labels?)", "give a csv/tsv with text and label columns, or a folder with train_text.txt + train_labels.txt") from None
    rows = list(csv.reader(sample.splitlines(), delimiter=dialect.delimiter))
    return dialect.delimiter, _has_header(rows)


def _has_header(rows: list[list[str]]) -> bool:
    """A first row is a header when none of its cells recurs in its column below and each is a
    short name, not a sentence (csv.Sniffer guesses wrong on text/label files)."""
    if len(rows) < 3:
        return True
    first, rest = rows[0], rows[1:]
    for i, cell in enumerate(first):
        below = {r[i] for r in rest if len(r) > i}
        if cell in below or len(cell.split()) > 4 or not cell.strip():
            return False
    return True


def locate(path: str) -> dict[str, Any]:
    """The study's ``data:`` block for the files at ``path`` (before columns are known)."""
    from sweeps.smoke import local_files

    root = Path(path).expanduser()
    if root.is_dir() and (found := _tweeteval(root)) is not None:
        return found
    try:
        files = local_files(path)
    except StudyError as exc:
        raise StudyError("DATA", exc.problem, exc.fix) from None
    train = Path(files["train"])
    suffix = train.suffix.lower()
    if suffix == ".jsonl":
        return {"format": "jsonl", "files": files}
    if suffix == ".json":
        return {"format": "squad" if _is_squad(train) else "json", "files": files}
    if suffix not in (".csv", ".tsv", ".txt"):
        raise StudyError("DATA", f"cannot read {suffix or 'extensionless'} files ({train.name})", "convert it to csv, tsv, json or jsonl")
    delimiter, header = _sniff(train)
    data: dict[str, Any] = {"format": "tsv" if delimiter == "\t" else "csv", "files": files}
    if delimiter not in ",\t":
        data["delimiter"] = delimiter
    if not header:
        width = len(next(csv.reader([train.read_text(encoding="utf-8").splitlines()[0]], delimiter=delimiter)))
        data["column_names"] = [f"column{i + 1}" for i in range(width)]  # renamed once roles are known
    return data


# ---- what the columns hold -----------------------------------------------------------------

def _strings(values: list[Any]) -> bool:
    return all(isinstance(v, str) for v in values if v is not None)


def _is_chat(values: list[Any]) -> bool:
    turn_keys = ({"role", "content"}, {"from", "value"})
    return bool(values) and all(isinstance(v, list) and v and all(isinstance(t, dict) and any(k <= set(t) for k in turn_keys) for t in v) for v in values)


def _is_answers(values: list[Any]) -> bool:
    return bool(values) and all(isinstance(v, dict) and {"text", "answer_start"} <= set(v) for v in values)


def _zero_one(values: list[Any]) -> bool:
    return bool(values) and all(isinstance(v, (bool, int)) and v in (0, 1) for v in values)


def _label_like(name: str, values: list[Any]) -> bool:
    flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
    distinct = {str(x) for x in flat}
    short = all(not isinstance(x, str) or len(x.split()) <= 4 for x in flat)
    return 2 <= len(distinct) <= MAX_LABELS and short and (len(distinct) < max(3, len(values) // 2) or name.lower() in LABEL_NAMES)


def _text_like(name: str, values: list[Any]) -> bool:
    if not _strings(values) or name.lower() in ID_NAMES:
        return False
    distinct = {v for v in values if v}
    return len(distinct) > max(MAX_LABELS, len(values) // 2) or (bool(distinct) and sum(len(v.split()) for v in distinct) / len(distinct) > 4)


def _pick_pair(texts: list[str]) -> list[str]:
    lower = {t.lower(): t for t in texts}
    for a, b in PAIRS:
        if a in lower and b in lower:
            return [lower[a], lower[b]]
    return texts


def infer(data: dict[str, Any], args: argparse.Namespace) -> Found:
    """Read the data as a sweep would and decide the task, the columns and the labels."""
    from core.specs import Columns, DataSpec
    import datasets

    from trainables.data.load import load_raw

    datasets.disable_progress_bars()

    spec = DataSpec(source="local", **{k: v for k, v in data.items() if k != "label_names"}, columns=Columns(text="text", label="label"))
    try:
        ds = load_raw(spec, seed=0)
    except StudyError as exc:
        raise StudyError("DATA", exc.problem, exc.fix) from None
    rows = {split: len(d) for split, d in ds.items()}
    train = ds["train"]
    sample = train.select(range(min(len(train), 2000)))
    cols = {c: sample[c] for c in sample.column_names}
    return _decide(data, ds, cols, rows, args)


def _decide(data: dict[str, Any], ds: Any, cols: dict[str, list[Any]], rows: dict[str, int], args: argparse.Namespace) -> Found:
    names = ", ".join(cols)
    chat = [c for c, v in cols.items() if _is_chat(v)]
    answers = [c for c, v in cols.items() if _is_answers(v)]
    task = args.task
    if task == "instruction" or (task is None and chat):
        if not chat:
            raise StudyError("--task", f"instruction tuning needs a column of conversations (lists of role/content turns); columns: {names}", "give chat data, or another --task")
        found = Found(dict(data, columns={"messages": chat[0]}), "instruction", rows)
        found.texts = [" ".join(str(t.get("content", t.get("value", ""))) for t in conv) for conv in cols[chat[0]][:500]]
        found.notes.append(f"conversations in column {chat[0]!r}")
        return found
    if task in ("extractive_qa", "extractive_qa_v2") or (task is None and answers and {"question", "context"} <= set(cols)):
        missing = {"question", "context"} - set(cols)
        if not answers or missing:
            raise StudyError("--task", f"extractive QA needs question, context and answers ({{text, answer_start}}) columns; columns: {names}", "rename the columns to the SQuAD layout, or another --task")
        unanswerable = any(not a["text"] for a in cols[answers[0]])
        task = task or ("extractive_qa_v2" if unanswerable else "extractive_qa")
        found = Found(dict(data), task, rows)
        if answers[0] != "answers":
            found.data["columns"] = {"answers": answers[0]}
        found.texts = [f"{q} {c}" for q, c in zip(cols["question"][:500], cols["context"][:500])]
        found.notes.append("questions answered by a span of the context" + (" (some unanswerable: SQuAD v2 scoring)" if unanswerable else ""))
        return found
    return _classification(data, ds, cols, rows, args, task)


def _classification(data: dict[str, Any], ds: Any, cols: dict[str, list[Any]], rows: dict[str, int], args: argparse.Namespace, task: Optional[str]) -> Found:
    names = ", ".join(cols)
    for flag, col in (("--text", args.text), ("--text-pair", args.text_pair), ("--label", args.label)):
        if col is not None and col not in cols:
            raise StudyError(flag, f"no column {col!r} in the data (columns: {names})", "use one of those columns")
    label = args.label
    hot: list[str] = []
    if label is None:
        named = [c for c in cols if c.lower() in LABEL_NAMES and c not in (args.text, args.text_pair)]
        lists = [c for c, v in cols.items() if all(isinstance(x, list) for x in v) and not _is_chat(v)]
        hot = [c for c, v in cols.items() if _zero_one(v) and c not in (args.text, args.text_pair)]
        if named or lists:
            label, hot = (named or lists)[0], []
        elif len(hot) >= 2:
            label = None
        else:
            short = [c for c, v in cols.items() if c not in (args.text, args.text_pair) and c.lower() not in ID_NAMES and _label_like(c, v) and not _text_like(c, v)]
            if len(short) != 1:
                why = f"{len(short)} columns look like labels ({', '.join(short)})" if short else "no column looks like labels"
                raise StudyError("--label", f"{why}; columns: {names}", "pass --label COLUMN")
            label = short[0]
    taken = {label, *hot} if label is None else {label}
    texts = [args.text] if args.text else [c for c, v in cols.items() if c not in taken and _text_like(c, v)]
    if args.text_pair:
        texts = [*texts[:1], args.text_pair]
    if not texts:
        raise StudyError("--text", f"no column holds free text; columns: {names}", "pass --text COLUMN")
    pair = task == "sentence_pair" or (task is None and len(texts) == 2)
    if len(texts) > 2 or (pair and len(texts) != 2) or (len(texts) == 2 and task not in (None, "sentence_pair")):
        raise StudyError("--text", f"{len(texts)} text columns ({', '.join(texts)}): which does the model read?", "pass --text COLUMN, and --text-pair COLUMN for sentence pairs")
    texts = _pick_pair(texts) if pair else texts
    values = cols[label] if label else []
    multi = not label or all(isinstance(v, list) for v in values)
    task = task or ("multi_label" if multi else "sentence_pair" if pair else "single_label")
    if task == "multi_label" and not multi:
        raise StudyError("--task", f"multi_label needs a column of label lists or 0/1 columns; {label!r} holds one label per row", "drop --task, or give the labels as lists")
    columns: dict[str, Any] = {"text": texts[0]}
    if pair:
        columns["text_pair"] = texts[1]
    if label:
        columns["label"] = label
    else:
        columns.update(label=None, labels=hot)
    found = Found(dict(data), task, rows)
    labels = _label_names(ds, label, hot, data)
    if len(labels) < 2:
        raise StudyError("--label", f"column {label!r} has {len(labels)} distinct value(s) ({', '.join(labels)}); a classifier needs at least 2", "pass the right --label COLUMN, or add rows of other labels")
    found.labels = labels
    if data.get("column_names"):  # a headerless file: name its columns by role
        rename = {texts[0]: "text", label: "label", **({texts[1]: "text_pair"} if pair else {})}
        data_names = [rename.get(c, c) for c in data["column_names"]]
        found.data["column_names"] = data_names
        columns = {k: rename.get(v, v) if isinstance(v, str) else v for k, v in columns.items()}
    found.data["columns"] = {k: v for k, v in columns.items() if not (k == "text" and v == "text") and not (k == "label" and v == "label")}
    found.texts = [" ".join(str(cols[c][i]) for c in texts) for i in range(min(500, len(cols[texts[0]])))]
    shown = [columns["text"], columns.get("text_pair")]
    found.notes.append(f"text in {', '.join(repr(t) for t in shown if t)}; " + (f"labels in {columns['label']!r}" if label else f"one 0/1 column per label ({len(hot)})"))
    return found


def _label_names(ds: Any, label: Optional[str], hot: list[str], data: dict[str, Any]) -> list[str]:
    """The label names as the sweep's loader will find them, over every row of every split."""
    import types

    from core.specs import Columns
    from trainables.data.load import _label_names as loader_names
    from trainables.kinds import TASKS

    spec = types.SimpleNamespace(columns=Columns(label=label, labels=hot or None), label_names=data.get("label_names"))
    return [str(n) for n in loader_names(ds, spec, TASKS["single_label"])]


# ---- the study file ------------------------------------------------------------------------

def max_length(texts: list[str], model: str) -> int:
    """Tokens that fit 95% of the sampled texts, rounded up to 16, within 32..512. Counted with
    the model's tokenizer where it loads offline, else estimated from words (x1.4)."""
    lengths: list[int] = []
    try:
        from trainables.model.load import load_tokenizer

        tok = load_tokenizer(model)
        lengths = [len(ids) for ids in tok(texts[:500], truncation=False)["input_ids"]]
    except Exception:  # a hub model not in the cache: estimate
        lengths = [math.ceil(1.4 * len(t.split())) + 2 for t in texts[:500]]
    if not lengths:
        return 128
    p95 = sorted(lengths)[min(len(lengths) - 1, int(0.95 * len(lengths)))]
    return int(min(512, max(32, 16 * math.ceil(p95 / 16))))


def _dump(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True).strip().removesuffix("...").strip()


def _methods(task: str) -> list[str]:
    return ["lora", "ia3"] if task == "instruction" else ["lora", "ia3", "full"]


def render(name: str, model: str, found: Found, source: str) -> str:
    """The study YAML: a header saying how to launch it, each key with a short comment."""
    from trainables.kinds import TASKS

    total = sum(found.rows.values())
    split_rows = ", ".join(f"{s} {n:,}" for s, n in found.rows.items())
    metric, mode, why = METRICS.get(found.task, METRICS["classification"])
    length = max_length(found.texts, model) if found.task not in ("extractive_qa", "extractive_qa_v2") else None
    from sweeps.schema import SCHEMA_FILE, SCHEMA_URL_COMMENT

    lines = [
        f"{SCHEMA_URL_COMMENT}{SCHEMA_FILE.as_uri()}",  # editors complete and check its keys
        f"# {name}: written by `python -m sweeps.init {source}` from the data ({split_rows} rows).",
        f"# Found: {'; '.join(found.notes)}.",
        "# Every key left out takes the project's default (search_spaces/defaults.yaml: per-method",
        "# ranges; Optuna TPE, 8 trials, ASHA; 1 epoch). Edit freely: the comments say what each knob does.",
        "#",
        f"# Launch:   python -m sweeps.run {{out}}",
        f"# Check:    python -m sweeps.run {{out}} --dry-run          (validates, starts nothing)",
        "# Look:     mlflow ui          (in the same folder; opens ./mlflow.db)",
        f"description: {_dump(f'{found.task} on {Path(source).name} ({total:,} rows), written by sweeps.init')}",
        f"model: {_dump(model)}" + ("   # 22.7M-param encoder, loads offline; a hub id or a local folder works too" if model == DEFAULT_MODEL else ""),
        f"task: {found.task}" + f"   # {' | '.join(TASKS.names())}",
        "",
        "data:",
    ]
    data = found.data
    if data.get("format"):
        lines.append(f"  format: {data['format']}")
    for key in ("delimiter", "column_names"):
        if key in data:
            lines.append(f"  {key}: {_dump(data[key])}" + ("   # the file has no header row" if key == "column_names" else ""))
    for key in ("files", "label_files"):
        if data.get(key):
            lines.append(f"  {key}:" + ("            # paths from the folder you run the study in" if key == "files" else ""))
            lines += [f"    {split}: {_dump(path)}" for split, path in data[key].items()]
    if data.get("columns"):
        lines.append(f"  columns: {_dump(data['columns'])}")
    if found.labels:
        shown = ", ".join(found.labels[:12]) + (", ..." if len(found.labels) > 12 else "")
        if data.get("label_names"):
            lines.append(f"  label_names: {_dump(data['label_names'])}   # mapping.txt")
        else:
            lines.append(f"  # {len(found.labels)} labels: {shown}")
    if "validation" not in found.rows:
        lines.append("  validation_fraction: 0.2      # no validation file: 20% of train, stratified, scores the trials")
    train = found.rows.get("train", 0)
    cap = "" if train > 20_000 else "# "
    lines.append(f"  {cap}max_train_rows: 4000         # cap the rows each trial trains on: quicker trials, a rougher ranking")
    lines += [
        "",
        f"methods: {_dump(_methods(found.task))}   # lora: low-rank adapters; ia3: rescaling vectors (fewest params); full: every weight" if found.task != "instruction"
        else f"methods: {_dump(_methods(found.task))}   # lora: low-rank adapters; ia3: rescaling vectors; add qlora (4-bit base) for large models",
        "",
        "search:",
        "  algorithm: optuna           # TPE; grid | random also work",
        "  num_samples: 8              # trials: more finds better settings, costs linearly",
        f"  metric: {metric}" + " " * (19 - len(metric)) + f"# {why}",
        f"  mode: {mode}",
        "",
        "training:",
        "  epochs: 1                   # passes over the train rows per trial",
        "  batch_size: 16",
    ]
    if length:
        lines.append(f"  max_length: {length}             # tokens: 95% of the texts fit (longer ones are cut)")
    else:  # QA reads a long context in overlapping windows
        lines += ["  max_length: 384             # tokens per window (question + a piece of the context)",
                  "  doc_stride: 128             # overlap between windows of a long context"]
    return "\n".join(lines) + "\n"


def write_study(args: argparse.Namespace) -> tuple[Path, Found]:
    from sweeps.study import load_study

    data = locate(args.data)
    found = infer(data, args)
    model = args.model or (None if found.task == "instruction" else DEFAULT_MODEL)
    if model is None:
        raise StudyError("--model", "instruction tuning needs a causal language model", "pass --model, e.g. meta-llama/Llama-3.2-1B (or a tiny one: python -m trainables.model.tiny llama TINY)")
    source = Path(args.data)
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "_", (source.stem if source.is_file() else source.resolve().name)) or "study"
    out = Path(args.out) if args.out else Path(f"{name}.yaml")
    if out.exists() and not args.force:
        raise StudyError("--out", f"{out} exists", "pass --force to overwrite it, or another --out")
    text = render(name, model, found, args.data).replace("{out}", str(out))
    body = text.replace("\ndescription:", f"\nname: {_dump(name)}\ndescription:", 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.yaml")
    tmp.write_text(body)
    try:
        load_study(str(tmp))  # what we write validates, or nothing is written
    except StudyError as exc:
        tmp.unlink()
        raise StudyError("sweeps.init", f"the study it wrote does not validate ({exc.one_line()})", "please report this with the data's first lines") from None
    tmp.replace(out)
    return out, found


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        out, found = write_study(args)
    except StudyError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    labels = f", {len(found.labels)} labels ({', '.join(found.labels[:6])}{', ...' if len(found.labels) > 6 else ''})" if found.labels else ""
    print(f"wrote {out}: {found.task}{labels}, {', '.join(f'{s} {n:,}' for s, n in found.rows.items())} rows; {'; '.join(found.notes)}")
    print(f"check it:  python -m sweeps.run {out} --dry-run")
    print(f"run it:    python -m sweeps.run {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
