"""The human-readable plan of a validated study (what --dry-run prints)."""

from __future__ import annotations

from sweeps.searchers import trial_count
from sweeps.study import Study
from sweeps import tracking
from sweeps.storage import storage_root


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
        f"search     {s.algorithm} (seed {s.seed}), {trials} trial(s), optimise {s.metric} ({s.mode})",
        f"scheduler  {study.scheduler.name}" + (f" (grace {study.scheduler.grace_period} eval points, reduction {study.scheduler.reduction_factor})" if study.scheduler.name == "asha" else ""),
        f"training   " + (f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epoch(s)") + f", batch {t.batch_size} x accum {t.grad_accum}, max length {t.max_length}, seed {t.seed}",
        f"per trial  {r.workers} worker(s) x {{CPU: {r.cpus_per_worker:g}, GPU: {r.gpus_per_worker:g}}}; concurrency {s.max_concurrent_trials or 'as many as fit'}; "
        f"{r.max_failures} restart(s) from checkpoint after a crash or lost node",
        f"tracking   {tracking.tracking_uri(study.tracking.tracking_uri)} (experiment {study.experiment})",
        f"storage    {storage_root(study)} (Ray results and checkpoints)",
        f"space      {study.space.name}",
    ]
    for name, p in study.space.params.items():
        if p.type == "choice":
            what = f"choice {p.values}"
        elif p.type == "fixed":
            what = f"fixed {p.value!r}"
        else:
            what = f"{p.type} [{p.low:g}, {p.high:g}]"
        only = f"  (only {', '.join(p.methods)})" if p.methods and set(p.methods) != set(study.methods) else ""
        lines.append(f"  {name:<18} {what}{only}")
    return "\n".join(lines)
