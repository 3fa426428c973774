"""Evaluation with the adapter merged (trainables.evaluation.merged_eval): the same scores as the unmerged
model, the frozen weights restored bit for bit (also after an error), and no merge where it
would round (QLoRA's 4-bit base, a bf16 base) or where there is no adapter (full, head)."""

from __future__ import annotations

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from trainables.model import load as models
from trainables.kinds import TASKS
from trainables.evaluation.merged_eval import merged_adapters, mergeable

CPU = torch.device("cpu")
TEXTS = ["so glad today", "this is awful and i hate every minute of it", "fine", "meh, could be better i guess"]


def _trained_like(path: str, method: str, **kw) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A model whose adapter is not at its identity init (LoRA's B is zero when built), with
    dropout in the adapter, in eval mode as an evaluation runs it; and its batch."""
    tok = models.load_tokenizer(path)
    net = models.build_model(path, TASKS["single_label"], ["a", "b", "c"], method, {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": "all-linear"}, CPU, tok.pad_token_id, **kw)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.requires_grad and ("lora_B" in name or "ia3_l" in name):
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    net.eval()
    return net, dict(tok(TEXTS, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_merged_evaluation_scores_as_the_unmerged_model_and_restores_every_weight_exactly(minilm_path, method):
    net, batch = _trained_like(minilm_path, method)
    layers = [m for m in net.modules() if isinstance(m, BaseTunerLayer)]
    assert mergeable(net) and layers
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        unmerged = net(**batch).logits
        with merged_adapters(net) as merged:
            assert merged and all(m.merged for m in layers)
            # the merge really changed the base weights it folds into (not a no-op)
            assert any(not torch.equal(m.get_base_layer().weight, before[k]) for k, m in _base_weight_keys(net, layers))
            folded = net(**batch).logits
    assert torch.allclose(unmerged, folded, atol=1e-5), (unmerged - folded).abs().max()
    assert not any(m.merged for m in layers)
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), "bit-exact restore"


def test_an_error_inside_still_restores_the_weights(minilm_path):
    net, _ = _trained_like(minilm_path, "lora")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"), merged_adapters(net):
        raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(m.merged for m in net.modules() if isinstance(m, BaseTunerLayer))


@pytest.mark.parametrize("method,kw", [("qlora", {}), ("lora", {"base_dtype": torch.bfloat16}), ("full", {}), ("head", {})])
def test_no_merge_where_it_would_round_or_there_is_no_adapter(minilm_path, method, kw):
    """4-bit and bf16 bases would round the merged weights (scores off from the adapter a user
    loads); the baselines have nothing to merge. Evaluation runs them as they are."""
    net, batch = _trained_like(minilm_path, method, **kw)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert not mergeable(net)
    with torch.no_grad(), merged_adapters(net) as merged:
        assert merged is False
        assert not any(getattr(m, "merged", False) for m in net.modules() if isinstance(m, BaseTunerLayer))
        net(**batch)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def _base_weight_keys(net: torch.nn.Module, layers: list[torch.nn.Module]) -> list[tuple[str, torch.nn.Module]]:
    names = {id(m): n for n, m in net.named_modules()}
    return [(f"{names[id(m.get_base_layer())]}.weight", m) for m in layers]
