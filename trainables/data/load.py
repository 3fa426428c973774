"""Load a study's data (hub, local files or generated), map its columns, split and tokenize.

Runs once per study in the driver; trials receive the tokenized splits through Ray's
object store, so no trial tokenizes again.
"""

from __future__ import annotations

import dataclasses
import logging
import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset

from core.errors import StudyError
from trainables.data.synthetic import emotion_rows

if TYPE_CHECKING:
    from trainables.kinds import Task

GENERATORS: dict[str, Callable[..., list[dict[str, Any]]]] = {"emotion": emotion_rows}
DEFAULT_GENERATED_ROWS = 1500


@dataclasses.dataclass
class PreparedData:
    """Tokenized splits (``input_ids``, ``attention_mask``, ``labels``) plus label names."""

    splits: DatasetDict
    label_names: list[str]
    tokenizer: Any  # travels with the data so workers pad exactly as the driver tokenized
    # Raw validation texts (``text``, ``text_pair``), row-aligned with the tokenized split: each
    # checkpoint's predictions file names the examples, for error analysis.
    texts: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    # What a task kind needs beside the tokenized splits to score them (QA: the examples each
    # window of a split came from; instruction tuning: prompts and references to generate on).
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The text splits before tokenizing (classification), for the floors the driver fits;
    # the driver drops them before the data travels to the trials.
    raw: Optional[DatasetDict] = None

    def labelled(self, split: str) -> bool:
        """Whether ``split`` can be scored (a test split may come without answers)."""
        return split in self.splits and bool({"labels", "start_positions"} & set(self.splits[split].column_names))

    @property
    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}


def _load_generated(spec: Any, seed: int) -> DatasetDict:
    rows = spec.rows or DEFAULT_GENERATED_ROWS
    make = GENERATORS[spec.name]
    # Only train + test, like many real sets: validation comes from the stratified split.
    return DatasetDict(
        train=Dataset.from_list(make(rows, seed=seed)),
        test=Dataset.from_list(make(max(rows // 4, 50), seed=seed + 10_000)),
    )


def _load_squad_json(files: dict[str, str]) -> DatasetDict:
    """The official SQuAD JSON (articles > paragraphs > qas), flattened to one row per question
    in the Hugging Face ``squad``/``squad_v2`` layout (v2's unanswerable questions: no answers)."""
    import json

    out = DatasetDict()
    for split, file in files.items():
        rows = []
        for article in json.loads(Path(file).read_text())["data"]:
            for para in article["paragraphs"]:
                for qa in para["qas"]:
                    answers = [] if qa.get("is_impossible") else qa["answers"]
                    rows.append({
                        "id": str(qa["id"]), "title": article.get("title", ""), "context": para["context"], "question": qa["question"],
                        "answers": {"text": [a["text"] for a in answers], "answer_start": [int(a["answer_start"]) for a in answers]},
                    })
        out[split] = Dataset.from_list(rows)
    return out


def _lines(path: str) -> list[str]:
    return Path(path).expanduser().read_text(encoding="utf-8").splitlines()


def _load_lines(spec: Any) -> DatasetDict:
    """One text per line, and its label on the same line of the split's labels file (TweetEval)."""
    out = DatasetDict()
    text_col, label_col = spec.columns.text, spec.columns.label or "label"
    for split, file in spec.files.items():
        texts = _lines(file)
        rows: dict[str, list[Any]] = {text_col: texts}
        if split in spec.label_files:
            labels = [line.strip() for line in _lines(spec.label_files[split])]
            if len(labels) != len(texts):
                raise StudyError(f"data.label_files.{split}", f"{len(labels)} labels for {len(texts)} texts in {file}", "give one label per line, aligned with the text file")
            rows[label_col] = [int(v) if v.lstrip("-").isdigit() else v for v in labels]
        out[split] = Dataset.from_dict(rows)
    return out


def _root_cause(exc: BaseException) -> str:
    """The first line of the parse error: ``datasets`` wraps it (with the row it failed at) in
    a generic 'An error occurred while generating the dataset'."""
    exc = exc.__cause__ or exc
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _load_local(spec: Any) -> DatasetDict:
    files = {split: str(Path(f).expanduser()) for split, f in spec.files.items()}
    for split, file in files.items():
        if Path(file).is_file() and Path(file).stat().st_size == 0:
            raise StudyError(f"data.files.{split}", f"{file} is empty", "point it at a file with rows")
    if spec.format == "lines":
        return _load_lines(spec)
    if spec.format == "squad":
        try:
            return _load_squad_json(files)
        except (KeyError, TypeError, ValueError) as exc:
            raise StudyError("data.files", f"not official SQuAD JSON ({type(exc).__name__}: {exc})", "use data.format: json/jsonl for flat rows") from None
    ext = Path(files["train"]).suffix.lstrip(".").lower()
    fmt = spec.format or {"txt": "csv", "jsonl": "jsonl", "json": "json", "tsv": "tsv"}.get(ext, "csv")
    kwargs: dict[str, Any] = {}
    if fmt in ("csv", "tsv"):
        builder = "csv"
        kwargs["delimiter"] = spec.delimiter or ("\t" if fmt == "tsv" else ",")
        if spec.column_names:
            kwargs["column_names"] = spec.column_names
    else:
        builder = "json"
    loader_log = logging.getLogger("datasets")
    level = loader_log.level
    loader_log.setLevel(logging.CRITICAL)  # it logs the parse error too; ours is the one line
    try:
        return load_dataset(builder, data_files=files, keep_in_memory=True, **kwargs)
    except Exception as exc:  # malformed or truncated files: say which study field to look at
        empty = re.search(r'Instruction "(\w+)" corresponds to no data', str(exc))
        if empty and empty.group(1) in files:  # e.g. a csv with a header row only
            split = empty.group(1)
            raise StudyError(f"data.files.{split}", f"the {split} split is empty: {files[split]} has no rows", f"add rows, or remove data.files.{split}") from None
        raise StudyError("data.files", f"could not read the {fmt} files: {_root_cause(exc)}", "fix the file, or check data.format, data.delimiter and data.column_names") from None
    finally:
        loader_log.setLevel(level)


def _load_hub(spec: Any) -> DatasetDict:
    try:
        loaded = load_dataset(spec.name, spec.config, keep_in_memory=True)
    except Exception as exc:
        raise StudyError("data.name", f"could not load hub data set {spec.name!r}: {str(exc).splitlines()[0]}", "check the name and network access (HF_TOKEN for gated sets), or use local files") from None
    out = DatasetDict()
    for ours, theirs in spec.splits.items():
        if theirs is None:
            continue
        if theirs not in loaded:
            raise StudyError(f"data.splits.{ours}", f"split {theirs!r} is not in {spec.name} (it has {', '.join(loaded)})", "map to an existing split or set it to null")
        out[ours] = loaded[theirs]
    return out


def _check_columns(ds: DatasetDict, cols: Any, task: Task) -> None:
    needed = {"text": cols.text}
    if task.needs_text_pair:
        needed["text_pair"] = cols.text_pair
    if cols.labels:
        needed.update({f"labels[{i}]": c for i, c in enumerate(cols.labels)})
    else:
        needed["label"] = cols.label
    for split, d in ds.items():
        for field, col in needed.items():
            if col not in d.column_names and not (split == "test" and field.startswith("label")):
                raise StudyError(f"data.columns.{field}", f"column {col!r} is not in the {split} split (columns: {', '.join(d.column_names)})", "set it to one of those columns")


def _drop_labels(ds: DatasetDict, spec: Any) -> DatasetDict:
    """Rows whose label is in ``data.drop_labels`` go (SNLI marks pairs without a gold label -1)."""
    drop, col = set(spec.drop_labels or []), spec.columns.label
    if not drop or not col:
        return ds
    out = DatasetDict({k: d.filter(lambda row: row[col] not in drop) if col in d.column_names else d for k, d in ds.items()})
    for split, d in out.items():
        if len(d) == 0 and len(ds[split]):
            raise StudyError("data.drop_labels", f"no row of the {split} split is left after dropping labels {sorted(drop, key=str)}", "drop fewer labels, or check data.columns.label")
    return out


def require_rows(ds: DatasetDict) -> None:
    """Every split the study uses has rows (an empty file, a filter or a split mapping that
    matched nothing would otherwise fail deep inside a trial)."""
    for split, d in ds.items():
        if len(d) == 0:
            raise StudyError(f"data.splits.{split}", f"the {split} split has no rows", "check the data files or the split mapping")


def _label_names(ds: DatasetDict, spec: Any, task: Task) -> list[str]:
    cols = spec.columns
    if cols.labels:
        return list(cols.labels)
    if spec.label_names:
        return list(spec.label_names)
    feature = ds["train"].features[cols.label]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    inner = getattr(feature, "feature", None)
    if isinstance(inner, ClassLabel):
        return list(inner.names)
    values: set[Any] = set()
    for d in ds.values():
        if cols.label in d.column_names:
            for v in d[cols.label]:
                values.update(v if isinstance(v, list) else [v])
    if values and all(isinstance(v, (int, np.integer)) for v in values):
        return [str(i) for i in range(int(max(values)) + 1)]
    return sorted(str(v) for v in values)


def _encode_labels(ds: DatasetDict, spec: Any, task: Task, names: list[str]) -> DatasetDict:
    cols = spec.columns
    index = {n: i for i, n in enumerate(names)}

    def to_id(v: Any, split: str) -> int:
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < len(names):
            return int(v)
        if str(v) in index:
            return index[str(v)]
        raise StudyError("data.label_names", f"label {v!r} in the {split} split is not one of {names}", "add it to data.label_names or fix the data")

    def zero_one(v: Any, col: str, row: int, split: str) -> float:
        if isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, float, np.integer, np.floating)) and v in (0, 1)):
            return float(v)
        if isinstance(v, str) and v.strip() in ("0", "1"):
            return float(v.strip())
        raise StudyError("data.columns.labels", f"column {col!r} holds {v!r} in row {row} of the {split} split; a multi-label column is 0/1", "make each label column 0/1 (true/false)")

    out = DatasetDict()
    for split, d in ds.items():
        if cols.labels:
            labels = [[zero_one(row[c], c, i, split) for c in cols.labels] for i, row in enumerate(d.select_columns(cols.labels))]
        elif cols.label not in d.column_names:
            continue  # unlabelled test split
        elif task.multi_label:
            labels = []
            for v in d[cols.label]:
                hot = [0.0] * len(names)
                for item in v if isinstance(v, list) else [v]:
                    hot[to_id(item, split)] = 1.0
                labels.append(hot)
        else:
            labels = [to_id(v, split) for v in d[cols.label]]
        keep = {"text": _texts(d[cols.text], "text", split), "labels": labels}
        if task.needs_text_pair:
            keep["text_pair"] = _texts(d[cols.text_pair], "text_pair", split)
        out[split] = Dataset.from_dict(keep)
    return out


def _texts(values: list[Any], field: str, split: str) -> list[str]:
    """The column's texts; a missing or blank cell is bad input, not the string 'None'."""
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and v != v):
            raise StudyError(f"data.columns.{field}", f"row {i} of the {split} split has no text", "fill or remove rows with empty text")
    return [str(v) for v in values]


def _strata(labels: list[Any], multi_label: bool) -> list[int]:
    if not multi_label:
        return [int(v) for v in labels]
    return [int(np.argmax(v)) if any(v) else -1 for v in labels]


def stratified_split(train: Dataset, fraction: float, seed: int, multi_label: bool, names: Optional[list[str]] = None) -> tuple[Dataset, Dataset]:
    """Split train into train/validation keeping label shares (multi-label: by first label).
    ``names``: the label names, so an error names labels as the data writes them."""
    from sklearn.model_selection import (
        train_test_split,  # here: sklearn costs ~0.7 s to import
    )

    idx = np.arange(len(train))
    strata = _strata(train["labels"], multi_label)
    counts = Counter(strata)
    rare = sorted(c for c, n in counts.items() if n < 2)
    if rare and not multi_label:  # multi-label strata (first label) are approximate anyway
        shown = ", ".join(repr(names[c]) if names and 0 <= c < len(names) else str(c) for c in rare)
        raise StudyError("data.validation_fraction", f"cannot cut a stratified split: label(s) {shown} have a single row among {len(train)}", "add rows, give a validation file (data.files.validation), or drop those labels (data.drop_labels)")
    try:
        tr, va = train_test_split(idx, test_size=fraction, random_state=seed, stratify=strata if not rare else None)
    except ValueError as exc:  # e.g. fewer validation rows than classes
        raise StudyError("data.validation_fraction", f"cannot cut a stratified split of {len(train)} rows into {len(counts)} labels: {exc}", "add rows, raise data.validation_fraction, or give a validation file (data.files.validation)") from None
    return train.select(sorted(tr)), train.select(sorted(va))


def resplit(ds: DatasetDict, shares: dict[str, float], seed: int, multi_label: bool, names: Optional[list[str]] = None) -> DatasetDict:
    """Pool the labelled splits and cut them into train/validation/test by ``shares``, stratified."""
    pool = datasets.concatenate_datasets([d for d in ds.values() if "labels" in d.column_names])
    rest, test = stratified_split(pool, shares["test"], seed, multi_label, names)
    train, validation = stratified_split(rest, shares["validation"] / (1 - shares["test"]), seed, multi_label, names)
    return DatasetDict(train=train, validation=validation, test=test)


def _cap(d: Dataset, rows: Optional[int], seed: int) -> Dataset:
    if rows is None or len(d) <= rows:
        return d
    return d.shuffle(seed=seed).select(range(rows))


def load_raw(spec: Any, seed: int) -> DatasetDict:
    """The study's data as loaded (generated, local files or hub), split by split."""
    if spec.source == "generated":
        ds = _load_generated(spec, seed)
    elif spec.source == "local":
        ds = _load_local(spec)
    else:
        ds = _load_hub(spec)
    if "train" not in ds:
        raise StudyError("data.splits.train", "no train split", "map data.splits.train to a split of the data set")
    require_rows(ds)
    return ds


def require_columns(ds: DatasetDict, needed: dict[str, str], optional_in_test: tuple[str, ...] = ()) -> None:
    """Each study field (``data.columns.<field>``) names a column present in every split."""
    for split, d in ds.items():
        for field, col in needed.items():
            if col not in d.column_names and not (split == "test" and field in optional_in_test):
                raise StudyError(f"data.columns.{field}", f"column {col!r} is not in the {split} split (columns: {', '.join(d.column_names)})", "set it to one of those columns")


def split_and_cap(ds: DatasetDict, spec: Any, seed: int) -> DatasetDict:
    """A validation split cut from train where the data has none (random, not stratified),
    then the row caps; for task kinds whose examples have no class to stratify by."""
    if "validation" not in ds:
        parts = ds["train"].train_test_split(test_size=spec.validation_fraction, seed=seed)
        ds["train"], ds["validation"] = parts["train"], parts["test"]
    ds["train"] = _cap(ds["train"], spec.max_train_rows, seed)
    for split in ("validation", "test"):
        if split in ds:
            ds[split] = _cap(ds[split], spec.max_eval_rows, seed)
    return ds


def load_splits(spec: Any, task: Task, seed: int) -> tuple[DatasetDict, list[str]]:
    """Raw text splits with standard columns (text, [text_pair], labels) and the label names."""
    ds = load_raw(spec, seed)
    ds = _drop_labels(ds, spec)
    _check_columns(ds, spec.columns, task)
    names = _label_names(ds, spec, task)
    if len(names) < 2:
        raise StudyError("data.columns.label", f"found {len(names)} label value(s)", "a classifier needs at least 2 labels")
    ds = _encode_labels(ds, spec, task, names)
    if spec.resplit:
        ds = resplit(ds, spec.resplit, seed, task.multi_label, names)
    if "validation" not in ds:
        ds["train"], ds["validation"] = stratified_split(ds["train"], spec.validation_fraction, seed, task.multi_label, names)
    ds["train"] = _cap(ds["train"], spec.max_train_rows, seed)
    for split in ("validation", "test"):
        if split in ds:
            ds[split] = _cap(ds[split], spec.max_eval_rows, seed)
    return ds, names


def tokenize(ds: DatasetDict, tokenizer: Any, max_length: int, task: Task) -> DatasetDict:
    """Truncate to ``max_length``; no padding here (batches are padded dynamically, 5x faster on short texts)."""

    def encode(batch: dict[str, list]) -> dict[str, Any]:
        pair = batch["text_pair"] if task.needs_text_pair else None
        return tokenizer(batch["text"], pair, truncation=True, max_length=max_length)

    return DatasetDict(
        {
            split: d.map(encode, batched=True, remove_columns=[c for c in d.column_names if c != "labels"], keep_in_memory=True,
                         load_from_cache_file=False, new_fingerprint=_tokenized_fingerprint(d, tokenizer, max_length, task))
            for split, d in ds.items()
        }
    )


def _tokenized_fingerprint(split: Dataset, tokenizer: Any, max_length: int, task: Task) -> str:
    """What ``datasets`` would otherwise compute by pickling ``encode`` with the whole tokenizer
    inside it (dill, ~0.3 s a split for MiniLM's 30k vocabulary, more for Gemma's 256k): the
    split, the tokenizer's identity and vocabulary size, and the settings, hashed."""
    key = [split._fingerprint, type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), len(tokenizer),
           getattr(tokenizer, "truncation_side", ""),
           max_length, task.needs_text_pair]
    return hashlib.sha256(repr(key).encode()).hexdigest()[:32]


def prepare(spec: Any, task: Task, tokenizer: Any, max_length: int, seed: int) -> PreparedData:
    datasets.disable_progress_bars()  # per-split bars drown the one-line errors and Tune's table
    raw, names = load_splits(spec, task, seed)
    texts = {c: list(raw["validation"][c]) for c in ("text", "text_pair") if c in raw["validation"].column_names}
    return PreparedData(splits=tokenize(raw, tokenizer, max_length, task), label_names=names, tokenizer=tokenizer, texts=texts, raw=raw)
