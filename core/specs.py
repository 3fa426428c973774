"""The study's parts as typed specs: what the YAML holds, each a pydantic dataclass (``@spec``)
that checks its fields' types and then its own rules (``check``); ``core.schema`` words the errors.

The bottom layer: ``sweeps`` builds a ``Study`` from these, ``trainables`` receives them
(as a ``TrialSpec``) in every trial and worker; neither reads settings by string key.
Checks that need a registry (task kinds, methods, search spaces, data generators) are the
``Study``'s, in ``sweeps.study``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import StrictBool

from core.errors import StudyError
from core.schema import Float, Int, Listed, Spec, spec

SPLITS = ("train", "validation", "test")


@spec
class Columns(Spec):
    """Which data columns hold what. Multi-label data either has one column of label lists
    (``label``) or one 0/1 column per label (``labels``). QA reads question/context/answers
    (SQuAD layout: answers = {text: [..], answer_start: [..]}); instruction tuning reads
    ``messages`` (a list of {role, content} or ShareGPT {from, value} turns)."""

    text: str = "text"  # the text a classifier reads
    text_pair: Optional[str] = None  # sentence_pair: the second text
    label: Optional[str] = "label"  # the label (names or ids; multi-label: a list per row)
    labels: Optional[Listed[str]] = None  # multi-label as one 0/1 column per label (then label: null)
    question: str = "question"  # extractive QA
    context: str = "context"  # extractive QA
    answers: str = "answers"  # extractive QA: {text: [..], answer_start: [..]}
    id: str = "id"  # extractive QA: one id per question
    messages: str = "conversations"  # instruction: a list of {role, content} or {from, value} turns


@spec
class DataSpec(Spec):
    """Where a study's rows come from (hub, local files, generated), how they are split and capped, and which columns hold what."""

    source: Literal["hub", "local", "generated"] = "local"
    name: Optional[str] = None  # hub data set id, or generator name for source=generated
    config: Optional[str] = None  # hub config name
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # split -> path (local)
    format: Optional[Literal["csv", "tsv", "jsonl", "json", "squad", "lines"]] = None  # default: from the extension; squad = official nested SQuAD JSON; lines = one text per line, labels in label_files
    label_files: dict[str, str] = dataclasses.field(default_factory=dict)  # format lines: split -> file of labels, line by line with files (TweetEval)
    delimiter: Optional[str] = None  # csv only, e.g. ";"
    column_names: Optional[Listed[str]] = None  # csv without a header row
    splits: dict[str, Optional[str]] = dataclasses.field(default_factory=lambda: {"train": "train"})  # hub: our split -> the data set's (null: none)
    columns: Columns = dataclasses.field(default_factory=Columns)  # which columns hold what
    label_names: Optional[Listed[str]] = None  # names of integer labels 0..n-1 (default: the data's own, else the ids)
    drop_labels: Optional[Listed[Any]] = None  # rows with these label values are dropped (SNLI: -1 = no gold label)
    validation_fraction: Float = 0.2  # stratified split of train when there is no validation split
    # Pool every split and cut it anew, stratified, e.g. {train: 0.7, validation: 0.1, test: 0.2}
    resplit: Optional[dict[str, Float]] = None
    max_train_rows: Optional[Int] = None  # cap on the rows trials train on (quicker trials, rougher ranking)
    max_eval_rows: Optional[Int] = None  # cap on the validation / test rows scored at each eval point
    rows: Optional[Int] = None  # generated data: how many rows

    def check(self) -> None:
        for split in self.splits:
            if split not in SPLITS:
                raise StudyError(f"splits.{split}", "unknown split", f"use {', '.join(SPLITS)}")
        if self.source == "hub" and not self.name:
            raise StudyError("name", "a hub data set needs a name", "e.g. name: dair-ai/emotion")
        if self.source == "local":
            if "train" not in self.files:
                raise StudyError(f"files.train", "local data needs a train file", "add files: {train: path/to/train.csv}")
            for split, file in self.files.items():
                if split not in SPLITS:
                    raise StudyError(f"files.{split}", "unknown split", f"use {', '.join(SPLITS)}")
                if not Path(file).expanduser().is_file():
                    raise StudyError(f"files.{split}", f"no such file {file!r}", "fix the path (relative paths start at the current directory) or pass --data")
        if self.format == "lines":
            for split in self.files:
                if split != "test" and split not in self.label_files:
                    raise StudyError(f"label_files.{split}", "format lines needs a labels file per split", f"add label_files: {{{split}: path/to/{split}_labels.txt}}")
            for split, file in self.label_files.items():
                if split not in self.files:
                    raise StudyError(f"label_files.{split}", f"no text file for split {split!r}", f"add files.{split} or remove this labels file")
                if not Path(file).expanduser().is_file():
                    raise StudyError(f"label_files.{split}", f"no such file {file!r}", "fix the path (relative paths start at the current directory)")
        elif self.label_files:
            raise StudyError("label_files", "label files go with format: lines", "set data.format: lines, or remove label_files")
        if self.resplit is not None:
            if set(self.resplit) != {"train", "validation", "test"} or abs(sum(self.resplit.values()) - 1) > 1e-6 or min(self.resplit.values()) <= 0:
                raise StudyError("resplit", f"{self.resplit} is not three positive shares of train, validation, test summing to 1", "use e.g. {train: 0.7, validation: 0.1, test: 0.2}")
        if not 0 < self.validation_fraction < 1:
            raise StudyError("validation_fraction", f"{self.validation_fraction} is not in (0, 1)", "use e.g. 0.2")
        for key in ("max_train_rows", "max_eval_rows", "rows"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise StudyError(key, f"{value} rows", "use a positive number or remove the key")


@spec
class SpaceRef(Spec):
    """A named search space (search_spaces/NAME.yaml) with this study's changes."""

    name: str  # defaults | lora | ia3 | peft_methods | small_encoder | sft_qlora | any search_spaces/NAME.yaml
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # param -> a list of values, one value, or a {type, low, high} range


@spec
class SearchSpec(Spec):
    """How trials are picked (grid, random, Optuna TPE, or a registered searcher) and what they are ranked by."""

    algorithm: str = "optuna"  # grid | random | optuna (Optuna TPE) | any registered in sweeps.tuning.searchers
    num_samples: Int = 8  # trials for random / optuna (a grid runs each of its points)
    grid_repeats: Int = 1  # grid only: run the whole grid this many times (same seed: shows run-to-run noise, e.g. GPU nondeterminism)
    max_concurrent_trials: Optional[Int] = None  # default: as many as the cluster fits
    metric: str = "f1_macro"  # what trials are ranked by: one of the task's metrics (e.g. f1_macro, f1, eval_loss)
    mode: Literal["max", "min"] = "max"  # max for scores, min for losses
    seed: Int = 0  # the searcher's seed
    # random / optuna: settings to try first (e.g. a paper's), each a complete point of the space
    first_points: Listed[dict[str, Any]] = dataclasses.field(default_factory=list)

    def check(self) -> None:
        if self.num_samples < 1:
            raise StudyError("num_samples", f"{self.num_samples} trials", "use --num-samples N with N >= 1")
        if self.grid_repeats < 1:
            raise StudyError("grid_repeats", f"{self.grid_repeats}", "use >= 1")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise StudyError("max_concurrent_trials", f"{self.max_concurrent_trials}", "use a value >= 1 or remove it")


@spec
class SchedulerSpec(Spec):
    """Early stopping: which trials Ray Tune stops at an eval point (ASHA) or none."""

    # asha: stop weak trials early | asha_per_method: the same, each trial ranked only against
    # trials of its own method (methods that learn slower early are not cut for it) |
    # none: every trial to its end (sweeps.tuning.schedulers)
    name: str = "asha"
    grace_period: Int = 1  # eval points a trial always gets before it can be stopped
    reduction_factor: Int = 2  # keep the top 1/reduction_factor at each rung

    def check(self) -> None:
        if self.grace_period < 1:
            raise StudyError("grace_period", f"{self.grace_period}", "use >= 1 eval point")
        if self.reduction_factor < 2:
            raise StudyError("reduction_factor", f"{self.reduction_factor}", "use >= 2")


@spec
class TrainingSpec(Spec):
    """One trial's training: schedule, batches, eval points, precision and task-kind settings."""

    epochs: Float = 1.0  # passes over the train rows per trial (fractions allowed)
    max_steps: Optional[Int] = None  # optimizer steps; overrides epochs
    batch_size: Int = 16  # per worker
    eval_batch_size: Optional[Int] = None  # default: 2 x the rows per pass (batch_size, or micro_batch_size if smaller)
    grad_accum: Int = 1  # batches per optimizer step
    # Rows per forward/backward pass: each batch is split into passes of at most this many and
    # their gradients summed: the same step on the same data, less activation memory, slower
    # at small sizes. null = the whole batch. A trial that runs out of memory with no larger
    # GPU share to take halves it and resumes from its last checkpoint; gpus_per_worker: auto
    # sets it when a whole batch would not fit one GPU.
    micro_batch_size: Optional[Int] = None
    max_length: Int = 128  # tokens; longer texts are truncated
    # How a classifier reads a text: auto = as the checkpoint was trained to embed (the mean of
    # its tokens where its sentence-transformers pooling config says mean: all-MiniLM, mpnet,
    # e5, gte; else the family's own head); mean; cls = the family's own head (BERT: first token
    # through its pooler; decoders: last token). Exports carry it (docs/studies.md, "Pooling").
    pooling: Literal["auto", "cls", "mean"] = "auto"
    seed: Int = 42  # the trial's seed (weights of the head and adapters, data order, dropout)
    evals_per_epoch: Int = 2  # eval points per epoch (what ASHA rungs count)
    eval_every_steps: Optional[Int] = None  # overrides evals_per_epoch
    # Score the model before training too (before_* metrics, base-vs-tuned error analysis in the
    # report); costs one validation pass per trial.
    eval_base: StrictBool = True
    # Recompute activations in the backward pass: ~1/3 slower, far less memory (7B QLoRA at
    # 2k tokens per batch: 23.7 GB without it, see bench/RESULTS.md).
    gradient_checkpointing: StrictBool = False
    # Training forward passes in bf16 autocast (trained weights and the optimizer stay fp32,
    # evaluation runs without autocast): auto = where the hardware runs bf16 fast (CUDA with
    # bf16, CPUs with AVX512-BF16 / AMX), else fp32. About 2x the examples/s on such CPUs.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # dtype of the frozen base weights under adapter and head methods; what they train (adapters,
    # a fresh head) is always fp32. bf16: half the weights' memory (more trials per GPU). auto:
    # bf16 where trials train in bf16 on a GPU, else the checkpoint's own dtype (Llama, Gemma,
    # Mistral ship bf16; MiniLM, DistilBERT fp32). `full` trains in the checkpoint's dtype.
    base_dtype: Literal["auto", "bf16", "fp32"] = "auto"
    # torch.compile the training forward pass: fuses the adapters' many small ops. Llama-3.2-1B
    # LoRA on an H100: 1.5x the tokens/s at 8x2048 tokens a step (35% of bf16 peak), 1.8x at
    # 8x256, less memory; costs ~1 min of compiling when a trial starts (bench/RESULTS.md), so
    # it pays on trials of several minutes, not on short search trials. Evaluation stays eager.
    compile: StrictBool = False
    # Batches of similar-length examples (transformers' LengthGroupedSampler: shuffled, then
    # sorted within windows of 50 batches): far less padding on texts of mixed length.
    # Single-worker trials; DDP trials shuffle plainly.
    group_by_length: StrictBool = True
    # Extractive QA: overlap of the windows a long context is cut into (tokens; < max_length / 2)
    # and the longest answer span considered.
    doc_stride: Int = 128
    max_answer_length: Int = 30
    # Instruction tuning: join examples into full max_length rows (more tokens per step; a
    # search space may sample it), and how many validation prompts to answer for BLEU/ROUGE
    # at each eval point (greedy; each costs up to max_new_tokens forward passes).
    packing: StrictBool = False
    generate_samples: Int = 16
    max_new_tokens: Int = 64

    @property
    def rows_per_pass(self) -> int:
        """Rows one forward/backward pass holds: the batch, or ``micro_batch_size`` if smaller."""
        return min(self.micro_batch_size or self.batch_size, self.batch_size)

    def check(self) -> None:
        positive = {
            "epochs": self.epochs, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
            "evals_per_epoch": self.evals_per_epoch, "doc_stride": self.doc_stride,
            "max_answer_length": self.max_answer_length, "max_new_tokens": self.max_new_tokens,
        }
        for key in ("max_steps", "eval_every_steps", "eval_batch_size", "micro_batch_size"):
            if getattr(self, key) is not None:
                positive[key] = getattr(self, key)
        for key, value in positive.items():
            if value <= 0:
                raise StudyError(key, f"{value} must be > 0", "use a positive value")
        if self.generate_samples < 0:
            raise StudyError("generate_samples", f"{self.generate_samples}", "use 0 (no generation) or more")
        if self.max_length < 8:
            raise StudyError("max_length", f"{self.max_length} tokens", "use >= 8")


@spec
class ResourcesSpec(Spec):
    """What each trial asks Ray for (workers, CPUs, GPU share or packing), its timeouts and its failure budget."""

    workers: Int = 1  # Ray Train workers per trial (> 1 = DDP)
    cpus_per_worker: Float = 1.0  # CPUs each worker (or in-process trial) asks Ray for
    # A fraction shares a GPU between trials; auto packs as many trials per GPU as their
    # estimated peak memory allows (sweeps/tuning/packing.py), at most max_trials_per_gpu.
    gpus_per_worker: Union[Float, Literal["auto"]] = 0.0
    gpu_memory_gb: Optional[Float] = None  # for auto: GiB per GPU (null = read from a GPU of the cluster)
    gpu_memory_headroom: Float = 0.1  # for auto: fraction of each GPU left free
    max_trials_per_gpu: Int = 8  # for auto: past a few, packed trials only share compute
    start_timeout_s: Float = 120.0  # a trial that cannot get its workers in this long fails
    # On a cluster whose autoscaler can add a node that fits a trial, the wait instead (cloud
    # GPU nodes take 3-10 min to boot and set up).
    autoscale_timeout_s: Float = 900.0
    # torch.distributed backend of multi-worker (DDP) trials: null = Ray's choice (nccl when
    # workers have GPUs, else gloo); gloo where the "GPUs" are only Ray resources (tests).
    backend: Optional[str] = None
    # Restarts of a trial after a worker crash, each from the trial's last checkpoint (eval
    # point): its workers first (Ray Train), then the whole trial if its driver was lost (Tune).
    # 0 on one machine, where a crash is a bug; the cluster studies use 3. Errors that would
    # repeat (NaN loss, out of memory, a configuration the model rejects) are never retried.
    max_failures: Int = 0
    # Restarts after a node preemption (spot reclaim), counted apart from max_failures, as Ray
    # Train does: -1 = no limit (a preemption says nothing about the trial).
    max_preemptions: Int = -1
    # Start Train workers (and a local cluster's trial actors) with the jemalloc allocator Ray
    # ships, keeping the pages it frees when trials train on the CPU (trainables/training/allocator.py):
    # the training loop runs in a thread, where glibc malloc cost ~9% of CPU throughput on one
    # machine (bench/loop_speed.py); jemalloc's own defaults cost 3-13% on another
    # (bench/alloc_speed.py). A trial's `jemalloc` metric says what it ran with.
    jemalloc: StrictBool = True
    # Run a one-worker trial's training loop in the trial's own Tune actor rather than in a Ray
    # Train worker that a Train controller starts for each trial: ~9 s less start-up per trial,
    # and a reused actor keeps its imports (bench/trial_startup.py). A crash then restarts the
    # whole trial from its last checkpoint (Tune, resources.max_failures) rather than only its
    # worker. auto: on a one-node cluster with workers: 1; a multi-node cluster keeps Train
    # workers (trial drivers on the head, workers on nodes that may be preempted).
    in_process: Union[StrictBool, Literal["auto"]] = "auto"

    def check(self) -> None:
        if self.workers < 1:
            raise StudyError("workers", f"{self.workers}", "use >= 1")
        if self.in_process is True and self.workers > 1:
            raise StudyError("in_process", f"true with workers: {self.workers}", "use workers: 1, or in_process: false (or auto) for DDP trials")
        if self.cpus_per_worker <= 0:
            raise StudyError("cpus_per_worker", f"{self.cpus_per_worker}", "use > 0")
        if self.gpus_per_worker != "auto" and (self.gpus_per_worker < 0 or (self.gpus_per_worker > 1 and not float(self.gpus_per_worker).is_integer())):
            raise StudyError("gpus_per_worker", f"{self.gpus_per_worker}", "use a fraction <= 1, a whole number, or auto")
        if self.gpu_memory_gb is not None and self.gpu_memory_gb <= 0:
            raise StudyError("gpu_memory_gb", f"{self.gpu_memory_gb}", "use the GPU's memory in GiB (e.g. 80), or leave it out")
        if not 0 <= self.gpu_memory_headroom < 1:
            raise StudyError("gpu_memory_headroom", f"{self.gpu_memory_headroom}", "use a fraction in [0, 1), e.g. 0.1")
        if self.max_trials_per_gpu < 1:
            raise StudyError("max_trials_per_gpu", f"{self.max_trials_per_gpu}", "use 1 or more")
        if self.max_failures < 0:
            raise StudyError("max_failures", f"{self.max_failures}", "use 0 (no restarts) or more")
        if self.max_preemptions < -1:
            raise StudyError("max_preemptions", f"{self.max_preemptions}", "use -1 (no limit), 0 (no restarts) or more")
        if self.backend not in (None, "nccl", "gloo"):
            raise StudyError("backend", f"{self.backend!r}", "use nccl, gloo, or leave it out (Ray picks)")
        for key in ("start_timeout_s", "autoscale_timeout_s"):
            if getattr(self, key) <= 0:
                raise StudyError(key, f"{getattr(self, key)}", "use > 0 seconds")


@spec
class FinalSpec(Spec):
    """After the search, train its best configurations properly (multi-fidelity search, as
    Hyperband / BOHB spend budget: search cheap on a subset or a short schedule, then give the
    winners all the data and the long schedule). Runs under the same MLflow parent, child runs
    tagged ``stage=final``; the final model is what report, export and predict use."""

    top_k: Int = 1  # best search configurations to retrain
    seeds: Int = 1  # runs per configuration (seeds training.seed, +1, ...): the pick is the best mean, the spread is logged
    data: Literal["full", "search"] = "full"  # full: every row (data.max_train_rows / max_eval_rows lifted); search: the search's rows
    epochs: Optional[Float] = None  # the final schedule; default: training.epochs
    max_steps: Optional[Int] = None  # optimizer steps instead of epochs (smoke runs)
    cpus_per_worker: Optional[Float] = None  # default: resources.cpus_per_worker; a final run alone may take the whole node
    max_concurrent_trials: Optional[Int] = None  # default: as many as fit

    def check(self) -> None:
        for key in ("top_k", "seeds"):
            if getattr(self, key) < 1:
                raise StudyError(key, f"{getattr(self, key)}", "use >= 1")
        for key in ("epochs", "max_steps", "cpus_per_worker", "max_concurrent_trials"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise StudyError(key, f"{value} must be > 0", "use a positive value or remove the key")


@spec
class TrackingSpec(Spec):
    """Where the study is recorded: the MLflow experiment and tracking server, and extra trackers."""

    experiment: Optional[str] = None  # MLflow experiment; default: the study name
    tracking_uri: Optional[str] = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    # Tune callbacks that record the study (sweeps.tracking.TRACKERS). mlflow is the record that
    # report, export and predict read, so it is always on; others are added beside it.
    trackers: Listed[str] = dataclasses.field(default_factory=lambda: ["mlflow"])
    register: StrictBool = True  # log the study's model as an MLflow Model and register a new version of it
    registered_model: Optional[str] = None  # its name in MLflow's Model Registry; default: the experiment (the study name; <study>-smoke for --smoke)
    champion_alias: str = "champion"  # the alias the best version holds: moved only when a new version beats it

    def check(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.champion_alias) or re.fullmatch(r"[vV]\d+|latest", self.champion_alias):
            raise StudyError("champion_alias", f"{self.champion_alias!r} is not an alias MLflow takes", "use letters, digits, _ . - (not latest or v<number>), e.g. champion")


