"""Each peft method builds, trains a step and checkpoints adapter-only, on real weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainables.model import load as models
from trainables.kinds import TASKS

HP = {"lora_r": 4, "lora_alpha_ratio": 2, "lora_dropout": 0.0}


@pytest.mark.parametrize("method", ["lora", "qlora", "ia3"])
@pytest.mark.parametrize("which", ["minilm", "tiny_llama"])
def test_method_trains_and_saves_adapter_only(method, which, request, tmp_path):
    ref = request.getfixturevalue("minilm_path" if which == "minilm" else "tiny_llama")
    tok = models.load_tokenizer(ref)
    net = models.build_model(ref, TASKS["single_label"], ["a", "b", "c"], method, HP, torch.device("cpu"), tok.pad_token_id)
    trainable, total = models.count_params(net)
    assert 0 < trainable < total / 10
    if method == "qlora":
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in net.modules()), "QLoRA base must be 4-bit"
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    if method == "ia3":
        assert all("lora_" not in n for n in names) and any("ia3_" in n for n in names)
    else:
        assert any("lora_A" in n for n in names)
    assert any("modules_to_save" in n for n in names), "the new head must train"

    batch = tok(["i feel great", "this is awful news"], padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1])
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    before = net(**batch, labels=labels).loss.item()
    for _ in range(5):
        loss = net(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert net(**batch, labels=labels).loss.item() < before

    net.save_pretrained(tmp_path)
    files = {p.name for p in Path(tmp_path).iterdir()}
    assert "adapter_config.json" in files and "adapter_model.safetensors" in files
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "adapter_model.safetensors")
    saved_params = sum(t.numel() for t in saved.values())
    assert saved_params <= trainable + 10, "checkpoint must hold the adapter and head, never base weights"


def test_multi_label_head(tiny_llama):
    tok = models.load_tokenizer(tiny_llama)
    net = models.build_model(tiny_llama, TASKS["multi_label"], ["x", "y", "z", "w"], "lora", HP, torch.device("cpu"), tok.pad_token_id)
    batch = tok(["a b c", "d"], padding=True, return_tensors="pt")
    out = net(**batch, labels=torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]]))
    assert out.logits.shape == (2, 4) and torch.isfinite(out.loss)


@pytest.mark.parametrize("method", ["full", "head"])
def test_baselines_train_the_right_weights_and_checkpoint_round_trips(minilm_path, tmp_path, method):
    """``full``: every weight trains; ``head``: only the fresh classification head. What a
    checkpoint saves restores exactly into a freshly built model."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    net = models.build_model(minilm_path, TASKS["single_label"], ["a", "b", "c"], method, HP, torch.device("cpu"), tok.pad_token_id)
    trainable, total = models.count_params(net)
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    if method == "full":
        assert trainable == total
    else:
        assert names == ["classifier.weight", "classifier.bias"] and trainable == 384 * 3 + 3
    batch = tok(["so happy", "so sad"], return_tensors="pt", padding=True)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net(**batch, labels=torch.tensor([0, 1])).loss.backward()
    opt.step()
    models.save_trained(net, str(tmp_path), method)
    saved = {p.name for p in tmp_path.iterdir()}
    assert saved == ({"head.safetensors"} if method == "head" else {"config.json", "model.safetensors"})
    fresh = models.build_model(minilm_path, TASKS["single_label"], ["a", "b", "c"], method, HP, torch.device("cpu"), tok.pad_token_id)
    models.load_trained(fresh, str(tmp_path))
    for (n, a), (_, b) in zip(net.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), n


def test_head_is_refused_for_instruction_tuning(tiny_llama, tmp_path):
    from core.errors import StudyError
    from sweeps.study import load_study
    from tests.conftest import base_study, write_study

    study = base_study(tiny_llama, task="instruction", methods=["head"], search={"metric": "eval_loss", "mode": "min", "algorithm": "grid"})
    with pytest.raises(StudyError, match=r"methods\[0\].*does not apply to sft"):
        load_study(write_study(tmp_path, study))


@pytest.mark.parametrize("task,method", [("extractive_qa", "head"), ("extractive_qa", "full"), ("instruction", "full"), ("extractive_qa", "qlora")])
def test_baselines_and_qlora_on_qa_and_instruction_models(tiny_llama, tmp_path, task, method):
    """The span head (QA) and the causal LM (instruction tuning) build, train and checkpoint
    with the baselines too; the QA head loads the Llama backbone's weights (not a random one)."""
    from safetensors.torch import load_file

    net = models.build_model(tiny_llama, TASKS[task], [], method, HP, torch.device("cpu"), 0)
    trainable, total = models.count_params(net)
    assert (trainable == total) if method == "full" else (0 < trainable < total / 10)
    ids = torch.randint(1, 1000, (2, 12))
    labels = {"labels": ids} if task == "instruction" else {"start_positions": torch.tensor([1, 2]), "end_positions": torch.tensor([3, 4])}
    net(input_ids=ids, attention_mask=torch.ones_like(ids), **labels).loss.backward()
    if task == "extractive_qa" and method != "qlora":
        base = load_file(str(Path(tiny_llama) / "model.safetensors"))["model.embed_tokens.weight"]
        assert torch.equal(net.get_input_embeddings().weight, base)  # backbone loaded, not re-initialised
    models.save_trained(net, str(tmp_path), method)
    fresh = models.build_model(tiny_llama, TASKS[task], [], method, HP, torch.device("cpu"), 0)
    models.load_trained(fresh, str(tmp_path))
    for (n, a), (_, b) in zip(net.state_dict().items(), fresh.state_dict().items()):
        if a.dtype.is_floating_point and "original_module" not in n:  # the untrained fresh head copy
            assert torch.equal(a, b), n


@pytest.mark.parametrize("which,task", [("minilm", "single_label"), ("tiny_llama", "extractive_qa")])
def test_qlora_trains_after_eval_on_cpus_with_avx512_bf16(which, task, request, monkeypatch, tmp_path):
    """bitsandbytes repacks 4-bit weights into an inference-only layout at a no-grad eval pass on
    CPUs with AVX512-BF16 (and then cannot train). The CPU check is forced on, so this runs the
    path on every machine: a trial's order (base eval, train, eval, checkpoint) must work, and
    the checkpoint must hold only the adapter and head."""
    import bitsandbytes as bnb
    import bitsandbytes.nn.modules as bnb_modules
    from safetensors.torch import load_file

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)  # as on such a CPU
    ref = request.getfixturevalue("minilm_path" if which == "minilm" else "tiny_llama")
    tok = models.load_tokenizer(ref)
    net = models.build_model(ref, TASKS[task], ["a", "b", "c"], "qlora", HP, torch.device("cpu"), tok.pad_token_id)
    layers = [m for m in net.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers
    enc = dict(tok(["i feel great today", "this is awful news"], padding=True, return_tensors="pt"))
    seq = enc["input_ids"].shape[1]
    labels = {"labels": torch.tensor([0, 1])} if task == "single_label" else {"start_positions": torch.tensor([1, 2]), "end_positions": torch.tensor([seq - 1, seq - 1])}
    net.eval()
    with torch.no_grad():
        net(**enc)
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    net.train()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        net(**enc, **labels).loss.backward()
        opt.step()
        opt.zero_grad()
    models.save_trained(net, str(tmp_path), "qlora")
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert not [k for k in saved if "absmax" in k or "quant" in k], "quantization state leaked into the adapter"


@pytest.fixture(scope="module")
def bf16_llama(tiny_llama, tmp_path_factory):
    """The tiny Llama saved in bf16, as Llama, Gemma and Mistral ship (transformers loads a
    checkpoint in its own dtype unless told otherwise)."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("bf16_llama")
    AutoModelForCausalLM.from_pretrained(tiny_llama).to(torch.bfloat16).save_pretrained(folder)
    models.load_tokenizer(tiny_llama).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("method", ["lora", "ia3", "head"])
def test_what_trains_is_fp32_over_a_bf16_checkpoint(method, bf16_llama):
    """A bf16 checkpoint's fresh head used to train in bf16 (AdamW updates rounded away); now
    the base stays as shipped and everything that trains is fp32, through a whole step."""
    tok = models.load_tokenizer(bf16_llama)
    net = models.build_model(bf16_llama, TASKS["single_label"], ["a", "b"], method, HP, torch.device("cpu"), tok.pad_token_id)
    trained = {n: p.dtype for n, p in net.named_parameters() if p.requires_grad}
    assert trained and set(trained.values()) == {torch.float32}, trained
    assert models.frozen_weight_bits(net) == 16
    batch = tok(["i feel great", "this is awful news"], padding=True, return_tensors="pt")
    with torch.no_grad():  # evaluation: no autocast, bf16 features into the fp32 head
        logits = net(**batch).logits
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = net(**batch, labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", ["lora", "ia3", "head"])
def test_base_dtype_bf16_halves_the_frozen_weights_and_scores_alike(method, minilm_path):
    """``training.base_dtype: bf16`` on an fp32 checkpoint (MiniLM): frozen weights load in
    bf16, what trains stays fp32, and the model computes what the fp32 one does (same fresh
    head: same seed), to bf16's precision."""
    tok = models.load_tokenizer(minilm_path)
    batch = tok(["i feel great", "this is awful news", "ok"], padding=True, return_tensors="pt")
    nets = {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(0)
        nets[dtype] = models.build_model(minilm_path, TASKS["single_label"], ["a", "b", "c"], method, HP, torch.device("cpu"), tok.pad_token_id, base_dtype=dtype)
    full, half = nets[None], nets[torch.bfloat16]
    assert models.frozen_weight_bits(full) == 32 and models.frozen_weight_bits(half) == 16
    frozen_bytes = {d: sum(p.numel() * p.element_size() for p in n.parameters() if not p.requires_grad) for d, n in nets.items()}
    assert frozen_bytes[torch.bfloat16] < 0.51 * frozen_bytes[None]
    assert {p.dtype for p in half.parameters() if p.requires_grad} == {torch.float32}
    with torch.no_grad():
        a, b = full(**batch).logits, half(**batch).logits
    assert b.dtype == torch.float32
    assert torch.allclose(a, b, atol=0.05), (a, b)
    assert not torch.equal(a, b)  # really computed on bf16 weights


def test_base_dtype_resolves_by_device_precision_and_method():
    from core.specs import TrainingSpec
    from trainables.training.precision import base_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert base_dtype(cuda, TrainingSpec(precision="bf16"), "lora") is torch.bfloat16  # auto on a GPU training in bf16
    assert base_dtype(cuda, TrainingSpec(precision="fp32"), "lora") is None  # the checkpoint's own
    assert base_dtype(cpu, TrainingSpec(precision="bf16"), "ia3") is None  # CPUs keep the checkpoint's
    assert base_dtype(cpu, TrainingSpec(base_dtype="bf16"), "head") is torch.bfloat16
    assert base_dtype(cuda, TrainingSpec(base_dtype="fp32", precision="bf16"), "lora") is torch.float32
    assert base_dtype(cuda, TrainingSpec(base_dtype="bf16"), "full") is None  # every weight trains
    assert base_dtype(cuda, TrainingSpec(base_dtype="bf16"), "qlora") is None  # a 4-bit base
