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
from typing import Any, Callable, Optional

import ray
import ray.train
import ray.train.torch
import torch
from torch.utils.data import DataLoader
from transformers import get_scheduler, set_seed

from core.schedule import schedule
from core.specs import TrainingSpec
from trainables.evaluation import base_scores
from trainables.model import load as models
from trainables.training.allocator import uses_jemalloc
from trainables.training.failures import TrialDiverged, is_out_of_memory, out_of_memory
from trainables.training.kernels import avoid_cudnn_attention
from trainables.kinds import Task
from trainables.evaluation.merged_eval import merged_adapters
from trainables.model.methods import METHODS
from trainables.training.precision import autocast, autocast_dtype, base_dtype
from trainables.spec import TrialSpec

# In each checkpoint beside the adapter: optimizer, LR schedule, counters, RNG states.
TRAINING_STATE = "training_state.pt"


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
    training: TrainingSpec
    # Leading result keys: Ray Tune's trial table shows the first four (per-trial progress).
    lead: tuple[str, ...] = ("progress",)
    # Scores that end the trial as diverged when NaN/infinite (the search metric, eval loss).
    watched: tuple[str, ...] = ("eval_loss",)
    # The model before training (fresh head, adapters at their identity init; for instruction
    # tuning the pretrained LM itself, zero-shot): its metrics (``before_*``) and validation
    # outputs, kept so every checkpoint can compare against it.
    base: Optional[dict[str, Any]] = None
    seconds: float = 0.0  # spent evaluating in this attempt (``eval_time_s``)
    base_shared: bool = False  # ``base`` came from another trial's identical model (``before_shared``)

    def run(self, net: torch.nn.Module, split: str) -> tuple[dict[str, float], Any]:
        # In full precision, whatever the training precision: the scores and predictions files
        # are then exactly what the exported model gives when a user loads it. The adapter is
        # merged meanwhile where that is exact (fp32 on the CPU), which is what
        # ``sweeps.export --merge`` gives and is faster to run.
        started = time.perf_counter()
        with merged_adapters(net):
            out = self.task.kind.evaluate(net, self.loaders[split], self.data, split, self.device, self.task, self.training)
        self.seconds += time.perf_counter() - started
        return out

    def score_base(self, net: torch.nn.Module, cache: Any = None, cache_key: Optional[str] = None) -> None:
        """``base``: computed, or from another trial of the stage with the same model before
        training (``trainables.evaluation.base_scores``). Either way training sees the same RNG state."""
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None

        def compute() -> dict[str, Any]:
            metrics, payload = self.run(net, "validation")
            return {"metrics": {f"before_{k}": v for k, v in metrics.items()}, "payload": payload}

        self.base, self.base_shared = base_scores.cached_or_computed(cache, cache_key, compute)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


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


def train_loader(rows: Any, training: TrainingSpec, collate: Any, generator: torch.Generator, world: int) -> DataLoader:
    """Shuffled batches; with ``group_by_length`` (one worker) batches of similar length, so
    short texts are not padded to the longest of a random batch. Both orders come from
    ``generator``, whose state per epoch is checkpointed: a resumed trial sees the same batches."""
    group = training.group_by_length and world == 1 and "input_ids" in getattr(rows, "column_names", ())
    if group:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        lengths = [len(ids) for ids in rows["input_ids"]]
        sampler = LengthGroupedSampler(training.batch_size, lengths=lengths, generator=generator)
        # generator here too: a loader without one draws its base seed from the global RNG at
        # each epoch start, which shifts the dropout masks of a trial resumed mid-epoch
        return DataLoader(rows, batch_size=training.batch_size, sampler=sampler, collate_fn=collate, generator=generator)
    loader = DataLoader(rows, batch_size=training.batch_size, shuffle=True, collate_fn=collate, generator=generator)
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
    groups = [g for g in ({"params": rest, "lr": hp["learning_rate"]}, {"params": head, "lr": head_lr}) if g["params"]]
    # One fused kernel for all parameters instead of a loop of per-tensor ops, as transformers'
    # Trainer does by default: the same AdamW update, 5x less optimizer time on CPU (full
    # fine-tuning of MiniLM 133 -> 27 ms a step, bench/RESULTS.md). Where torch has no fused
    # kernel for the parameters' device, the default implementation.
    fused = all(p.device.type in FUSED_ADAMW_DEVICES for g in groups for p in g["params"]) or None
    return torch.optim.AdamW(groups, weight_decay=hp["weight_decay"], fused=fused)


FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def training_forward(model: torch.nn.Module, training: TrainingSpec, fixed_length: bool = False) -> Any:
    """What the training steps call: the model, or with ``training.compile`` the model under
    ``torch.compile`` (same parameters, so the optimizer, checkpoints and the eager evaluation
    all see the weights it trains). Batches padded to their longest row change length nearly
    every step, so the graph is compiled once with dynamic shapes rather than first for the
    first batch's length and again, dynamic, at the second (torch's default: one compile
    instead of two, 32 s instead of 47 s for a tiny Llama on CPU); rows that all fill
    ``max_length`` (``fixed_length``: instruction packing) keep static shapes."""
    if not training.compile:
        return model
    return torch.compile(model, dynamic=None if fixed_length else True)


def split_batch(batch: dict[str, torch.Tensor], rows: Optional[int], token_level: bool) -> list[tuple[dict[str, torch.Tensor], float]]:
    """One loaded batch as passes of at most ``rows`` rows (``training.micro_batch_size``; None:
    one pass), each with its share of the batch's mean loss: its rows, or for a token-level loss
    (causal LM) its target tokens, so the summed gradients are the whole batch's. Passes with no
    target token are left out (their mean loss is undefined; they add nothing)."""
    size = len(batch["input_ids"])
    if not rows or rows >= size:
        return [(batch, 1.0)]
    parts = [{k: v[i:i + rows] for k, v in batch.items()} for i in range(0, size, rows)]
    if token_level and "labels" in batch:
        counts = [float((part["labels"][:, 1:] != -100).sum()) for part in parts]
    else:
        counts = [float(len(part["input_ids"])) for part in parts]
    total = sum(counts)
    return [(part, n / total) for part, n in zip(parts, counts) if n > 0]


@dataclasses.dataclass(frozen=True)
class Session:
    """Where the loop runs, reports and resumes from: a Ray Train worker (Tune hears the reports
    through the trial's TuneReportCallback), or the trial's own Tune actor (``resources.in_process``),
    where the loop talks to Tune directly."""

    report: Callable[..., None]
    get_checkpoint: Callable[[], Any]
    in_process: bool

    def rank_and_world(self) -> tuple[int, int]:
        if self.in_process:  # Ray refuses ray.train.get_context() in a Tune function
            return 0, 1
        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size()

    def device(self) -> torch.device:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # Ray sets CUDA_VISIBLE_DEVICES to the GPU it gave the Tune actor: device 0 is it
        return torch.device("cuda", 0) if self.in_process else ray.train.torch.get_device()


def session_for(in_process: bool, spec: Optional[TrialSpec] = None) -> Session:
    """A Train worker's session is Ray Train's; in process, the trial keeps its checkpoints
    itself (``KeptCheckpoints``, ranked by the study's metric, ``spec.metric``/``mode``) and
    tells Tune only where they are: Tune would snapshot the experiment after each one."""
    if not in_process:
        return Session(ray.train.report, ray.train.get_checkpoint, False)
    from ray import tune

    from trainables.training.kept_checkpoints import KeptCheckpoints

    metric, mode = spec.metric, spec.mode

    def report(metrics: dict[str, Any], checkpoint: Optional[ray.train.Checkpoint] = None) -> None:
        if checkpoint is not None:
            kept = KeptCheckpoints.of_this_trial(metric, mode)
            # a restored checkpoint reported again (``restore``) is already kept
            path = checkpoint.path if kept.holds(checkpoint.path) else kept.persist(checkpoint.path)
            metrics = {**metrics, "checkpoint_path": path}
        tune.report(metrics)

    def get_checkpoint() -> Optional[ray.train.Checkpoint]:
        kept = KeptCheckpoints.of_this_trial(metric, mode)
        path = kept.latest()
        return None if path is None else ray.train.Checkpoint(path, filesystem=kept.fs)

    return Session(report, get_checkpoint, True)


def train_worker(cfg: dict[str, Any]) -> None:
    """Fine-tune one trial (``cfg``: ``spec`` (TrialSpec), ``hparams``, ``data`` ([ObjectRef], with
    the stage's BaseScores actor second where there is one),
    ``driver_node_id``). Running out of memory is raised as ``TrialOutOfMemory``, whose message
    names the knobs to lower (the trial is not retried: see trainables.training.failures)."""
    spec: TrialSpec = cfg["spec"]
    try:
        shared = cfg["data"]
        recipe = TrialRecipe(spec, cfg["hparams"], shared[0], cfg.get("driver_node_id"),
                             started_at={k: cfg[k] for k in ("driver_started_at", "worker_entered_at") if k in cfg},
                             session=session_for(bool(cfg.get("in_process")), spec), base_scores=shared[1] if len(shared) > 1 else None)
        if not recipe.restore():
            recipe.train()
    except Exception as exc:
        if is_out_of_memory(exc):
            raise out_of_memory(spec.training, cfg["hparams"]["method"]) from exc
        raise


# Where a trial's time to its first optimizer step goes (bench/trial_startup.py reads these).
STARTUP_CLOCKS = {
    "startup_s": "driver_started_at",  # the trial's Tune function started: Train controller, workers, imports, model, data
    "startup_worker_s": "worker_entered_at",  # the worker's function started: imports, model, data, first step
    "startup_recipe_s": "recipe",  # the recipe started (imports done): data, model build, loaders, first step
}


def startup_times(started_at: dict[str, float], now: float) -> dict[str, float]:
    """Seconds from each known start to ``now`` (the end of the first optimizer step)."""
    return {name: now - started_at[key] for name, key in STARTUP_CLOCKS.items() if key in started_at}


def check_finite(step: int, values: dict[str, Any]) -> None:
    """Stop a diverged trial at once instead of training on NaN weights to the end."""
    for name, value in values.items():
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise TrialDiverged(step, f"{name} is {value}")


@dataclasses.dataclass
class Progress:
    """Where training stands; checkpointed with every eval point, so a restarted trial (worker
    lost, trial retried, study resumed) continues from it instead of starting over."""

    step: int = 0  # optimizer steps
    micro: int = 0  # micro-batches (grad_accum per step)
    seen: int = 0  # examples trained on (this worker)
    tokens: int = 0  # non-pad tokens trained on (this worker)
    train_time: float = 0.0  # seconds in training steps (no evals, no loading)
    train_cpu_time: float = 0.0  # CPU seconds this process used meanwhile (all its threads)
    epoch: int = 0
    micro_in_epoch: int = 0  # batches of the current epoch already trained on


class TrialRecipe:
    """One trial's training, in the spirit of torchtune's recipes: ``__init__`` sets up (data,
    model, loaders, optimizer, schedule), ``restore`` continues from the latest checkpoint,
    ``train`` runs the epochs of ``train_step``s and, at each eval point, ``evaluate_and_report``."""

    def __init__(self, spec: TrialSpec, hp: dict[str, Any], data_ref: Any, driver_node_id: Optional[str] = None,
                 started_at: Optional[dict[str, float]] = None, session: Optional[Session] = None, base_scores: Any = None) -> None:
        self.spec, self.hp, self.training = spec, hp, spec.training
        self.base_scores = base_scores  # the stage's before-training scores (trainables.evaluation.base_scores.BaseScores), if any
        self.session = session or session_for(False)
        # Wall-clock times (time.time()) the trial's driver and this worker started: the first
        # report says how long each took to reach the first optimizer step (startup_*).
        self.started_at = {"recipe": time.time(), **(started_at or {})}
        self.startup: dict[str, float] = {}
        self.rank, self.world = self.session.rank_and_world()
        quiet_worker()
        # Ray starts workers with OMP_NUM_THREADS=1: use the CPUs this worker was given.
        torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))
        self.seed = int(hp.get("seed", self.training.seed))  # a final-stage repeat trains under its own seed
        set_seed(self.seed)
        self.started = time.perf_counter()

        data = ray.get(data_ref)
        task, kind = spec.task, spec.task.kind
        self.device = self.session.device()
        avoid_cudnn_attention(self.device)
        self.net = models.build_model(spec.model, task, data.label_names, hp["method"], hp, self.device, data.tokenizer.pad_token_id,
                                      self.training.gradient_checkpointing, base_dtype(self.device, self.training, hp["method"]), self.training.pooling)
        self.param_counts = models.count_params(self.net)
        self.base_bits = models.frozen_weight_bits(self.net)
        self.jemalloc = int(uses_jemalloc())
        self.model = ray.train.torch.prepare_model(self.net, move_to_device=False) if self.world > 1 else self.net
        self.forward = training_forward(self.model, self.training, fixed_length=bool(hp.get("packing", self.training.packing)))
        self.token_level = task.peft_task_type == "CAUSAL_LM"  # loss: mean over target tokens, not rows

        collate = kind.collator(data.tokenizer, task)
        self.generator = torch.Generator().manual_seed(self.seed)
        train_rows = kind.train_split(data, hp, self.training)  # instruction tuning may pack examples here
        self.loader = train_loader(train_rows, self.training, collate, self.generator, self.world)
        self.amp = autocast_dtype(self.device, self.training.precision)
        # twice the rows of a training pass (no gradients): an out of memory that halves those halves these
        eval_bs = self.training.eval_batch_size or 2 * self.training.rows_per_pass
        # Own generators: a loader without one draws its base seed from the global RNG, so each
        # eval would shift the training dropout masks and results would depend on eval cadence.
        eval_loaders = {
            split: DataLoader(data.splits[split], batch_size=eval_bs, collate_fn=collate, generator=torch.Generator())
            for split in ("validation", "test")
            if split in data.splits and data.labelled(split)
        }
        self.evaluator = Evaluator(eval_loaders, self.device, task, data, self.training,
                                   lead=("progress", spec.metric, "step", "eval_loss"), watched=(spec.metric, "eval_loss"))
        self.nodes = worker_nodes(self.world)
        if driver_node_id:  # where the trial's driver (and its Train controller) runs
            self.nodes["driver_node_id"] = driver_node_id
        if spec.resources.gpus_per_worker:  # which GPU(s) Ray gave rank 0: packed trials share one
            self.nodes["worker_gpu_ids"] = ",".join(str(g) for g in ray.get_gpu_ids())
        # The worker's plan, on the rows it really trains on (packed or not), is the one that counts.
        self.plan = schedule(len(train_rows), self.training, self.world)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = optimizer_for(self.model, hp)
        self.lr_schedule = get_scheduler(hp["lr_scheduler"], self.optimizer, num_warmup_steps=int(hp["warmup_ratio"] * self.plan.total_steps), num_training_steps=self.plan.total_steps)
        self.progress = Progress()
        self.epoch_rng = self.generator.get_state()  # the shuffle of the current epoch comes from this state
        self.resumed_from = 0
        self.loss_sum, self.loss_n = 0.0, 0

    def restore(self) -> bool:
        """Continue from the trial's latest checkpoint, if any; True when that checkpoint is
        the trial's last (restarted after its last report: the worker lost at the very end, or
        a resumed study whose driver died before Tune saw the trial end): its stored result is
        reported again instead of ending with no result."""
        checkpoint = self.session.get_checkpoint()
        if checkpoint is None:
            if self.rank == 0 and self.training.eval_base:
                method = self.hp["method"]
                shareable = self.base_scores is not None and METHODS[method].identity_at_init
                cache_key = base_scores.key(self.net, method, self.seed, self.device) if shareable else None
                self.evaluator.score_base(self.net, self.base_scores, cache_key)
            return False
        with checkpoint.as_directory() as folder:
            state = restore(folder, self.net, self.optimizer, self.lr_schedule)
        self.progress = Progress(**state["progress"])
        self.epoch_rng, self.resumed_from = state["epoch_rng"], self.progress.step
        self.evaluator.base = state.get("base")
        torch.set_rng_state(state["rng"])
        if self.resumed_from < self.plan.total_steps:
            return False
        if self.rank == 0:
            self.session.report({**state["metrics"], "resumed_from_step": self.resumed_from}, checkpoint=checkpoint)
        else:
            self.session.report({"step": self.resumed_from})
        return True

    def train(self) -> None:
        """Epochs of shuffled batches until the planned steps; a resumed epoch skips the
        batches it already trained on (same order: the epoch's shuffle state is checkpointed)."""
        p, total = self.progress, self.plan.total_steps
        skip = p.micro_in_epoch
        self.model.train()
        while p.step < total:
            sampler = getattr(self.loader, "sampler", None)
            if self.world > 1 and hasattr(sampler, "set_epoch"):
                sampler.set_epoch(p.epoch)
            self.generator.set_state(self.epoch_rng)
            p.micro_in_epoch = 0
            for batch in self.loader:
                if p.micro_in_epoch < skip:
                    p.micro_in_epoch += 1
                    continue
                stepped = self.train_step(batch)
                if stepped and (p.step % self.plan.eval_every == 0 or p.step == total):
                    self.evaluate_and_report()
                if p.step >= total:
                    break
            if p.step >= total:
                break
            p.epoch += 1
            skip = 0
            self.epoch_rng = self.generator.get_state()

    def train_step(self, batch: dict[str, torch.Tensor]) -> bool:
        """One loaded batch's forward/backward (in passes of ``training.micro_batch_size`` rows,
        gradients summed); every ``grad_accum``-th batch an optimizer step (True)."""
        p, accum = self.progress, self.training.grad_accum
        t0, c0 = time.perf_counter(), time.process_time()
        batch = {k: v.to(self.device) for k, v in batch.items()}
        loss_value = 0.0
        for part, share in split_batch(batch, self.training.micro_batch_size, self.token_level):
            with autocast(self.device, self.amp):
                loss = self.forward(**part).loss * (share / accum)
            loss.backward()
            loss_value += float(loss.detach()) * accum
        p.micro += 1
        p.micro_in_epoch += 1
        p.seen += len(batch["input_ids"])
        p.tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        check_finite(p.step + 1, {"train loss": loss_value})
        self.loss_sum += loss_value
        self.loss_n += 1
        stepped = p.micro % accum == 0
        if stepped:
            # identical on every DDP rank (gradients are all-reduced), so all stop together
            norm = torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            check_finite(p.step + 1, {"gradient norm": float(norm)})
            self.optimizer.step()
            self.lr_schedule.step()
            self.optimizer.zero_grad(set_to_none=True)
            p.step += 1
            if not self.startup and p.step == self.resumed_from + 1:
                self.startup = startup_times(self.started_at, time.time())
        p.train_time += time.perf_counter() - t0
        p.train_cpu_time += time.process_time() - c0
        return stepped

    def evaluate_and_report(self) -> None:
        """The eval point's training metrics and resume state; rank 0 then scores, checkpoints
        and reports (``_report``), every other rank reports its step."""
        p, world = self.progress, self.world
        trainable_params, total_params = self.param_counts
        metrics = {
            "step": p.step,
            "epoch": round(p.step / self.plan.steps_per_epoch, 3),
            "progress": p.step / self.plan.total_steps,
            "train_loss": self.loss_sum / max(1, self.loss_n),
            "learning_rate": self.lr_schedule.get_last_lr()[0],
            "train_time_s": p.train_time,
            "examples_per_s": p.seen * world / max(p.train_time, 1e-9),
            "tokens_per_s": p.tokens * world / max(p.train_time, 1e-9),
            # CPU cores the worker kept busy while training: below its threads = it waited
            # for a core (other trials, Ray's own processes) or for data on the device
            "train_cpu_cores": p.train_cpu_time / max(p.train_time, 1e-9),
            # this attempt's time since the worker started (model load + training + evals)
            "wall_time_s": time.perf_counter() - self.started,
            "gpu_hours": p.train_time * float(self.spec.resources.gpus_per_worker) * world / 3600,
            "cpu_hours": p.train_time * float(self.spec.resources.cpus_per_worker) * world / 3600,  # cost to target on CPUs
            "gpus_per_worker": float(self.spec.resources.gpus_per_worker),  # packing may set or widen it
            "peak_memory_mb": peak_memory_mb(self.device),
            "base_weight_bits": self.base_bits,  # the frozen weights' dtype as loaded (training.base_dtype)
            "jemalloc": self.jemalloc,  # 1: this process allocates with jemalloc (resources.jemalloc)
            # 1: the before_* scores came from another trial of the stage with the same model before training
            "before_shared": int(self.evaluator.base_shared),
            # rows per forward/backward pass: below batch_size when set, planned or halved after an out of memory
            "micro_batch_size": self.training.rows_per_pass,
            "trainable_params": trainable_params,
            "total_params": total_params,
            "world_size": world,
            "in_process": int(self.session.in_process),  # trained in the trial's Tune actor, not a Train worker
            "resumed_from_step": self.resumed_from,
            **self.startup,
            **self.nodes,
        }
        self.loss_sum, self.loss_n = 0.0, 0
        state = {
            "progress": dataclasses.asdict(p),
            "epoch_rng": self.epoch_rng,
            "rng": torch.get_rng_state(),
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "base": self.evaluator.base,
        }
        _report(self.session, self.rank, self.net, self.hp["method"], metrics, state, self.evaluator, final=p.step == self.plan.total_steps)


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


def _report(session: Session, rank: int, net: torch.nn.Module, method: str, metrics: dict[str, Any], state: dict[str, Any], ev: Evaluator, final: bool) -> None:
    """Rank 0 evaluates and checkpoints: what training changed (the adapter, never the base
    weights; the head or the whole model for the baselines), its validation outputs (``eval/``)
    and what resuming needs (optimizer, LR schedule, step counters, RNG); every rank reports."""
    if rank != 0:
        session.report({"step": metrics["step"]})
        return
    scored, payload = ev.run(net, "validation")
    check_finite(metrics["step"], {k: scored[k] for k in ev.watched if k in scored})
    metrics.update(scored)
    if ev.base is not None:
        metrics.update(ev.base["metrics"])
    if final and "test" in ev.loaders:
        metrics.update({f"test_{k}": v for k, v in ev.run(net, "test")[0].items()})
    metrics["eval_time_s"] = ev.seconds  # this attempt's evaluations (with the one before training)
    metrics = {**{k: metrics[k] for k in ev.lead if k in metrics}, **metrics}
    with tempfile.TemporaryDirectory() as tmp:
        models.save_trained(net, tmp, method)
        ev.task.kind.write_files(tmp, payload, ev.base["payload"] if ev.base is not None else None, ev.data, ev.task)
        with open(os.path.join(tmp, "trial_state.json"), "w") as f:
            json.dump(metrics, f)
        torch.save(to_tensors(state), os.path.join(tmp, TRAINING_STATE))
        session.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
