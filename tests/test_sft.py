"""Instruction tuning: the chat template's prompt tokens carry no loss, packing keeps every
token and mask, and the text scores are the libraries' own."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from trainables.kinds import sft

CONVERSATION = [
    {"from": "system", "value": "You are terse."},
    {"from": "human", "value": "What is two plus two?"},
    {"from": "gpt", "value": "Four."},
    {"from": "human", "value": "And doubled?"},
    {"from": "gpt", "value": "Eight."},
]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from trainables.model import tiny

    return str(tiny.write_tiny_model("llama", tmp_path_factory.mktemp("tiny-lm")))


@pytest.fixture(scope="module")
def tokenizer(tiny_lm):
    from trainables.model.load import load_tokenizer

    tok = load_tokenizer(tiny_lm)
    sft.ensure_chat_template(tok)
    return tok


def test_sharegpt_and_openai_turns_normalise_and_bad_turns_name_the_field():
    assert sft.messages(CONVERSATION)[1:3] == [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": "Four."}]
    assert sft.messages([{"role": "user", "content": "hi"}]) == [{"role": "user", "content": "hi"}]
    with pytest.raises(Exception, match="data.columns.messages"):
        sft.messages([{"speaker": "x", "text": "y"}])


def test_only_assistant_answers_are_labelled(tokenizer):
    enc = sft.encode(tokenizer, sft.messages(CONVERSATION), max_length=512)
    ids, labels = enc["input_ids"], enc["labels"]
    kept = [t for t, l in zip(ids, labels) if l != sft.IGNORE]
    assert [l for l in labels if l != sft.IGNORE] == kept
    answers = tokenizer.decode(kept)
    assert "four" in answers.lower() and "eight" in answers.lower()
    for prompt_word in ("terse", "plus", "doubled"):
        assert prompt_word not in answers.lower()
    # everything before the first answer (system + user turn + generation prompt) is masked
    first_prompt = tokenizer.apply_chat_template(sft.messages(CONVERSATION)[:2], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(first_prompt, add_special_tokens=False)["input_ids"])
    assert all(l == sft.IGNORE for l in labels[:n_prompt]) and labels[n_prompt] != sft.IGNORE


def test_the_loss_ignores_prompt_tokens(tokenizer, tiny_lm):
    """The model's loss equals cross-entropy over the answer tokens alone, and differs from
    the loss over every token: prompt tokens are context, never targets."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    enc = sft.encode(tokenizer, sft.messages(CONVERSATION), max_length=512)
    ids, labels = torch.tensor([enc["input_ids"]]), torch.tensor([enc["labels"]])
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
        all_tokens = model(input_ids=ids, labels=ids).loss
    logits, targets = out.logits[0, :-1], labels[0, 1:]
    keep = targets != sft.IGNORE
    manual = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    assert out.loss.item() == pytest.approx(manual.item(), rel=1e-5)
    assert abs(out.loss.item() - all_tokens.item()) > 1e-3
    # changing what the prompt tokens are labelled with changes nothing once they are masked
    relabelled = labels.clone()
    relabelled[0, : int(keep.nonzero()[0])] = sft.IGNORE
    with torch.no_grad():
        assert model(input_ids=ids, labels=relabelled).loss.item() == pytest.approx(out.loss.item(), rel=1e-6)


def test_packing_keeps_every_token_and_every_mask(tokenizer):
    rows = [sft.encode(tokenizer, sft.messages(CONVERSATION[1 + (i % 2) * 2:3 + (i % 2) * 2] if i % 2 else CONVERSATION[:3]), 512) for i in range(7)]
    plain = Dataset.from_list(rows)
    packed = sft.pack(plain, max_length=32)
    flat = lambda ds, col: [t for r in ds[col] for t in r]  # noqa: E731
    assert flat(packed, "input_ids") == flat(plain, "input_ids")
    assert flat(packed, "labels") == flat(plain, "labels")
    assert all(len(r) == 32 for r in packed["input_ids"][:-1]) and 0 < len(packed["input_ids"][-1]) <= 32
    assert len(packed) < len(plain) or sum(map(len, plain["input_ids"])) <= 32 * len(plain)


def test_text_scores_are_sacrebleu_and_rouge_score():
    perfect = sft.text_scores(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rouge1"] == pytest.approx(1.0) and perfect["rougeL"] == pytest.approx(1.0)
    none = sft.text_scores(["dogs bark loudly"], ["the cat sat on the mat"])
    assert none["bleu"] == pytest.approx(0.0) and none["rouge1"] == 0.0
    half = sft.text_scores(["the cat"], ["the cat sat"])
    assert half["rouge1"] == pytest.approx(0.8)  # P 1, R 2/3
