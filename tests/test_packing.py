"""Memory-aware trial packing (``resources.gpus_per_worker: auto``): the estimate, the packing
arithmetic, bad input, and packed trials really sharing one (fake) GPU on a local Ray cluster."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from conftest import base_study, write_study
from core.errors import StudyError
from trainables.training import failures, memory
from trainables.kinds import TASKS

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "bench" / "results" / "gpu_check_h100.json"
CUDA_CONTEXT_GIB = 0.5  # outside torch.cuda.max_memory_allocated, inside what the GPU holds


def _shape(name: str, task: str) -> memory.ModelShape:
    from transformers import AutoConfig

    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_check import SHAPES

    family, dims = SHAPES[name]
    return memory.shape_of(AutoConfig.for_model(family, pad_token_id=0, dtype="bfloat16", **dims), TASKS[task].auto_model)


@pytest.mark.parametrize("row", json.loads(MEASURED.read_text()), ids=lambda r: f"{r['shape']}-{r['task']}-{r['method']}-gc{int(r['gradient_checkpointing'])}")
def test_the_estimate_covers_every_peak_measured_on_an_h100_and_is_not_wasteful(row):
    """Real shapes (Llama-3.2-1B, Mistral-7B), the peaks bench/gpu_check.py measured: packing
    must never plan less than a trial took (load or train), nor waste most of a GPU."""
    batch, seq = map(int, row["batch"].split("x"))
    task = TASKS[row["task"]]
    est = memory.estimate(_shape(row["shape"], row["task"]), row["method"], batch=batch, seq_len=seq, lora_r=16,
                          causal_lm=task.peft_task_type == "CAUSAL_LM", gradient_checkpointing=row["gradient_checkpointing"])
    took = max(row["train_peak_gb"], row["load_peak_gb"]) + CUDA_CONTEXT_GIB
    assert took <= est.total_gib <= 1.5 * took, est.describe()


def test_the_estimate_grows_with_what_costs_memory():
    shape = _shape("llama-3.2-1b", "single_label")
    at = lambda method="lora", **kw: memory.estimate(shape, method, **{"batch": 8, "seq_len": 256, **kw}).total_gib  # noqa: E731
    assert at(batch=16) > at() and at(seq_len=512) > at() and at(lora_r=64) > at()
    assert at(gradient_checkpointing=True) < at()
    assert at("qlora") < at("full") and at("lora") < at("full")
    mistral = _shape("mistral-7b", "single_label")
    assert memory.estimate(mistral, "qlora", batch=8, seq_len=256).weights_gib < memory.estimate(mistral, "lora", batch=8, seq_len=256).weights_gib / 3


def test_the_estimate_follows_the_base_dtype_of_frozen_weights(tmp_path, tiny_llama):
    """training.base_dtype fixes what frozen weights take (bf16: half an fp32 checkpoint's);
    auto keeps the checkpoint's bytes, safe on a GPU without bf16; full trains the checkpoint's."""
    from sweeps.tuning import packing

    fp32 = dataclasses.replace(_shape("llama-3.2-1b", "single_label"), dtype_bytes=4)
    w = lambda method="lora", **kw: memory.estimate(fp32, method, batch=8, seq_len=256, **kw).weights_gib  # noqa: E731
    assert w(base_bytes=2) == pytest.approx(w() / 2) and w(base_bytes=4) == w()
    assert w("full", base_bytes=2) == w("full"), "full fine-tuning's weights all train: the checkpoint's dtype"
    assert w("qlora", base_bytes=2) == w("qlora")
    resources = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": "auto", "gpu_memory_gb": 24}
    at = lambda **training: packing.estimate_study(_study(write_study(tmp_path, base_study(tiny_llama, resources=resources, training={"epochs": 1, "batch_size": 16, "max_length": 24, **training}))))[1].weights_gib  # noqa: E731
    assert at(base_dtype="bf16") == pytest.approx(at() / 2) == pytest.approx(at(base_dtype="fp32") / 2)  # the tiny Llama is saved in fp32


def test_packing_arithmetic():
    # 80 GiB, 10% kept free: 72 usable
    assert memory.trials_per_gpu(8.2, 80, 0.1, most=8) == 8
    assert memory.trials_per_gpu(8.2, 80, 0.1, most=4) == 4
    assert memory.trials_per_gpu(28.5, 80, 0.1, most=8) == 2
    assert memory.trials_per_gpu(36.0, 80, 0.1, most=8) == 2  # exactly 72
    assert memory.trials_per_gpu(80.0, 80, 0.1, most=8) == 0
    assert memory.share(1) == 1.0 and memory.share(2) == 0.5 and memory.share(3) == 0.3333 and memory.share(8) == 0.125
    assert 3 * memory.share(3) <= 1.0, "three shares must fit on one GPU"
    # out of memory: half as many on that GPU, never more than a whole GPU
    assert memory.fallback_share(0.125) == 0.25 and memory.fallback_share(0.3333) == 1.0 and memory.fallback_share(0.5) == 1.0


def test_an_out_of_memory_trial_retries_with_a_larger_share_only_when_packed():
    from core.specs import ResourcesSpec
    from trainables.training.trial import wider_share

    oom, nan = failures.Failure("out_of_memory", "x"), failures.Failure("diverged", "x")
    assert wider_share(oom, ResourcesSpec(gpus_per_worker=0.25)) == 0.5
    assert wider_share(oom, ResourcesSpec(gpus_per_worker=0.5)) == 1.0
    assert wider_share(oom, ResourcesSpec(gpus_per_worker=1.0)) is None, "a whole GPU: nothing to widen"
    assert wider_share(oom, ResourcesSpec(gpus_per_worker=0.0)) is None, "CPU trials"
    assert wider_share(nan, ResourcesSpec(gpus_per_worker=0.25)) is None, "only memory is worth a retry"


def test_an_in_process_trial_out_of_memory_retries_in_a_train_worker_with_a_larger_share(monkeypatch):
    """The Tune actor's GPU share is fixed once placed: the wider retry goes to a Train worker.
    (The attempts are stand-ins; the real retry needs a real GPU running out of memory.)"""
    from types import SimpleNamespace

    from core.specs import ResourcesSpec, TrainingSpec
    from trainables.training import trial
    from trainables.spec import TrialSpec

    attempts = []

    def attempt(config, spec, data, ctx, started):
        attempts.append(spec.resources)
        if len(attempts) == 1:
            raise failures.TrialOutOfMemory("out of memory")

    monkeypatch.setattr(trial, "_train", attempt)
    monkeypatch.setattr(trial.tune, "get_context", lambda: SimpleNamespace(get_trial_name=lambda: "t"))
    monkeypatch.setattr(trial, "wait_until_tune_has_every_report", lambda: None)
    spec = TrialSpec(model="m", task=TASKS["single_label"], training=TrainingSpec(), metric="f1_macro", mode="max", train_storage="/tmp/x",
                     resources=ResourcesSpec(gpus_per_worker=0.25, in_process=True), worker_start_timeout_s=1.0)
    trial.run_trial({"method": "lora"}, spec, [None])
    assert [(r.in_process, r.gpus_per_worker) for r in attempts] == [(True, 0.25), (False, 0.5)]


def test_out_of_memory_on_a_whole_gpu_halves_the_rows_per_pass_then_fails_with_the_knobs(monkeypatch, capsys):
    """Packed: first a wider share; at a whole GPU: half the rows per pass each time (the same
    batch: gradients summed, tests/test_loop_parts.py), down to one, then the trial fails with
    one line. (The attempts are stand-ins; a real out of memory needs a real GPU.)"""
    from types import SimpleNamespace

    from ray.train.v2.api.exceptions import WorkerGroupError

    from core.specs import ResourcesSpec, TrainingSpec
    from trainables.training import trial
    from trainables.spec import TrialSpec

    attempts, reported = [], []

    def attempt(config, spec, data, ctx, started):
        attempts.append((spec.resources.gpus_per_worker, spec.training.micro_batch_size))
        oom = failures.out_of_memory(spec.training, "lora")
        raise oom if spec.resources.in_process else WorkerGroupError("a worker failed", {0: oom})  # how a Train run raises it

    monkeypatch.setattr(trial, "_train", attempt)
    monkeypatch.setattr(trial.tune, "get_context", lambda: SimpleNamespace(get_trial_name=lambda: "t", get_trial_dir=lambda: "/nonexistent"))
    monkeypatch.setattr(trial.tune, "report", reported.append)
    monkeypatch.setattr(trial, "wait_until_tune_has_every_report", lambda: None)
    spec = TrialSpec(model="m", task=TASKS["single_label"], training=TrainingSpec(batch_size=12), metric="f1_macro", mode="max", train_storage="/tmp/x",
                     resources=ResourcesSpec(gpus_per_worker=0.5, in_process=True), worker_start_timeout_s=1.0)
    trial.run_trial({"method": "lora"}, spec, [None])
    assert attempts == [(0.5, None), (1.0, None), (1.0, 6), (1.0, 3), (1.0, 1)]
    assert "out of memory at 12 rows per pass; retrying at 6" in capsys.readouterr().out
    assert len(reported) == 1 and reported[0]["f1_macro"] == float("-inf")
    assert trial.smaller_micro_batch(failures.Failure("diverged", "x"), TrainingSpec()) is None, "only memory is worth a retry"


def _study(path: str, **resources):
    from sweeps.study import load_study

    return load_study(path, [f"resources.{k}={v}" for k, v in resources.items()])


def test_plan_packs_the_largest_trial_of_the_study(tmp_path, tiny_llama):
    from sweeps.tuning import packing

    spec = base_study(tiny_llama, methods=["lora", "full"], resources={"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": "auto", "gpu_memory_gb": 24, "max_trials_per_gpu": 3})
    study = _study(write_study(tmp_path, spec))
    plan = packing.plan(study)
    assert plan is not None and plan.method == "full", "full fine-tuning is the larger trial"
    assert plan.per_gpu == 3 and plan.share == 0.3333  # a tiny model: capped by max_trials_per_gpu
    assert packing.apply(study, plan).resources.gpus_per_worker == 0.3333
    assert packing.plan(_study(write_study(tmp_path, base_study(tiny_llama)))) is None, "no auto: nothing to plan"
    assert "auto = 0.3333: 3 trial(s) per 24 GiB GPU" in __import__("sweeps.dry_run", fromlist=["describe"]).describe(study)


def test_the_estimate_follows_the_longest_training_row_unless_rows_are_packed(tmp_path, tiny_llama):
    """Batches pad to their longest row: short texts are sized by their own length, capped at
    max_length; instruction rows joined by packing (set or searchable) fill max_length."""
    import dataclasses
    from types import SimpleNamespace

    from datasets import Dataset

    from sweeps.tuning import packing

    study = _study(write_study(tmp_path, base_study(tiny_llama, resources={"gpus_per_worker": "auto", "gpu_memory_gb": 24})))
    most = study.training.max_length
    rows = SimpleNamespace(splits={"train": Dataset.from_dict({"input_ids": [[1] * 5, [1] * 17, [1] * 9]})})
    assert packing.trained_length(study, rows) == 17
    assert packing.trained_length(study, SimpleNamespace(splits={"train": Dataset.from_dict({"input_ids": [[1] * (most + 9)]})})) == most
    packed_rows = dataclasses.replace(study, training=dataclasses.replace(study.training, packing=True))
    packed_rows.space = study.space
    assert packing.trained_length(packed_rows, rows) == most
    short, full = packing.plan(study, seq_len=17), packing.plan(study)
    assert (short.seq_len, full.seq_len) == (17, most) and short.estimate.total_gib < full.estimate.total_gib
    assert short.params()["packing.seq_len"] == 17


def test_auto_without_a_readable_gpu_size_is_one_line_naming_the_field(tmp_path, tiny_llama, monkeypatch):
    from sweeps.tuning import packing

    monkeypatch.setattr(packing, "cluster_gpu_gib", lambda: None)
    study = _study(write_study(tmp_path, base_study(tiny_llama, resources={"gpus_per_worker": "auto"})))
    with pytest.raises(StudyError) as caught:
        packing.plan(study)
    assert caught.value.field == "resources.gpu_memory_gb" and "80 for an H100" in str(caught.value)


def test_a_batch_too_large_for_one_gpu_is_planned_in_smaller_passes(tmp_path, tiny_llama):
    """Llama-3.2-1B's shape (config and tokenizer only: the plan reads no weight), LoRA at
    16 x 2048 tokens on a 24 GiB GPU: a whole batch does not fit, half or less does; the plan
    keeps the batch and sets the rows per pass, which the trials get and the parent run logs."""
    from transformers import AutoConfig

    from sweeps.tuning import packing
    from trainables.model.load import load_tokenizer

    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_check import SHAPES

    family, dims = SHAPES["llama-3.2-1b"]
    model = tmp_path / "llama-1b-shape"
    AutoConfig.for_model(family, pad_token_id=0, dtype="bfloat16", **dims).save_pretrained(model)
    load_tokenizer(tiny_llama).save_pretrained(model)
    resources = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": "auto", "gpu_memory_gb": 24}
    study = _study(write_study(tmp_path, base_study(str(model), resources=resources, training={"epochs": 1, "batch_size": 16, "max_length": 2048})))
    whole = packing.estimate_study(study)[1].total_gib
    assert whole > 24 * 0.9, "the premise: a whole batch does not fit"
    plan = packing.plan(study)
    assert plan is not None and plan.per_gpu >= 1 and plan.micro_batch_size in (8, 4, 2, 1)
    assert plan.estimate.total_gib <= 24 * 0.9 and packing.estimate_study(study, rows=plan.micro_batch_size * 2)[1].total_gib > 24 * 0.9, "the largest pass that fits"
    packed = packing.apply(study, plan)
    assert packed.training.micro_batch_size == plan.micro_batch_size and packed.training.batch_size == 16
    assert plan.params()["packing.micro_batch_size"] == plan.micro_batch_size and f"in passes of {plan.micro_batch_size} rows" in plan.line()
    from sweeps.dry_run import describe

    assert f"in passes of {plan.micro_batch_size} rows" in describe(study)
    roomy = packing.plan(_study(write_study(tmp_path, base_study(str(model), resources=resources, training={"epochs": 1, "batch_size": 4, "max_length": 2048}))))
    assert roomy.micro_batch_size is None and "packing.micro_batch_size" not in roomy.params(), "a batch that fits stays whole"


def test_a_trial_larger_than_the_gpu_is_refused_with_the_knobs_to_turn(tmp_path, tiny_llama):
    from sweeps.tuning import packing

    study = _study(write_study(tmp_path, base_study(tiny_llama, resources={"gpus_per_worker": "auto", "gpu_memory_gb": 0.5})))
    with pytest.raises(StudyError) as caught:
        packing.plan(study)
    assert caught.value.field == "resources.gpus_per_worker" and "gradient_checkpointing" in str(caught.value)


@pytest.mark.parametrize("key,value", [("gpus_per_worker", "most"), ("gpu_memory_gb", 0), ("gpu_memory_headroom", 1.0), ("max_trials_per_gpu", 0)])
def test_bad_packing_settings_name_the_field(tmp_path, tiny_llama, key, value):
    resources = {"gpus_per_worker": "auto", key: value}
    with pytest.raises(StudyError) as caught:
        _study(write_study(tmp_path, base_study(tiny_llama, resources=resources)))
    assert caught.value.field == f"resources.{key}"


@pytest.fixture(scope="module")
def one_fake_gpu():
    """A local Ray cluster of two CPUs and one fake GPU, for this module's packed trials."""
    import ray

    ray.shutdown()  # the run's shared cluster has no GPU
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=True, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.own_ray
@pytest.mark.parametrize("in_process", [False, True], ids=["train_worker", "in_process"])
def test_packed_trials_share_one_fake_gpu(one_fake_gpu, workdir, tiny_llama, in_process):
    """One fake GPU and two CPUs: with auto packing (2 per GPU) both trials run at once on
    GPU 0, each asking Ray for half of it (in Train workers or in their Tune actors); the
    parent run records the decision."""
    import mlflow

    from sweeps.run import main

    study = base_study(
        tiny_llama, name="packed", methods=["lora", "ia3"],
        resources={"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": "auto", "gpu_memory_gb": 16, "max_trials_per_gpu": 2,
                   "backend": "gloo", "start_timeout_s": 60, "in_process": in_process},
        search={"algorithm": "grid", "grid_repeats": 1, "metric": "f1_macro", "mode": "max"},
        training={"epochs": 2, "batch_size": 8, "max_length": 24, "evals_per_epoch": 2},
    )
    assert main([write_study(workdir, study)]) == 0
    client = mlflow.tracking.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("packed").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.data.params["packing.trials_per_gpu"] == "2" and parent.data.params["plan.max_concurrent_trials"] == "2"
    assert int(parent.data.params["packing.seq_len"]) < 24, "sized by the generated texts' longest row, not max_length"
    assert len(kids) == 2 and all(r.data.tags["status"] == "completed" for r in kids)
    assert [r.data.tags["ray.gpu_ids"] for r in kids] == ["0", "0"], "both trials on the one GPU"
    assert all(r.data.metrics["gpus_per_worker"] == 0.5 and r.data.metrics["in_process"] == int(in_process) for r in kids)
    (a, b) = sorted(kids, key=lambda r: r.info.start_time)
    assert b.info.start_time < a.info.end_time, "the two trials ran at the same time"
