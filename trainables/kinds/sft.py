"""Instruction / chat supervised fine-tuning as a task kind.

Each conversation is rendered with the tokenizer's chat template and trained with the loss on
the assistant's tokens only (every prompt token is labelled -100). Optional packing joins
examples into full ``max_length`` rows (fewer pad tokens, more tokens per step). Scoring: the
token-weighted eval loss and its perplexity, and BLEU / ROUGE of answers generated greedily
for the first ``training.generate_samples`` validation prompts.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Iterator, Optional

import pandas as pd
import torch
from datasets import Dataset, DatasetDict
from torch.utils.data import DataLoader

from core.errors import StudyError
from trainables.kinds import Task
from trainables.kinds.builtin import GENERATIONS

if TYPE_CHECKING:
    from trainables.data.load import PreparedData

IGNORE = -100  # label of a token the loss skips
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant", "system": "system"}
# For tokenizers that ship no chat template (base models, the test models): a plain ChatML-style one.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' and eos_token %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def messages(turns: Any, field: str = "data.columns.messages") -> list[dict[str, str]]:
    """{role, content} turns from OpenAI-style or ShareGPT-style ({from, value}) conversations."""
    out = []
    for turn in turns:
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if role not in ROLES or content is None:
            raise StudyError(field, f"a turn {dict(turn)!r} is not a {{role, content}} or {{from, value}} message", "point it at the column of conversations")
        out.append({"role": ROLES[role], "content": str(content)})
    return out


def ensure_chat_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_TEMPLATE


def _ids(tokenizer: Any, msgs: list[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode(tokenizer: Any, msgs: list[dict[str, str]], max_length: int) -> dict[str, list[int]]:
    """Token ids of the whole conversation and labels that keep only the assistant turns:
    each answer's tokens are those between the prompt rendered up to it (with the generation
    prompt) and the conversation rendered through it."""
    ids = _ids(tokenizer, msgs)
    labels = [IGNORE] * len(ids)
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        start = len(_ids(tokenizer, msgs[:i], add_generation_prompt=True))
        end = len(_ids(tokenizer, msgs[: i + 1]))
        labels[start:end] = ids[start:end]
    return {"input_ids": ids[:max_length], "attention_mask": [1] * min(len(ids), max_length), "labels": labels[:max_length]}


def pack(rows: Dataset, max_length: int) -> Dataset:
    """Concatenate examples (their labels keep the prompt masks) and cut into ``max_length``
    rows; the last partial row is kept. Attention spans example borders, as in TRL's packing."""
    ids = [t for r in list(rows["input_ids"]) for t in r]
    labels = [t for r in list(rows["labels"]) for t in r]
    cuts = range(0, len(ids), max_length)
    return Dataset.from_dict({
        "input_ids": [ids[c:c + max_length] for c in cuts],
        "attention_mask": [[1] * len(ids[c:c + max_length]) for c in cuts],
        "labels": [labels[c:c + max_length] for c in cuts],
    })



def check(task: Task, data: Any, training: Any) -> None:
    """Nothing beyond the schema: the conversations are checked when they load."""


def head_kwargs(task: Task, label_names: list[str]) -> dict[str, Any]:
    return {}  # the pretrained LM head


def prepare(spec: Any, task: Task, tokenizer: Any, training: Any, seed: int) -> PreparedData:
    import datasets

    datasets.disable_progress_bars()
    col = spec.columns.messages
    from trainables.data import load as data_mod

    ds = data_mod.load_raw(spec, seed)
    data_mod.require_columns(ds, {"messages": col})
    ds = data_mod.split_and_cap(DatasetDict({k: d.select_columns([col]) for k, d in ds.items()}), spec, seed)
    ensure_chat_template(tokenizer)
    tokenizer.padding_side = "right"
    splits, gen = DatasetDict(), []
    for split, d in ds.items():
        convs = [messages(t) for t in list(d[col])]
        enc = [encode(tokenizer, m, training.max_length) for m in convs]
        enc = [e for e in enc if any(t != IGNORE for t in e["labels"])]  # answers cut off entirely
        if not enc:
            raise StudyError("data.columns.messages", f"no {split} conversation has an assistant answer within {training.max_length} tokens", "raise training.max_length or check the roles")
        splits[split] = Dataset.from_list(enc)
        if split == "validation":
            for m in convs:
                last = max((i for i, t in enumerate(m) if t["role"] == "assistant"), default=None)
                if last is not None and len(gen) < training.generate_samples:
                    prompt = tokenizer.apply_chat_template(m[:last], tokenize=False, add_generation_prompt=True)
                    gen.append({"prompt": prompt, "reference": m[last]["content"]})
    from trainables.data.load import PreparedData

    return PreparedData(splits=splits, label_names=[], tokenizer=tokenizer, extra={"generation": gen})


def collator(tokenizer: Any, task: Task) -> Any:
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE, padding=True)


def train_split(data: PreparedData, hp: dict[str, Any], training: Any) -> Any:
    if hp.get("packing", training.packing):
        return pack(data.splits["train"], training.max_length)
    return data.splits["train"]


@torch.no_grad()
def eval_loss(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Mean loss per answer token over the whole split (not a mean of batch means)."""
    model.eval()
    total, tokens = 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        n = int((batch["labels"][:, 1:] != IGNORE).sum())  # causal LMs predict token t+1 from t
        total += float(model(**batch).loss) * n
        tokens += n
    model.train()
    return total / max(tokens, 1)


@torch.no_grad()
def generate(model: torch.nn.Module, tokenizer: Any, prompts: list[str], device: torch.device, max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy answers, left-padded batches (decoder-only generation continues at the right)."""
    model.eval()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            enc.pop("token_type_ids", None)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train()
    return [o.strip() for o in out]


def text_scores(generations: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU (sacrebleu, 0-100) and mean ROUGE-1/2/L F1 (rouge-score, 0-1)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if not generations:
        return {}
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rouge = [scorer.score(r, g) for r, g in zip(references, generations)]
    out = {"bleu": float(sacrebleu.corpus_bleu(generations, [references]).score)}
    for key in ("rouge1", "rouge2", "rougeL"):
        out[key] = float(sum(s[key].fmeasure for s in rouge) / len(rouge))
    return out


def floors(data: PreparedData, task: Task, seed: int) -> list[Any]:
    """None fitted in the driver (``Instruction.no_floor_because`` says why)."""
    return []


def evaluate(model: torch.nn.Module, loader: DataLoader, data: PreparedData, split: str, device: torch.device, task: Task, training: Any) -> tuple[dict[str, float], Any]:
    loss = eval_loss(model, loader, device)
    metrics = {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0))}
    if split != "validation":
        return metrics, None
    sample = data.extra["generation"]
    generations = generate(model, data.tokenizer, [s["prompt"] for s in sample], device, training.max_new_tokens)
    metrics.update(text_scores(generations, [s["reference"] for s in sample]))
    return metrics, generations


def write_files(folder: str, payload: Any, base_payload: Optional[Any], data: PreparedData, task: Task) -> None:
    """``eval/generations.csv``: prompt, reference answer, generated answer (and the model's
    answer before training) for the generation sample."""
    sample = data.extra["generation"]
    rows: dict[str, list] = {"prompt": [s["prompt"] for s in sample], "reference": [s["reference"] for s in sample], "generation": payload}
    if base_payload is not None:
        rows["before_generation"] = base_payload
    os.makedirs(os.path.join(folder, "eval"), exist_ok=True)
    pd.DataFrame(rows).to_csv(os.path.join(folder, "eval", GENERATIONS), index=False)


def input_fields(task: Task) -> tuple[str, ...]:
    return ("prompt",)


def chat_prompt(tokenizer: Any, msgs: list[dict[str, str]]) -> str:
    """The conversation rendered as training rendered it, ending with the assistant's turn."""
    ensure_chat_template(tokenizer)
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def answer(model: torch.nn.Module, tokenizer: Any, rows: list[dict[str, str]], task: Task, training: Any) -> list[dict[str, Any]]:
    """Per prompt (one user turn): the greedy answer, as evaluation generates it."""
    prompts = [chat_prompt(tokenizer, [{"role": "user", "content": r["prompt"]}]) for r in rows]
    training_mode = model.training
    try:
        answers = generate(model, tokenizer, prompts, next(model.parameters()).device, training.max_new_tokens)
    finally:
        model.train(training_mode)  # generate leaves the model training, as the trial loop wants
    return [{"answer": a} for a in answers]


def stream(model: torch.nn.Module, tokenizer: Any, msgs: list[dict[str, str]], max_new_tokens: int) -> Iterator[str]:
    """The greedy answer to a conversation, growing as tokens are generated (for a chat UI);
    the same tokens as ``answer`` gives for a one-turn conversation."""
    import threading

    from transformers import TextIteratorStreamer

    enc = tokenizer(chat_prompt(tokenizer, msgs), return_tensors="pt", add_special_tokens=False).to(next(model.parameters()).device)
    enc.pop("token_type_ids", None)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = {**enc, "max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": tokenizer.pad_token_id, "streamer": streamer}
    worker = threading.Thread(target=model.generate, kwargs=kwargs, daemon=True)
    worker.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text.strip()
    worker.join()
