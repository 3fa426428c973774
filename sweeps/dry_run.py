"""What a study will do, in words: what --dry-run prints (no Ray, no MLflow, nothing started)."""

from __future__ import annotations

from core.specs import ResourcesSpec
from search_spaces import Param
from sweeps.study import Study
from sweeps.tracking import store
from sweeps.tuning.searchers import SEARCHERS, trial_count
from sweeps.tuning.storage import storage_root


def describe(study: Study) -> str:
    assert study.space is not None
    s, r, t, d = study.search, study.resources, study.training, study.data
    trials = trial_count(s.algorithm, study.space, study.methods, s.num_samples, s.grid_repeats)
    data_from = {"hub": f"hub {d.name}" + (f" ({d.config})" if d.config else ""), "local": f"files {d.files}", "generated": f"generated {d.name} ({d.rows or 'default'} rows)"}[d.source]
    lines = [
        f"study      {study.name}: {study.description}".rstrip(": "),
        f"model      {study.model}",
        f"task       {study.task}",
        f"data       {data_from}; columns {d.columns.text}" + (f" + {d.columns.text_pair}" if d.columns.text_pair else "") + f" -> {d.columns.labels or d.columns.label}",
        f"methods    {', '.join(study.methods)}",
        f"search     {s.algorithm} (seed {s.seed}), {trials} trial(s)"
        + (f" (all the space's points: no point runs twice; num_samples {s.num_samples})" if trials < s.num_samples and SEARCHERS[s.algorithm].distinct else "")
        + f", optimise {s.metric} ({s.mode})",
        f"scheduler  {study.scheduler.name}" + (f" (grace {study.scheduler.grace_period} eval points, reduction {study.scheduler.reduction_factor})" if study.scheduler.name.startswith("asha") else ""),
        "training   " + (f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epoch(s)") + f", batch {t.batch_size} x accum {t.grad_accum}, max length {t.max_length}, seed {t.seed}, pooling {t.pooling}",
        f"per trial  {r.workers} worker(s) x {{CPU: {r.cpus_per_worker:g}, GPU: {_gpus(study, r)}}}; concurrency {s.max_concurrent_trials or 'as many as fit'}; "
        f"{r.max_failures} restart(s) from checkpoint after a crash or lost node",
        *([_final(study)] if study.final else []),
        f"tracking   {store.tracking_uri(study.tracking.tracking_uri)} (experiment {study.experiment})",
        f"storage    {storage_root(study)} (Ray results and checkpoints)",
        f"space      {study.space.name}",
    ]
    for name, p in study.space.params.items():
        only = f"  (only {', '.join(p.methods)})" if p.methods and set(p.methods) != set(study.methods) else ""
        lines.append(f"  {name:<18} {_range(p)}{only}")
        for method in p.per_method:
            if method in study.methods:
                lines.append(f"  {'':<18} {method}: {_range(p.for_method(method))}")
    return "\n".join(lines)


def _final(study: Study) -> str:
    f = study.final
    assert f is not None
    rows = "all training rows" if f.data == "full" else "the search's training rows"
    schedule = f"{f.max_steps} steps" if f.max_steps else f"{f.epochs or study.training.epochs:g} epoch(s)"
    return (f"final      top {f.top_k} configuration(s) x {f.seeds} seed(s) retrained on {rows}, {schedule}"
            f"{f', {f.cpus_per_worker:g} CPU(s) per worker' if f.cpus_per_worker else ''}; the pick is the best mean over seeds")


def _gpus(study: Study, r: ResourcesSpec) -> str:
    """The GPU share; for auto with a stated GPU size, the packing the sweep will use."""
    if r.gpus_per_worker != "auto":
        return f"{r.gpus_per_worker:g}"
    if not r.gpu_memory_gb:
        return "auto (packed by estimated memory; GPU size read from the cluster at start)"
    from sweeps.tuning import packing

    plan = packing.plan(study)
    assert plan is not None
    return (f"auto = {plan.share:g}: {plan.per_gpu} trial(s) per {plan.gpu_gib:g} GiB GPU, ~{plan.estimate.total_gib:.1f} GiB per {plan.method} trial "
            f"at {plan.seq_len}-token rows (the sweep sizes by the longest training row, so it may pack more)"
            + (f", in passes of {plan.micro_batch_size} rows (training.micro_batch_size: a whole batch would not fit)" if plan.micro_batch_size else ""))


def _range(p: Param) -> str:
    if p.type == "choice":
        return f"choice {p.values}"
    if p.type == "fixed":
        return f"fixed {p.value!r}"
    return f"{p.type} [{p.low:g}, {p.high:g}]"
