"""Before-training scores shared between a stage's trials (trainables.evaluation.base_scores): the key
separates models that score differently before training and joins those that score alike, every
registered method is what its ``identity_at_init`` says, and a real sweep computes them once."""

from __future__ import annotations

import pytest
import torch

from trainables.evaluation import base_scores
from trainables.model import load as models
from trainables.kinds import TASKS
from trainables.model.methods import METHODS

CPU = torch.device("cpu")
TEXTS = ["so glad today", "this is awful and i hate every minute of it", "fine"]


def _built(path: str, method: str, seed: int, **hp):
    from transformers import set_seed

    set_seed(seed)  # as a trial does before building: the fresh head's init comes from it
    tok = models.load_tokenizer(path)
    net = models.build_model(path, TASKS["single_label"], ["a", "b", "c"], method, {"lora_r": 4, "lora_alpha": 8, **hp}, CPU, tok.pad_token_id)
    net.eval()
    return net, dict(tok(TEXTS, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("method", [m for m in METHODS.names() if METHODS[m].peft_config is not None and METHODS[m].identity_at_init])
def test_each_method_is_what_identity_at_init_says(minilm_path, method):
    """A method sharing its before scores must leave the model's outputs unchanged when built:
    the same logits with its adapter switched off. A new method whose init is not the identity
    (PiSSA-style) fails here until it says ``identity_at_init=False``. (The ``full`` and
    ``head`` baselines have no adapter: their model before training is the base itself.)"""
    net, batch = _built(minilm_path, method, 0)
    with torch.no_grad():
        on = net(**batch).logits
        with net.disable_adapter():
            off = net(**batch).logits
    assert torch.equal(on, off) or torch.allclose(on, off, atol=1e-6), (on - off).abs().max()


def test_the_key_joins_ranks_and_parts_models_that_score_differently(minilm_path):
    lora_r4, batch = _built(minilm_path, "lora", 0, lora_r=4)
    lora_r8, _ = _built(minilm_path, "lora", 0, lora_r=8, lora_dropout=0.1)
    other_seed, _ = _built(minilm_path, "lora", 1)
    qlora, _ = _built(minilm_path, "qlora", 0)
    keys = {name: base_scores.key(net, method, seed, CPU) for name, net, method, seed in [
        ("r4", lora_r4, "lora", 0), ("r8", lora_r8, "lora", 0), ("seed1", other_seed, "lora", 1), ("qlora", qlora, "qlora", 0)]}
    assert keys["r4"] == keys["r8"]  # rank and dropout do not change the model before training
    with torch.no_grad():
        assert torch.allclose(lora_r4(**batch).logits, lora_r8(**batch).logits, atol=1e-6)
        assert not torch.allclose(lora_r4(**batch).logits, other_seed(**batch).logits, atol=1e-3)  # another head init
    assert len({keys["r4"], keys["seed1"], keys["qlora"]}) == 3
    # the fingerprint itself tells the head inits apart, not only the seed in the key
    assert base_scores.key(other_seed, "lora", 0, CPU) != keys["r4"]


@pytest.mark.ray
def test_a_sweep_scores_the_model_before_training_once_per_distinct_model(workdir, minilm_path, ray_cluster):
    """Real Ray, Tune, MLflow: two LoRA ranks share one before-training pass, IA3 has its own;
    the shared scores are the computed ones, and training is untouched by where they came from."""
    from sweeps.study import load_study
    from sweeps.tuning.tuner import run_study
    from tests.conftest import base_study, mlflow_runs, write_study

    spec = base_study(minilm_path, name="base-scores", methods=["lora", "ia3"])
    spec["search_space"]["overrides"]["lora_r"] = [4, 8]
    spec["training"].update(max_steps=2, eval_every_steps=2)
    spec["search"]["max_concurrent_trials"] = 1
    outcome = run_study(load_study(write_study(workdir, spec), []))
    assert outcome.counts["completed"] == 3
    _, found = mlflow_runs(workdir, "base-scores")
    trials = [r.data for r in found if "mlflow.parentRunId" in r.data.tags]
    lora = [t for t in trials if t.params["method"] == "lora"]
    ia3 = [t for t in trials if t.params["method"] == "ia3"]
    assert sorted(t.metrics["before_shared"] for t in lora) == [0, 1] and [t.metrics["before_shared"] for t in ia3] == [0]
    before = [{k: v for k, v in t.metrics.items() if k.startswith("before_") and k != "before_shared"} for t in lora]
    assert before[0] and before[0] == before[1]
    shared = next(t for t in lora if t.metrics["before_shared"] == 1)
    computed = next(t for t in lora if t.metrics["before_shared"] == 0)
    assert shared.metrics["eval_time_s"] < computed.metrics["eval_time_s"]  # one pass fewer


@pytest.mark.ray
def test_the_cache_answers_hits_and_a_lost_cache_only_costs_the_pass(ray_cluster):
    import ray

    cache = base_scores.start()
    assert base_scores.cached_or_computed(cache, "k", lambda: {"metrics": {"before_f1": 0.5}}) == ({"metrics": {"before_f1": 0.5}}, False)
    assert base_scores.cached_or_computed(cache, "k", lambda: pytest.fail("computed again")) == ({"metrics": {"before_f1": 0.5}}, True)
    assert base_scores.cached_or_computed(cache, None, lambda: 7) == (7, False)  # a method that shares nothing
    ray.kill(cache)  # its node lost, say: the trial computes instead of failing
    _wait_until_dead(cache)
    assert base_scores.cached_or_computed(cache, "k", lambda: 8) == (8, False)


def _wait_until_dead(actor, tries: int = 300) -> None:
    """``ray.kill`` only asks the GCS to kill: a call made right after it may still be served
    (CI once got the cached scores back). Wait until calls fail, as they do once its node is gone."""
    import time

    import ray

    for _ in range(tries):
        try:
            ray.get(actor.get.remote("probe"), timeout=10)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.1)
    raise AssertionError(f"the killed actor still answered after {tries} calls")
