"""The Ray Train worker loop: fine-tune, evaluate at each eval point, report to Tune.

Runs inside each Ray Train worker (``train_loop_per_worker``); with several workers the
model is wrapped in DDP by ``ray.train.torch.prepare_model``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import tempfile
import time
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, get_scheduler, set_seed

from trainables import model as models
from trainables.metrics import classification_metrics
from trainables.tasks import TASKS


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


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, multi_label: bool) -> dict[str, float]:
    model.eval()
    logits, labels, loss_sum, n = [], [], 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        loss_sum += float(out.loss) * len(batch["labels"])
        n += len(batch["labels"])
        logits.append(out.logits.float().cpu().numpy())
        labels.append(batch["labels"].cpu().numpy())
    model.train()
    metrics = classification_metrics(np.concatenate(logits), np.concatenate(labels), multi_label)
    metrics["eval_loss"] = loss_sum / max(n, 1)
    return metrics


def train_worker(cfg: dict[str, Any]) -> None:
    study, hp = cfg["study"], cfg["hparams"]
    training, task = study["training"], TASKS[study["task"]]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # Ray starts workers with OMP_NUM_THREADS=1: use the CPUs this worker was given.
    torch.set_num_threads(max(1, int(study["resources"]["cpus_per_worker"])))
    set_seed(training["seed"])

    data = ray.get(cfg["data"][0])
    device = ray.train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")
    tokenizer = data.tokenizer
    net = models.build(study["model"], task, data.label_names, hp["method"], hp, device, tokenizer.pad_token_id)
    trainable_params, total_params = models.count_params(net)
    model = ray.train.torch.prepare_model(net, move_to_device=False) if world > 1 else net

    collate = DataCollatorWithPadding(tokenizer)
    generator = torch.Generator().manual_seed(training["seed"])
    train_loader = DataLoader(data.splits["train"], batch_size=training["batch_size"], shuffle=True, collate_fn=collate, generator=generator)
    if world > 1:
        train_loader = ray.train.torch.prepare_data_loader(train_loader, move_to_device=False)
    eval_bs = training["eval_batch_size"] or 2 * training["batch_size"]
    # Own generators: a loader without one draws its base seed from the global RNG, so each
    # eval would shift the training dropout masks and results would depend on eval cadence.
    eval_loaders = {
        split: DataLoader(data.splits[split], batch_size=eval_bs, collate_fn=collate, generator=torch.Generator())
        for split in ("validation", "test")
        if split in data.splits and "labels" in data.splits[split].column_names
    }

    plan = schedule(len(data.splits["train"]), training, world)
    total, every = plan["total_steps"], plan["eval_every"]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp["learning_rate"], weight_decay=hp["weight_decay"])
    lr_schedule = get_scheduler(hp["lr_scheduler"], optimizer, num_warmup_steps=int(hp["warmup_ratio"] * total), num_training_steps=total)

    step, micro, seen, train_time, loss_sum, loss_n, epoch = 0, 0, 0, 0.0, 0.0, 0, 0
    model.train()
    while step < total:
        if world > 1 and hasattr(train_loader, "sampler") and hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        for batch in train_loader:
            t0 = time.perf_counter()
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch).loss / training["grad_accum"]
            loss.backward()
            micro += 1
            seen += len(batch["labels"])
            loss_sum += float(loss.detach()) * training["grad_accum"]
            loss_n += 1
            if micro % training["grad_accum"] == 0:
                torch.nn.utils.clip_grad_norm_(params, 1.0)
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
                    "peak_memory_mb": peak_memory_mb(device),
                    "trainable_params": trainable_params,
                    "total_params": total_params,
                    "world_size": world,
                }
                loss_sum, loss_n = 0.0, 0
                _report(rank, net, metrics, eval_loaders, device, task.multi_label, final=step == total)
            if step >= total:
                break
        epoch += 1


def _report(rank: int, net: torch.nn.Module, metrics: dict[str, Any], loaders: dict[str, DataLoader], device: torch.device, multi_label: bool, final: bool) -> None:
    """Rank 0 evaluates and saves the adapter (never the base weights); every rank reports."""
    if rank != 0:
        ray.train.report({"step": metrics["step"]})
        return
    metrics.update(evaluate(net, loaders["validation"], device, multi_label))
    if final and "test" in loaders:
        metrics.update({f"test_{k}": v for k, v in evaluate(net, loaders["test"], device, multi_label).items()})
    with tempfile.TemporaryDirectory() as tmp:
        net.save_pretrained(tmp)  # peft: adapter + trained head (modules_to_save) only
        with open(os.path.join(tmp, "trial_state.json"), "w") as f:
            json.dump(metrics, f)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
