"""A sentence encoder is classified the way it was trained to embed: the checkpoint's pooling
config is read, the mean-pooled head averages real tokens only, every encoder head family reads
the pooled vector, and an explicit mean where no head can read it is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.errors import StudyError
from trainables.kinds import TASKS
from trainables.model import load as models
from trainables.model import pooling

SINGLE = TASKS["single_label"]
TEXTS = ["i feel great", "this long sentence makes the short one wait behind many padding tokens today"]


def sentence_transformers_folder(folder: Path, **modes: bool) -> Path:
    """A folder with sentence-transformers' module list and a pooling config of ``modes``."""
    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    config = {"word_embedding_dimension": 64, **{f"pooling_mode_{k}": v for k, v in modes.items()}}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    return folder


def test_checkpoint_pooling_reads_the_sentence_transformers_config(minilm_path, tmp_path):
    assert pooling.checkpoint_pooling(minilm_path) == "mean"  # all-MiniLM-L6-v2's 1_Pooling/config.json
    assert pooling.checkpoint_pooling(str(tmp_path)) is None  # a plain transformers folder
    assert pooling.checkpoint_pooling(str(sentence_transformers_folder(tmp_path / "cls", cls_token=True, mean_tokens=False))) == "cls"
    assert pooling.checkpoint_pooling(str(sentence_transformers_folder(tmp_path / "two", cls_token=True, mean_tokens=True))) is None


def test_pooling_setting_made_concrete(minilm_path, tiny_llama):
    assert models.pooling_of(minilm_path, SINGLE, "auto") == "mean"
    assert models.pooling_of(minilm_path, SINGLE, "cls") == "cls"
    assert models.pooling_of(minilm_path, TASKS["extractive_qa"], "auto") == "cls"  # a span head reads every token
    assert models.pooling_of(tiny_llama, SINGLE, "auto") == "cls"  # no pooling config: the family's own head
    with pytest.raises(StudyError) as err:
        models.pooling_of(tiny_llama, SINGLE, "mean")  # a decoder scores its last token
    assert err.value.field == "training.pooling" and "pooling: auto or cls" in err.value.one_line()


def by_hand(minilm_path: str, net: torch.nn.Module, enc: dict) -> torch.Tensor:
    """The checkpoint's own embedding (sentence-transformers: mean over the mask) through the head."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(minilm_path).eval()
    hidden = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], token_type_ids=enc["token_type_ids"]).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return net.classifier((hidden * mask).sum(1) / mask.sum(1))


def test_mean_pooled_head_averages_real_tokens_only(minilm_path):
    tok = models.load_tokenizer(minilm_path)
    net = models.build_model(minilm_path, SINGLE, ["a", "b", "c"], "full", {}, torch.device("cpu"), tok.pad_token_id).eval()
    assert type(net).__name__ == "MeanPooledBertForSequenceClassification" and net.config.classifier_pooling == "mean"
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # the short text is padded
    with torch.no_grad():
        logits = net(**batch).logits
        alone = net(**tok(TEXTS[:1], return_tensors="pt")).logits
        assert torch.allclose(logits[:1], alone, atol=1e-5)  # padding does not move it
        assert torch.allclose(logits, by_hand(minilm_path, net, batch), atol=1e-5)
        cls = models.build_model(minilm_path, SINGLE, ["a", "b", "c"], "full", {}, torch.device("cpu"), tok.pad_token_id, pooling="cls").eval()
        cls.classifier.load_state_dict(net.classifier.state_dict())
        assert not torch.allclose(cls(**batch).logits, logits, atol=1e-3)  # the first token through BERT's pooler differs
    # BERT's pooler takes no part: it is gone, so every weight of full fine-tuning trains (and
    # DDP never waits for a gradient that cannot come)
    assert net.bert.pooler is None and all(p.requires_grad for p in net.parameters())


@pytest.mark.parametrize("family", ["distilbert", "roberta"])
def test_every_encoder_head_reads_the_pooled_vector(family, tmp_path, minilm_path):
    """DistilBERT (dense + ReLU before its classifier) and RoBERTa-style heads (which take the
    sequence and read position 0) are fed the pooled vector, train a LoRA step and save."""
    from transformers import AutoModel, AutoTokenizer, DistilBertConfig, RobertaConfig

    tok = AutoTokenizer.from_pretrained(minilm_path)
    config = {
        "distilbert": DistilBertConfig(vocab_size=tok.vocab_size, dim=32, hidden_dim=64, n_layers=1, n_heads=2),
        "roberta": RobertaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, pad_token_id=tok.pad_token_id),
    }[family]
    folder = sentence_transformers_folder(tmp_path / family, mean_tokens=True)
    AutoModel.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    net = models.build_model(str(folder), SINGLE, ["a", "b"], "lora", {"lora_r": 2, "lora_alpha": 4, "lora_dropout": 0.0}, torch.device("cpu"), tok.pad_token_id)
    base = net.get_base_model()
    assert type(base).__name__.startswith("MeanPooled")
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    if family == "roberta":
        batch.pop("token_type_ids")
    out = net(**batch, labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert out.logits.shape == (2, 2)
    assert all(p.grad is not None for n, p in net.named_parameters() if p.requires_grad)
    net.eval()
    with torch.no_grad():  # the short text alone and padded in the batch: one answer
        assert torch.allclose(net(**{k: v[:1, : int(batch["attention_mask"][0].sum())] for k, v in batch.items()}).logits, net(**batch).logits[:1], atol=1e-5)
    net.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_a_family_with_its_own_switch_keeps_its_class(tmp_path, minilm_path):
    """ModernBERT's config has ``classifier_pooling``: its own class pools by the mean."""
    from transformers import AutoModel, AutoTokenizer, ModernBertConfig

    tok = AutoTokenizer.from_pretrained(minilm_path)
    config = ModernBertConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              pad_token_id=tok.pad_token_id, global_attn_every_n_layers=1)
    folder = sentence_transformers_folder(tmp_path / "modernbert", mean_tokens=True)
    AutoModel.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    net = models.build_model(str(folder), SINGLE, ["a", "b"], "full", {}, torch.device("cpu"), tok.pad_token_id)
    assert type(net).__name__ == "ModernBertForSequenceClassification" and net.config.classifier_pooling == "mean"


def test_extend_keeps_the_earlier_trials_pooling(minilm_path, tmp_path):
    """An extension whose trials would pool otherwise than the recorded ones is refused in one
    line naming the setting that matches them (a study recorded before the setting: cls)."""
    from sweeps.study import load_study
    from sweeps.tuning.extend import check_pooling
    from tests.conftest import base_study, write_study

    study = load_study(write_study(tmp_path, base_study(minilm_path)))
    assert study.training.pooling == "auto"
    check_pooling(study, {"model": minilm_path, "training": {"pooling": "auto"}})
    check_pooling(study, {"model": minilm_path, "training": {"pooling": "mean"}})  # the same, said explicitly
    with pytest.raises(StudyError) as err:
        check_pooling(study, {"model": minilm_path, "training": {}})
    assert err.value.field == "training.pooling" and "--set training.pooling=cls" in err.value.one_line()
