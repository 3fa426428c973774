"""Parts of the trial loop that decide speed and what a trial can learn: mixed precision by
hardware (forced both ways, whatever CPU runs the test), length-grouped batches, the head's
own learning rate, per-method ranges in one conditional space (real Optuna)."""

from __future__ import annotations

import optuna
import pytest
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding

from core.errors import StudyError
from core.specs import TrainingSpec
from search_spaces import load_space
from sweeps.tuning.searchers import DefineByRun
from trainables.model import load as models
from trainables.kinds import TASKS
from trainables.training.loop import optimizer_for, train_loader
from trainables.training.precision import autocast, autocast_dtype

CPU = torch.device("cpu")


def test_auto_precision_follows_the_cpu_flags():
    assert autocast_dtype(CPU, "auto", frozenset({"avx2", "avx512_bf16"})) is torch.bfloat16
    assert autocast_dtype(CPU, "auto", frozenset({"avx2", "amx_bf16"})) is torch.bfloat16
    assert autocast_dtype(CPU, "auto", frozenset({"avx2", "avx512f"})) is None  # would emulate bf16: slower
    assert autocast_dtype(CPU, "fp32", frozenset({"avx512_bf16"})) is None
    assert autocast_dtype(CPU, "bf16", frozenset()) is torch.bfloat16


@pytest.mark.parametrize("method", ["lora", "qlora", "ia3", "full"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, None])
def test_every_method_trains_and_evaluates_in_both_precisions(minilm_path, method, dtype):
    """The bf16 path runs on any CPU when forced (slowly where it is emulated), so both paths
    are tested here whatever this machine's flags."""
    tok = models.load_tokenizer(minilm_path)
    net = models.build_model(minilm_path, TASKS["single_label"], ["a", "b"], method, {"lora_r": 4}, CPU, tok.pad_token_id)
    batch = dict(tok(["so glad today", "this is awful", "fine", "meh"], padding=True, return_tensors="pt"))
    labels = torch.tensor([0, 1, 0, 1])
    opt = optimizer_for(net, {"learning_rate": 1e-3, "weight_decay": 0.0})  # the trials' optimizer (fused on CPU)
    assert all(g["fused"] for g in opt.param_groups)
    net.eval()
    with torch.no_grad(), autocast(CPU, dtype):
        before = net(**batch, labels=labels).loss.item()
    net.train()
    for _ in range(4):
        with autocast(CPU, dtype):
            loss = net(**batch, labels=labels).loss
        assert loss.dtype == torch.float32  # the loss is reduced in fp32 under autocast
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(p.dtype == torch.float32 for p in net.parameters() if p.requires_grad)  # fp32 master weights
    net.eval()
    with torch.no_grad(), autocast(CPU, dtype):
        assert net(**batch, labels=labels).loss.item() < before


def _rows(tok, n: int = 400) -> Dataset:
    import random

    rng = random.Random(0)
    texts = [" ".join("word" for _ in range(rng.choice([2, 3, 30, 40]))) for _ in range(n)]
    enc = tok(texts, truncation=True, max_length=64)
    return Dataset.from_dict({**enc, "labels": [0] * n})


def test_length_grouped_batches_pad_less_and_replay_from_the_generator_state(minilm_path):
    tok = models.load_tokenizer(minilm_path)
    rows = _rows(tok)
    collate = DataCollatorWithPadding(tok)

    def padded_tokens(group: bool, seed: int = 0) -> tuple[int, list]:
        gen = torch.Generator().manual_seed(seed)
        state = gen.get_state()
        loader = train_loader(rows, TrainingSpec(batch_size=16, group_by_length=group), collate, gen, world=1)
        gen.set_state(state)
        global_rng = torch.get_rng_state()
        first = [b["input_ids"].shape for b in loader]
        # the global RNG (dropout masks) is untouched: a trial resumed mid-epoch draws the same masks
        assert torch.equal(torch.get_rng_state(), global_rng)
        gen.set_state(state)  # what a resumed trial does at the start of its epoch
        again = [b["input_ids"].shape for b in loader]
        assert first == again
        return sum(s[0] * s[1] for s in first), first

    grouped, batches = padded_tokens(True)
    plain, _ = padded_tokens(False)
    assert grouped < 0.7 * plain, (grouped, plain)
    assert sum(s[0] for s in batches) == len(rows)  # every row once per epoch


def test_the_fresh_head_gets_its_own_learning_rate(minilm_path):
    tok = models.load_tokenizer(minilm_path)
    net = models.build_model(minilm_path, TASKS["single_label"], ["a", "b"], "full", {}, CPU, tok.pad_token_id)
    opt = optimizer_for(net, {"learning_rate": 1e-4, "head_learning_rate": 1e-3, "weight_decay": 0.0})
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(net.named_parameters())
    assert lrs[id(named["classifier.weight"])] == 1e-3 and lrs[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == 1e-4
    assert sum(len(g["params"]) for g in opt.param_groups) == len(named)
    same = optimizer_for(net, {"learning_rate": 1e-4, "weight_decay": 0.0})  # no head rate: one rate for all
    assert {g["lr"] for g in same.param_groups} == {1e-4}


def test_adamw_is_fused_where_torch_has_the_kernel_and_takes_the_same_steps():
    """The fused kernel is the same AdamW update as torch's default loop; parameters on a device
    without the kernel (here: meta) get the default implementation instead of an error."""
    import copy

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    ref = copy.deepcopy(net)
    hp = {"learning_rate": 1e-2, "weight_decay": 0.01}
    fused = optimizer_for(net, hp)
    plain = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.01)
    assert [g["fused"] for g in fused.param_groups] == [True] and not plain.param_groups[0]["fused"]
    x, y = torch.randn(32, 16), torch.randint(0, 3, (32,))
    for model, opt in ((net, fused), (ref, plain)):
        for _ in range(10):
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # rounding may differ, the steps do not
    meta = torch.nn.Linear(4, 2, device="meta")
    assert optimizer_for(meta, hp).param_groups[0]["fused"] is None


def test_per_method_ranges_in_one_conditional_space_with_real_optuna():
    space = load_space("small_encoder", {"learning_rate": {"type": "loguniform", "low": 3e-4, "high": 2e-3, "per_method": {"ia3": {"low": 3e-3, "high": 3e-2}}}})
    assert space.params_for("ia3")["learning_rate"].low == 3e-3 and space.params_for("lora")["learning_rate"].high == 2e-3
    sampler = optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, n_startup_trials=3)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    fn = DefineByRun(space, ["lora", "ia3"])
    seen = {"lora": [], "ia3": []}
    for _ in range(12):
        trial = study.ask()
        fn(trial)
        method, lr = trial.params["method"], trial.params["learning_rate"]
        seen[method].append(lr)
        study.tell(trial, -abs(lr - (1e-3 if method == "lora" else 1e-2)))
    assert seen["lora"] and seen["ia3"]
    assert all(3e-4 <= v <= 2e-3 for v in seen["lora"]) and all(3e-3 <= v <= 3e-2 for v in seen["ia3"])


def test_bad_per_method_change_is_one_line_naming_the_field():
    with pytest.raises(StudyError, match=r"learning_rate.per_method.ia3: cannot change methods"):
        load_space("small_encoder", {"learning_rate": {"per_method": {"ia3": {"methods": ["lora"]}}}})
    with pytest.raises(StudyError, match=r"learning_rate.per_method.ia3: low 0.1 > high 0.01"):
        load_space("small_encoder", {"learning_rate": {"per_method": {"ia3": {"low": 0.1}}}})


def test_evaluation_runs_shortest_first_and_answers_in_the_loaders_order(minilm_path):
    """Classification scores batches of similar length (less padding) yet returns logits and
    labels row by row as the loader holds them: eval files and metrics line up with the texts."""
    from torch.utils.data import DataLoader

    from trainables.kinds import classification

    tok = models.load_tokenizer(minilm_path)
    rows = _rows(tok, 60).remove_columns("labels")
    rows = rows.add_column("labels", [i % 3 for i in range(len(rows))])
    model = models.build_model(minilm_path, TASKS["single_label"], ["a", "b", "c"], "lora", {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}, torch.device("cpu"), tok.pad_token_id)
    loader = DataLoader(rows, batch_size=16, collate_fn=DataCollatorWithPadding(tok))
    order = classification.length_order(loader)
    lengths = [len(ids) for ids in rows["input_ids"]]
    assert sorted(order) == list(range(len(rows))) and [lengths[i] for i in order] == sorted(lengths)
    assert order != list(range(len(rows))), "the rows must come in mixed lengths for this test to mean anything"

    global_rng = torch.get_rng_state()
    logits, labels, loss = classification.predict(model, loader, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), global_rng), "an eval must not shift the training's dropout masks"
    model.eval()
    with torch.no_grad():  # one row at a time: no padding at all, the loader's order
        one_by_one = [model(**DataCollatorWithPadding(tok)([rows[i]])) for i in range(len(rows))]
    assert labels.tolist() == rows["labels"]
    assert torch.allclose(torch.tensor(logits), torch.cat([o.logits for o in one_by_one]), atol=1e-4)
    assert loss == pytest.approx(float(torch.stack([o.loss for o in one_by_one]).mean()), rel=1e-4)


@pytest.mark.slow  # Inductor builds C++ kernels: ~40 s
def test_compiled_training_forward_trains_the_same_weights_as_eager(tmp_path):
    """``training.compile``: the steps run through torch.compile (real Inductor, CPU here) on
    the very parameters the optimizer, checkpoints and eager evaluation use, and take the same
    steps as eager, also across batches of different lengths (compiled once, dynamic)."""
    from torch._dynamo.utils import counters

    from trainables.training.loop import training_forward
    from trainables.model.tiny import write_tiny_model

    path = str(write_tiny_model("llama", tmp_path / "tiny"))
    tok = models.load_tokenizer(path)
    texts = [["so glad today", "this is awful"], ["fine, nothing much to say about it really", "meh and more meh words here"]]
    losses = {}
    for compile in (False, True):
        torch.manual_seed(0)
        net = models.build_model(path, TASKS["single_label"], ["a", "b"], "lora", {"lora_r": 4, "lora_dropout": 0.0}, CPU, tok.pad_token_id)
        forward = training_forward(net, TrainingSpec(compile=compile))
        assert isinstance(forward, torch._dynamo.eval_frame.OptimizedModule) is compile
        opt = optimizer_for(net, {"learning_rate": 1e-2, "weight_decay": 0.0})
        net.train()
        losses[compile], graphs = [], []
        counters.clear()
        for step in range(4):
            batch = dict(tok(texts[step % 2], padding=True, return_tensors="pt"))
            loss = forward(**batch, labels=torch.tensor([0, 1])).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses[compile].append(loss.item())
            graphs.append(counters["stats"]["unique_graphs"])
        assert graphs == [graphs[0]] * 4 and (graphs[0] > 0) is compile, "compiled once, dynamic in the batch length"
        net.eval()
        with torch.no_grad():  # the eager model sees what the compiled steps trained
            losses[compile].append(net(**dict(tok(texts[0], padding=True, return_tensors="pt")), labels=torch.tensor([0, 1])).loss.item())
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)
    assert losses[True][-1] < losses[True][0]


def test_trials_on_cuda_keep_attention_off_cudnn_and_cpu_trials_are_untouched():
    """cuDNN's attention plans per sequence length (slow on length-varying batches); the CUDA
    path is forced here (the flag is process state, no GPU needed to set it)."""
    from trainables.training.kernels import avoid_cudnn_attention

    was = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        avoid_cudnn_attention(CPU)
        assert torch.backends.cuda.cudnn_sdp_enabled()
        avoid_cudnn_attention(torch.device("cuda"))
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(was)


@pytest.mark.parametrize("task", ["single_label", "instruction"])
def test_micro_batches_take_the_whole_batchs_gradient(task, tiny_llama):
    """``training.micro_batch_size``: a batch in passes of 3 rows (the last one short), gradients
    summed with each pass's share of the mean loss (rows; target tokens for causal LM, with
    prompt tokens masked unevenly), gives the gradient of the whole batch in one pass."""
    from trainables.training.loop import split_batch

    tok = models.load_tokenizer(tiny_llama)
    texts = ["so glad today", "this is awful and long and sad", "ok", "fine then", "what a day it was", "no", "yes yes yes yes"]
    batch = dict(tok(texts, padding=True, return_tensors="pt"))
    batch.pop("token_type_ids", None)
    token_level = task == "instruction"
    if token_level:
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        labels[:3, :4] = -100  # prompts of different lengths: passes hold different target counts
        batch["labels"] = labels
    else:
        batch["labels"] = torch.tensor([0, 1, 0, 1, 1, 0, 1])
    torch.manual_seed(0)
    net = models.build_model(tiny_llama, TASKS[task], ["a", "b"], "lora", {"lora_r": 4, "lora_dropout": 0.0}, CPU, tok.pad_token_id)
    net.eval()  # no dropout: the two ways must agree to float error
    trained = [p for p in net.parameters() if p.requires_grad]

    def gradients(rows):
        for p in trained:
            p.grad = None
        parts = split_batch(batch, rows, token_level)
        total = 0.0
        for part, share in parts:
            loss = net(**part).loss * share
            loss.backward()
            total += float(loss)
        return total, [p.grad.clone() for p in trained], len(parts)

    whole_loss, whole, n = gradients(None)
    split_loss, split, parts = gradients(3)
    assert n == 1 and parts == 3
    assert split_loss == pytest.approx(whole_loss, rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(whole, split))
    assert any(a.abs().sum() > 0 for a in whole)
