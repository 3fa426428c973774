"""The Ray Train worker loop: fine-tune, evaluate at each eval point, report to Tune.

Runs inside each Ray Train worker (``train_loop_per_worker``); with several workers the
model is wrapped in DDP by ``ray.train.torch.prepare_model``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import tempfile
import time
from typing import Any, Optional

import ray
import ray.train
import ray.train.torch
import torch
from torch.utils.data import DataLoader
from transformers import get_scheduler, set_seed

from trainables import model as models
from trainables.failures import TrialDiverged, is_out_of_memory, out_of_memory
from trainables.precision import autocast, autocast_dtype
from trainables.tasks import TASKS, Task


# In each checkpoint beside the adapter: optimizer, LR schedule, counters, RNG states.
TRAINING_STATE = "training_state.pt"


def schedule(train_rows: int, training: dict[str, Any], workers: int) -> dict[str, int]:
    """Optimizer steps in total, steps between evals, and eval points (= ASHA's max_t)."""
    batches_per_epoch = math.ceil(train_rows / (training["batch_size"] * workers))
    steps_per_epoch = max(1, batches_per_epoch // training["grad_accum"])
    total = training["max_steps"] or max(1, math.ceil(training["epochs"] * steps_per_epoch))
    # ceil, so an epoch gets evals_per_epoch points, not an extra stub eval one step before the end
    every = training["eval_every_steps"] or max(1, math.ceil(steps_per_epoch / training["evals_per_epoch"]))
    every = min(every, total)
    return {"total_steps": total, "eval_every": every, "eval_points": math.ceil(total / every), "steps_per_epoch": steps_per_epoch}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@dataclasses.dataclass
class Evaluator:
    """What rank 0 needs at each eval point: the eval loaders, the prepared data (what names
    the examples) and the task kind's module, which scores a model and writes its eval files."""

    loaders: dict[str, DataLoader]
    device: torch.device
    task: Task
    data: Any  # PreparedData
    training: dict[str, Any]
    # Leading result keys: Ray Tune's trial table shows the first four (per-trial progress).
    lead: tuple[str, ...] = ("progress",)
    # Scores that end the trial as diverged when NaN/infinite (the search metric, eval loss).
    watched: tuple[str, ...] = ("eval_loss",)
    # The model before training (fresh head, adapters at their identity init; for instruction
    # tuning the pretrained LM itself, zero-shot): its metrics (``before_*``) and validation
    # outputs, kept so every checkpoint can compare against it.
    base: Optional[dict[str, Any]] = None

    def run(self, net: torch.nn.Module, split: str) -> tuple[dict[str, float], Any]:
        # In full precision, whatever the training precision: the scores and predictions files
        # are then exactly what the exported model gives when a user loads it.
        return self.task.kind_module.evaluate(net, self.loaders[split], self.data, split, self.device, self.task, self.training)

    def score_base(self, net: torch.nn.Module) -> None:
        metrics, payload = self.run(net, "validation")
        self.base = {"metrics": {f"before_{k}": v for k, v in metrics.items()}, "payload": payload}


def worker_nodes(world: int) -> dict[str, str]:
    """Which Ray nodes this trial's workers run on, by rank (recorded on the MLflow run).
    Node ids tell nodes apart even where they share an IP (several raylets on one host)."""
    here = (ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address())
    everyone = [here]
    if world > 1:
        everyone = [None] * world
        torch.distributed.all_gather_object(everyone, here)
    return {"worker_node_ids": ",".join(n for n, _ in everyone), "worker_node_ips": ",".join(ip for _, ip in everyone)}


def quiet_worker() -> None:
    """Keep the sweep's output readable: Tune's trial table, not every worker's weight-loading
    bars, load reports (a fresh head is 'missing' by design) and full result dumps."""
    import logging

    from trainables.inference import quiet

    quiet()
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    # Train V2 logs every report (all metrics) to a logger named by its file path.
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    # Ray logs a failed trial's whole traceback from each worker; it is in the trial's
    # error.txt, and the console gets one line per failed trial (sweeps.run).
    from ray.train.v2._internal import util as train_util

    logging.getLogger(train_util.__name__).addFilter(lambda record: not record.getMessage().startswith("Error in training function"))


def train_loader(rows: Any, training: dict[str, Any], collate: Any, generator: torch.Generator, world: int) -> DataLoader:
    """Shuffled batches; with ``group_by_length`` (one worker) batches of similar length, so
    short texts are not padded to the longest of a random batch. Both orders come from
    ``generator``, whose state per epoch is checkpointed: a resumed trial sees the same batches."""
    group = training.get("group_by_length", True) and world == 1 and "input_ids" in getattr(rows, "column_names", ())
    if group:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        lengths = [len(ids) for ids in rows["input_ids"]]
        sampler = LengthGroupedSampler(training["batch_size"], lengths=lengths, generator=generator)
        # generator here too: a loader without one draws its base seed from the global RNG at
        # each epoch start, which shifts the dropout masks of a trial resumed mid-epoch
        return DataLoader(rows, batch_size=training["batch_size"], sampler=sampler, collate_fn=collate, generator=generator)
    loader = DataLoader(rows, batch_size=training["batch_size"], shuffle=True, collate_fn=collate, generator=generator)
    return ray.train.torch.prepare_data_loader(loader, move_to_device=False) if world > 1 else loader


def optimizer_for(model: torch.nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW; a freshly initialised task head may learn at its own rate (``head_learning_rate``):
    it starts from random weights while the adapter or the pretrained weights start from
    something good, so the two rarely want the same step size (full fine-tuning at 1e-4 with
    its head at 1e-3, say)."""
    head, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (head if any(part in models.TRAINED_HEAD_MODULES for part in name.split(".")) else rest).append(p)
    head_lr = hp.get("head_learning_rate") or hp["learning_rate"]
    groups = [{"params": rest, "lr": hp["learning_rate"]}, {"params": head, "lr": head_lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=hp["weight_decay"])


def train_worker(cfg: dict[str, Any]) -> None:
    """Fine-tune one trial; running out of memory is raised as ``TrialOutOfMemory``, whose
    message names the knobs to lower (the trial is not retried: see trainables.failures)."""
    try:
        _train(cfg)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise out_of_memory(cfg["study"]["training"], cfg["hparams"]["method"]) from exc
        raise


def check_finite(step: int, values: dict[str, Any]) -> None:
    """Stop a diverged trial at once instead of training on NaN weights to the end."""
    for name, value in values.items():
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise TrialDiverged(step, f"{name} is {value}")


def _train(cfg: dict[str, Any]) -> None:
    study, hp = cfg["study"], cfg["hparams"]
    training, task = study["training"], TASKS[study["task"]]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    quiet_worker()
    # Ray starts workers with OMP_NUM_THREADS=1: use the CPUs this worker was given.
    torch.set_num_threads(max(1, int(study["resources"]["cpus_per_worker"])))
    seed = int(hp.get("seed", training["seed"]))  # a final-stage repeat trains under its own seed
    set_seed(seed)

    data = ray.get(cfg["data"][0])
    device = ray.train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")
    tokenizer = data.tokenizer
    kind = task.kind_module
    net = models.build(study["model"], task, data.label_names, hp["method"], hp, device, tokenizer.pad_token_id, training.get("gradient_checkpointing", False))
    trainable_params, total_params = models.count_params(net)
    model = ray.train.torch.prepare_model(net, move_to_device=False) if world > 1 else net

    collate = kind.collator(tokenizer, task)
    generator = torch.Generator().manual_seed(seed)
    train_rows = kind.train_split(data, hp, training)  # instruction tuning may pack examples here
    loader = train_loader(train_rows, training, collate, generator, world)
    amp = autocast_dtype(device, training.get("precision", "auto"))
    eval_bs = training["eval_batch_size"] or 2 * training["batch_size"]
    # Own generators: a loader without one draws its base seed from the global RNG, so each
    # eval would shift the training dropout masks and results would depend on eval cadence.
    eval_loaders = {
        split: DataLoader(data.splits[split], batch_size=eval_bs, collate_fn=collate, generator=torch.Generator())
        for split in ("validation", "test")
        if split in data.splits and data.labelled(split)
    }

    metric = study["search"]["metric"]
    evaluator = Evaluator(eval_loaders, device, task, data, training,
                          lead=("progress", metric, "step", "eval_loss"), watched=(metric, "eval_loss"))
    nodes = worker_nodes(world)
    if cfg.get("driver_node_id"):  # where the trial's driver (and its Train controller) runs
        nodes["driver_node_id"] = cfg["driver_node_id"]
    started = time.perf_counter()
    gpus = float(study["resources"]["gpus_per_worker"]) * world
    plan = schedule(len(train_rows), training, world)
    total, every = plan["total_steps"], plan["eval_every"]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer_for(model, hp)
    lr_schedule = get_scheduler(hp["lr_scheduler"], optimizer, num_warmup_steps=int(hp["warmup_ratio"] * total), num_training_steps=total)

    # Where training stands; a restarted trial (worker lost, trial retried, study resumed)
    # picks it up from its latest checkpoint instead of starting over.
    progress = {"step": 0, "micro": 0, "seen": 0, "train_time": 0.0, "epoch": 0, "micro_in_epoch": 0}
    epoch_rng = generator.get_state()  # the shuffle of the current epoch comes from this state
    resumed_from = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = restore(folder, net, optimizer, lr_schedule)
        progress, epoch_rng, resumed_from = state["progress"], state["epoch_rng"], state["progress"]["step"]
        evaluator.base = state.get("base")
        torch.set_rng_state(state["rng"])
        if resumed_from >= total:
            # Restarted after its last report (worker lost at the very end, or a resumed study
            # whose driver died before Tune saw the trial end): report the stored result again
            # instead of ending with no result.
            if rank == 0:
                ray.train.report({**state["metrics"], "resumed_from_step": resumed_from}, checkpoint=checkpoint)
            else:
                ray.train.report({"step": resumed_from})
            return

    elif rank == 0 and training.get("eval_base", True):
        evaluator.score_base(net)
    step, micro, seen, train_time, epoch = (progress[k] for k in ("step", "micro", "seen", "train_time", "epoch"))
    tokens = progress.get("tokens", 0)
    skip = progress["micro_in_epoch"]  # batches of the current epoch already trained on
    loss_sum, loss_n = 0.0, 0
    model.train()
    while step < total:
        if world > 1 and hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        generator.set_state(epoch_rng)
        micro_in_epoch = 0
        for batch in loader:
            if micro_in_epoch < skip:
                micro_in_epoch += 1
                continue
            t0 = time.perf_counter()
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device, amp):
                loss = model(**batch).loss / training["grad_accum"]
            loss.backward()
            micro += 1
            micro_in_epoch += 1
            seen += len(batch["input_ids"])
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            loss_value = float(loss.detach()) * training["grad_accum"]
            check_finite(step + 1, {"train loss": loss_value})
            loss_sum += loss_value
            loss_n += 1
            if micro % training["grad_accum"] == 0:
                # identical on every DDP rank (gradients are all-reduced), so all stop together
                norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
                check_finite(step + 1, {"gradient norm": float(norm)})
                optimizer.step()
                lr_schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
            train_time += time.perf_counter() - t0
            if micro % training["grad_accum"] == 0 and (step % every == 0 or step == total):
                metrics = {
                    "step": step,
                    "epoch": round(step / plan["steps_per_epoch"], 3),
                    "progress": step / total,
                    "train_loss": loss_sum / max(1, loss_n),
                    "learning_rate": lr_schedule.get_last_lr()[0],
                    "train_time_s": train_time,
                    "examples_per_s": seen * world / max(train_time, 1e-9),
                    "tokens_per_s": tokens * world / max(train_time, 1e-9),
                    # this attempt's time since the worker started (model load + training + evals)
                    "wall_time_s": time.perf_counter() - started,
                    "gpu_hours": train_time * gpus / 3600,
                    "peak_memory_mb": peak_memory_mb(device),
                    "trainable_params": trainable_params,
                    "total_params": total_params,
                    "world_size": world,
                    "resumed_from_step": resumed_from,
                    **nodes,
                }
                loss_sum, loss_n = 0.0, 0
                state = {
                    "progress": {"step": step, "micro": micro, "seen": seen, "tokens": tokens, "train_time": train_time, "epoch": epoch, "micro_in_epoch": micro_in_epoch},
                    "epoch_rng": epoch_rng,
                    "rng": torch.get_rng_state(),
                    "optimizer": optimizer.state_dict(),
                    "lr_schedule": lr_schedule.state_dict(),
                    "base": evaluator.base,
                }
                _report(rank, net, hp["method"], metrics, state, evaluator, final=step == total)
            if step >= total:
                break
        epoch += 1
        skip = 0
        epoch_rng = generator.get_state()


def restore(folder: str, net: torch.nn.Module, optimizer: torch.optim.Optimizer, lr_schedule: Any) -> dict[str, Any]:
    """Load a checkpoint written by ``_report``: adapter (and head) weights into the peft model,
    optimizer and LR schedule state; returns the progress counters and RNG states."""
    models.load_trained(net, folder)
    # weights_only: a checkpoint folder (shared storage, a bucket) must not be able to run code
    state = from_tensors(torch.load(os.path.join(folder, TRAINING_STATE), weights_only=True))
    with open(os.path.join(folder, "trial_state.json")) as f:
        state["metrics"] = json.load(f)  # what was reported with this checkpoint
    optimizer.load_state_dict(state["optimizer"])
    lr_schedule.load_state_dict(state["lr_schedule"])
    return state


_NUMPY = "__numpy__"  # marks an array stored as a tensor in training_state.pt


def to_tensors(value: Any) -> Any:
    """``value`` with numpy arrays as tensors and numpy scalars as Python numbers, so that
    ``torch.load(weights_only=True)`` (no pickled code) can read it back (the before-training
    payload holds the model's logits as numpy arrays)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return {_NUMPY: torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_tensors(v) for v in value)
    return value


def from_tensors(value: Any) -> Any:
    """The inverse of ``to_tensors``."""
    if isinstance(value, dict):
        if set(value) == {_NUMPY}:
            return value[_NUMPY].numpy()
        return {k: from_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(from_tensors(v) for v in value)
    return value


def _report(rank: int, net: torch.nn.Module, method: str, metrics: dict[str, Any], state: dict[str, Any], ev: Evaluator, final: bool) -> None:
    """Rank 0 evaluates and checkpoints: what training changed (the adapter, never the base
    weights; the head or the whole model for the baselines), its validation outputs (``eval/``)
    and what resuming needs (optimizer, LR schedule, step counters, RNG); every rank reports."""
    if rank != 0:
        ray.train.report({"step": metrics["step"]})
        return
    scored, payload = ev.run(net, "validation")
    check_finite(metrics["step"], {k: scored[k] for k in ev.watched if k in scored})
    metrics.update(scored)
    if ev.base is not None:
        metrics.update(ev.base["metrics"])
    if final and "test" in ev.loaders:
        metrics.update({f"test_{k}": v for k, v in ev.run(net, "test")[0].items()})
    metrics = {**{k: metrics[k] for k in ev.lead if k in metrics}, **metrics}
    with tempfile.TemporaryDirectory() as tmp:
        models.save_trained(net, tmp, method)
        ev.task.kind_module.write_files(tmp, payload, ev.base["payload"] if ev.base is not None else None, ev.data, ev.task)
        with open(os.path.join(tmp, "trial_state.json"), "w") as f:
            json.dump(metrics, f)
        torch.save(to_tensors(state), os.path.join(tmp, TRAINING_STATE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
