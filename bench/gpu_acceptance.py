"""GPU acceptance: one prepared run of the whole sweep on one GPU, QLoRA on CUDA included.

Phases, in order of what matters most (each timed; a failed phase is recorded and the next runs):

- setup:   random weights at the Llama-3.2-1B shape on the GPU (no hub), a decoder tokenizer.
- sweep:   ``python -m sweeps.run bench/gpu_acceptance.yaml``: LoRA, QLoRA (4-bit nf4 base) and
           IA3 over real tweets, trials packed on the GPU by estimated memory (``gpus_per_worker:
           auto``); per method: peak memory, tokens/s, MFU; trials per GPU-hour; the GPU's used
           memory before, at peak and after the trials (sampled with nvidia-smi).
- predict: ``python -m sweeps.predict`` on CUDA (the study's model).
- serve:   ``python -m sweeps.serve``: waits for HTTP, then asks its Gradio API the same texts.
- export:  ``python -m sweeps.export --merge``.
- report:  ``python -m sweeps.report``.
- oom:     a trial whose batch cannot fit the GPU (long rows, a batch sized by the memory
           estimate to need ~1.5x the GPU): real CUDA out-of-memory errors, which the trial
           survives by halving its micro-batch; how many halvings, the rows it ended at.
- compile: one LoRA trial eager, one with ``training.compile: true`` (long rows, 8 x 512, 60
           steps): each one's steady tokens/s (between its first and last eval point, so the
           compiling is left out) and MFU inside the real sweep; the compiled trial's start-up.
- mfu:     ``bench/gpu_check.py``'s measure at 8 x 2048 random tokens, eager and compiled.

Writes every figure as top-level keys of one JSON (``--out``; MFU as a fraction of the GPU's
dense bf16 peak, 0-1, in keys containing ``mfu``) after each phase, so a run cut short still
leaves what it measured. ``--rehearse`` runs the same phases on this CPU with a tiny Llama and
few rows (no GPU-only phases: oom, mfu), to prove the plumbing before GPU minutes are spent.

    python bench/gpu_acceptance.py --tokenizer .gpu/tok --data .gpu/emotion --out $OUT/gpu_acceptance_h200.json
    python bench/gpu_acceptance.py --rehearse --out /tmp/rehearsal.json

What travels to an offline GPU machine and how: bench/README.md ("GPU acceptance").
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's modules, and tests/browser.py's serving()
STUDY = Path(__file__).with_name("gpu_acceptance.yaml")
DATA = ROOT / ".." / "shared" / "data" / "emotion"
PHASES = ("setup", "sweep", "predict", "serve", "export", "report", "oom", "compile", "mfu")
GPU_ONLY = ("oom", "mfu")
METHODS = ("lora", "qlora", "ia3")
TEXTS = ["i feel so happy and grateful today", "i am furious about how they treated me"]
# Every key the JSON has (None where its phase did not run); tests/test_gpu_acceptance.py checks it.
RESULT_KEYS: dict[str, tuple[type, ...]] = {
    "mode": (str,), "gpu": (str,), "gpu_memory_gb": (float,), "peak_bf16_tflops": (float,), "torch": (str,), "commit": (str,), "date": (str,),
    "budget_s": (float,), "total_s": (float,), "phases": (dict,),
    "sweep_wall_s": (float,), "trials_completed": (int,), "trials_failed": (int,), "trials_per_gpu_hour": (float,), "packing_trials_per_gpu": (int,),
    **{f"peak_memory_gb_{m}": (float,) for m in METHODS}, **{f"tokens_per_s_{m}": (float,) for m in METHODS},
    **{f"mfu_sweep_{m}": (float,) for m in METHODS}, "qlora_lora_memory_ratio": (float,),
    "gpu_memory_used_before_gb": (float,), "gpu_memory_used_peak_gb": (float,), "gpu_memory_used_after_gb": (float,), "gpu_memory_freed_fraction": (float,),
    "predict_s": (float,), "predict_labels": (list,), "serve_answer_s": (float,), "serve_matches_predict": (bool,),
    "export_merge_s": (float,), "export_merge_mb": (float,), "report_s": (float,),
    "oom_batch": (int,), "oom_retries": (int,), "oom_final_micro_batch": (int,), "oom_survived": (bool,),
    "mfu_trial_eager": (float,), "mfu_trial_compiled": (float,), "compile_speedup": (float,), "compile_trial_startup_s": (float,),
    "mfu_eager_8x2048": (float,), "mfu_compiled_8x2048": (float,),
}


def check_result(result: dict[str, Any]) -> list[str]:
    """What is wrong with a result JSON: missing or extra keys, wrong types, MFU outside 0-1."""
    problems = [f"missing key {k}" for k in RESULT_KEYS if k not in result]
    problems += [f"unknown key {k}" for k in result if k not in RESULT_KEYS]
    for key, value in result.items():
        if key not in RESULT_KEYS or value is None:
            continue
        types = RESULT_KEYS[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            problems.append(f"{key}: {value!r} is not {'/'.join(t.__name__ for t in types)}")
        elif "mfu" in key and not 0 <= value <= 1:
            problems.append(f"{key}: {value} is not a fraction of peak (0-1)")
    for name, phase in result.get("phases", {}).items():
        if name not in PHASES or phase.get("status") not in ("ok", "failed", "skipped"):
            problems.append(f"phases.{name}: {phase}")
    return problems


@dataclasses.dataclass
class Run:
    """What every phase shares: where it works, the model, the data, how to call the CLIs."""

    work: Path
    out: Path
    rehearse: bool
    data: Path
    tokenizer: Optional[str]
    shape: str
    peak_tflops: Optional[float]
    gpu_gib: Optional[float]
    model: Optional[str] = None
    study_run: str = str(STUDY)  # what report/export/predict/serve are given: the study file, then its MLflow parent run id
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    log: list[str] = dataclasses.field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
                "MLFLOW_TRACKING_URI": f"sqlite:///{self.work / 'mlflow.db'}", "SWEEPS_CACHE": str(self.work / "cache")}

    def cli(self, name: str, args: list[str], timeout: float = 600) -> tuple[str, float]:
        """``python -m ARGS`` as a user runs it (cwd: the work folder); its output, its seconds."""
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", *args], cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - started
        text = proc.stdout + proc.stderr
        (self.work / "logs").mkdir(exist_ok=True)
        (self.work / "logs" / f"{name}.log").write_text(text)
        self.log.append(f"==== {name} ({seconds:.1f} s, exit {proc.returncode}): {' '.join(args)}\n{text[-4000:]}")
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} exited {proc.returncode}: {_last_line(text)}")
        return proc.stdout, seconds

    def sweep(self, name: str, sets: list[str], timeout: float = 900) -> tuple[str, float]:
        sets = [*sets, f"storage_path={self.work / 'ray_results'}"]
        if self.rehearse:
            sets += ["resources.gpus_per_worker=0", "resources.cpus_per_worker=1", "data.max_train_rows=64", "data.max_eval_rows=32", "training.batch_size=8"]
        args = ["sweeps.run", str(STUDY), "--model", str(self.model), "--local"]
        for s in sets:
            args += ["--set", s]
        return self.cli(name, args, timeout)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "Traceback")) or "Error" in ln]
    return (errors or lines or ["(no output)"])[-1][:400]


def _steady_tokens_per_s(run: Run, run_id: str) -> Optional[float]:
    """Training tokens/s between the first and the last eval point: without the first steps,
    where a compiled trial compiles (the trial's own tokens_per_s counts every step)."""
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{run.work / 'mlflow.db'}")
    seconds = {m.step: m.value for m in client.get_metric_history(run_id, "train_time_s")}
    rate = {m.step: m.value for m in client.get_metric_history(run_id, "tokens_per_s")}
    steps = sorted(set(seconds) & set(rate))
    if len(steps) < 2 or seconds[steps[-1]] <= seconds[steps[0]]:
        return None
    tokens = {k: rate[k] * seconds[k] for k in steps}
    return (tokens[steps[-1]] - tokens[steps[0]]) / (seconds[steps[-1]] - seconds[steps[0]])


def _runs(run: Run, experiment: str) -> tuple[Any, list[Any]]:
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{run.work / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise RuntimeError(f"no MLflow experiment {experiment!r}")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def _mfu(run: Run, tokens_per_s: Optional[float], total: float, trainable: float) -> Optional[float]:
    if not tokens_per_s or not run.peak_tflops or run.rehearse:
        return None
    return round(tokens_per_s * (4 * total + 2 * trainable) / (run.peak_tflops * 1e12), 4)  # gpu_check.model_flops_per_token


class GpuMemory:
    """The GPU's used memory (nvidia-smi, every 0.5 s) while a phase runs in other processes."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @staticmethod
    def used_gib() -> Optional[float]:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10).stdout
            return float(out.split()[0]) / 1024
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            value = self.used_gib()
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> "GpuMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ---- phases ------------------------------------------------------------------------------

def setup(run: Run) -> None:
    folder = run.work / "model"
    if run.rehearse:
        from trainables.model.tiny import write_tiny_model

        run.model = str(write_tiny_model("llama", folder))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from packing import random_model  # gpu_check's random checkpoint + a decoder tokenizer

    run.model = random_model(run.shape, run.tokenizer, folder)


def long_rows(run: Run) -> Path:
    """Rows of ~2,000 tokens (consecutive tweets joined; the first one's label), for the phases
    that need long sequences: a batch that cannot fit, and compile at realistic lengths."""
    folder = run.work / "long"
    if (folder / "train.csv").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    lines = [ln.rsplit(";", 1) for ln in (run.data / "train.txt").read_text(encoding="utf-8").splitlines() if ";" in ln]
    per_row = 4 if run.rehearse else 90  # ~22 tokens a tweet
    rows = [(" ".join(t for t, _ in lines[i:i + per_row]), lines[i][1]) for i in range(0, len(lines) - per_row, per_row)]
    for name, part in (("train.csv", rows[:-32]), ("validation.csv", rows[-32:])):
        with open(folder / name, "w", newline="") as f:
            csv.writer(f).writerows([("text", "label"), *part])
    return folder


def sweep(run: Run) -> None:
    before = GpuMemory.used_gib() if not run.rehearse else None
    data = [f"data.files.train={run.data / 'train.txt'}", f"data.files.validation={run.data / 'val.txt'}"]
    with GpuMemory() as memory:
        _, seconds = run.sweep("sweep", data)
    time.sleep(0 if run.rehearse else 3)  # the trial processes' exit, then read the GPU again
    after = GpuMemory.used_gib() if not run.rehearse else None
    parent, kids = _runs(run, "gpu_acceptance")
    run.study_run = parent.info.run_id
    r = run.result
    r["sweep_wall_s"] = round(seconds, 1)
    r["trials_completed"] = sum(k.data.tags.get("status") == "completed" for k in kids)
    r["trials_failed"] = sum(k.data.tags.get("status") == "failed" for k in kids)
    r["trials_per_gpu_hour"] = round(r["trials_completed"] / (seconds / 3600), 1) if not run.rehearse else None
    per_gpu = parent.data.params.get("packing.trials_per_gpu")
    r["packing_trials_per_gpu"] = int(per_gpu) if per_gpu else None
    for k in kids:
        m, method = k.data.metrics, k.data.tags.get("method")
        if method not in METHODS:
            continue
        r[f"peak_memory_gb_{method}"] = round(m["peak_memory_mb"] / 1024, 3) if "peak_memory_mb" in m else None
        r[f"tokens_per_s_{method}"] = round(m["tokens_per_s"], 1) if "tokens_per_s" in m else None
        r[f"mfu_sweep_{method}"] = _mfu(run, m.get("tokens_per_s"), m.get("total_params", 0), m.get("trainable_params", 0))
    if r.get("peak_memory_gb_qlora") and r.get("peak_memory_gb_lora"):
        r["qlora_lora_memory_ratio"] = round(r["peak_memory_gb_qlora"] / r["peak_memory_gb_lora"], 3)
    if before is not None and after is not None and memory.samples:
        peak = max(memory.samples)
        r.update(gpu_memory_used_before_gb=round(before, 2), gpu_memory_used_peak_gb=round(peak, 2), gpu_memory_used_after_gb=round(after, 2))
        r["gpu_memory_freed_fraction"] = round((peak - after) / (peak - before), 3) if peak > before else None
    if r["trials_failed"] or r["trials_completed"] != len(METHODS):
        raise RuntimeError(f"{r['trials_completed']} of {len(METHODS)} trials completed: {[k.data.tags.get('error') for k in kids if k.data.tags.get('error')]}")


def predict(run: Run) -> None:
    printed, seconds = run.cli("predict", ["sweeps.predict", run.study_run, *TEXTS, "--json"])
    answers = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    run.result["predict_s"] = round(seconds, 1)
    run.result["predict_labels"] = [a["labels"] for a in answers]
    if len(answers) != len(TEXTS):
        raise RuntimeError(f"{len(answers)} answers for {len(TEXTS)} texts")


def _gradio_call(base: str, api: str, data: list[Any], timeout: float = 120) -> Any:
    """One call through Gradio's HTTP API (POST the inputs, then read the event stream)."""
    req = urllib.request.Request(f"{base}gradio_api/call/{api}", data=json.dumps({"data": data}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        event = json.loads(resp.read())["event_id"]
    with urllib.request.urlopen(f"{base}gradio_api/call/{api}/{event}", timeout=timeout) as resp:
        stream = resp.read().decode()
    blocks = stream.split("event: ")
    done = next((b for b in blocks if b.startswith("complete")), None)
    if done is None:
        raise RuntimeError(f"the app's {api} call did not complete: {stream[-300:]}")
    return json.loads(done.split("data:", 1)[1].strip())


def serve(run: Run) -> None:
    from tests.browser import serving  # the tests' way to start the app and wait for its HTTP

    started = time.perf_counter()
    log = run.work / "serve.log"
    try:
        with serving([run.study_run], log, run.env, timeout_s=300, cwd=run.work) as base:
            answers = [_gradio_call(base, "classify", [text]) for text in TEXTS]
        run.result["serve_answer_s"] = round(time.perf_counter() - started, 1)
        shown = [str(a[0]) for a in answers]  # the predicted label(s), as the page shows them
        expected = [", ".join(labels) for labels in run.result.get("predict_labels") or []]
        run.result["serve_matches_predict"] = shown == expected if expected else None
        run.log.append(f"==== serve: answers {shown}, predict {expected}")
    finally:
        run.log.append(f"==== serve log\n{log.read_text()[-3000:] if log.is_file() else ''}")


def export(run: Run) -> None:
    out = run.work / "export"
    _, seconds = run.cli("export", ["sweeps.export", run.study_run, "--out", str(out), "--merge"])
    run.result["export_merge_s"] = round(seconds, 1)
    run.result["export_merge_mb"] = round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20, 1)


def report(run: Run) -> None:
    _, seconds = run.cli("report", ["sweeps.report", run.study_run, "--out", str(run.work / "report")])
    run.result["report_s"] = round(seconds, 1)


def _long_sets(run: Run, experiment: str, batch: int, max_length: int, steps: int, every: Optional[int] = None) -> list[str]:
    folder = long_rows(run)
    return [
        f"data.files.train={folder / 'train.csv'}", f"data.files.validation={folder / 'validation.csv'}", "data.format=csv",
        "data.delimiter=null", "data.column_names=null", "data.max_eval_rows=8", "methods=[lora]",
        f"training.batch_size={batch}", f"training.max_length={max_length}", f"training.max_steps={steps}", f"training.eval_every_steps={every or steps}",
        "training.eval_batch_size=2", f"tracking.experiment={experiment}", "resources.gpus_per_worker=1",
    ]


def oom_batch(run: Run, seq_len: int = 2048) -> int:
    """The smallest power-of-two batch the memory estimate puts at >= 1.5x the GPU (so the first
    pass runs out of memory for real and a few halvings make it fit)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from trainables.training import memory

    shape = memory.shape_of(AutoConfig.from_pretrained(run.model, num_labels=6), AutoModelForSequenceClassification)
    batch = 2
    while batch < 1024 and memory.estimate(shape, "lora", batch=batch, seq_len=seq_len, base_bytes=2).total_gib < 1.5 * (run.gpu_gib or 80):
        batch *= 2
    return batch


def oom(run: Run) -> None:
    batch = oom_batch(run)
    run.result["oom_batch"] = batch
    printed, _ = run.sweep("oom", _long_sets(run, "gpu_acceptance_oom", batch, 2048, 2))
    retries = re.findall(r"out of memory at (\d+) rows per pass; retrying at (\d+)", printed)
    _, (kid,) = _runs(run, "gpu_acceptance_oom")
    run.result["oom_retries"] = len(retries)
    run.result["oom_final_micro_batch"] = int(kid.data.metrics["micro_batch_size"]) if "micro_batch_size" in kid.data.metrics else None
    run.result["oom_survived"] = kid.data.tags.get("status") == "completed" and len(retries) > 0
    if not run.result["oom_survived"]:
        raise RuntimeError(f"status {kid.data.tags.get('status')}, {len(retries)} halvings: {kid.data.tags.get('error', '')[:300]}")


def compile_phase(run: Run) -> None:
    batch, length, steps = (2, 64, 8) if run.rehearse else (8, 512, 60)
    trials, steady = {}, {}
    for mode in ("eager", "compiled"):
        sets = _long_sets(run, f"gpu_acceptance_{mode}", batch, length, steps, every=steps // 4) + [f"training.compile={str(mode == 'compiled').lower()}"]
        run.sweep(f"compile-{mode}", sets)
        _, (kid,) = _runs(run, f"gpu_acceptance_{mode}")
        if kid.data.tags.get("status") != "completed":
            raise RuntimeError(f"the {mode} trial ended {kid.data.tags.get('status')}: {kid.data.tags.get('error', '')[:300]}")
        trials[mode], steady[mode] = kid.data.metrics, _steady_tokens_per_s(run, kid.info.run_id)
    for mode, m in trials.items():
        run.result[f"mfu_trial_{mode}"] = _mfu(run, steady[mode], m.get("total_params", 0), m.get("trainable_params", 0))
    if steady["eager"] and steady["compiled"]:
        run.result["compile_speedup"] = round(steady["compiled"] / steady["eager"], 3)
    run.result["compile_trial_startup_s"] = round(trials["compiled"].get("startup_s", 0.0), 1)


def mfu(run: Run) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import gpu_check

    gpu_check.PEAK = run.peak_tflops
    for compiled in (False, True):
        out = gpu_check.run(str(run.model), "single_label", "lora", 10, 8, 2048, compiled=compiled)
        run.result[f"mfu_{'compiled' if compiled else 'eager'}_8x2048"] = out.get("mfu")


STEPS: dict[str, Callable[[Run], None]] = {
    "setup": setup, "sweep": sweep, "predict": predict, "serve": serve, "export": export, "report": report,
    "oom": oom, "compile": compile_phase, "mfu": mfu,
}


# ---- the run -------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/gpu_acceptance.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", help="the result JSON (default: bench/results/gpu_acceptance_<gpu>.json)")
    p.add_argument("--tokenizer", help="a tokenizer folder (default: the packaged MiniLM's, if installed)")
    p.add_argument("--data", default=str(DATA), help="folder with the emotion train.txt / val.txt (default: ../shared/data/emotion)")
    p.add_argument("--shape", default="llama-3.2-1b", help="model shape for the random weights (bench/gpu_check.py SHAPES)")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, in this order: {','.join(PHASES)}")
    p.add_argument("--budget-s", type=float, default=480, help="skip the phases left once this many seconds have passed (default 480)")
    p.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak (default: by device name, bench/gpu_check.py)")
    p.add_argument("--work", help="working folder (default: a new one under /tmp)")
    p.add_argument("--rehearse", action="store_true", help="run the phases on this CPU with a tiny Llama (no oom, mfu): the plumbing, not the figures")
    return p


def plan(args: argparse.Namespace) -> list[str]:
    """The phases to run, or a one-line error (SystemExit 2)."""
    asked = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in asked if p not in PHASES]
    if unknown:
        raise SystemExit(f"error: --phases: unknown phase(s) {', '.join(unknown)} (fix: use {','.join(PHASES)})")
    if not (Path(args.data) / "train.txt").is_file() or not (Path(args.data) / "val.txt").is_file():
        raise SystemExit(f"error: --data: no train.txt / val.txt in {args.data} (fix: pass the emotion folder, e.g. .gpu/emotion)")
    phases = [p for p in PHASES if p in asked]
    if "setup" not in phases:
        raise SystemExit("error: --phases: every run starts with setup (fix: add setup)")
    if args.rehearse:
        return [p for p in phases if p not in GPU_ONLY]
    if not _cuda():
        raise SystemExit("error: no CUDA GPU here (fix: run it on a GPU machine, or --rehearse for the CPU dress rehearsal)")
    return phases


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        phases = plan(args)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    import tempfile

    import torch

    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-acceptance-"))
    work.mkdir(parents=True, exist_ok=True)
    gpu = "cpu-rehearsal" if args.rehearse else torch.cuda.get_device_name()
    slug = "cpu" if args.rehearse else re.sub(r"[^a-z0-9]+", "_", gpu.lower().replace("nvidia", "")).strip("_").split("_")[0]
    out = Path(args.out or ROOT / "bench" / "results" / f"gpu_acceptance_{slug}.json")
    gpu_gib = None if args.rehearse else torch.cuda.get_device_properties(0).total_memory / 2**30
    peak = args.peak_tflops
    if peak is None and not args.rehearse:
        sys.path.insert(0, str(Path(__file__).parent))
        from gpu_check import PEAK_BF16_TFLOPS

        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), None)
    run = Run(work=work, out=out, rehearse=args.rehearse, data=Path(args.data).resolve(), tokenizer=args.tokenizer, shape=args.shape, peak_tflops=peak, gpu_gib=gpu_gib)
    r = run.result
    r.update({k: None for k in RESULT_KEYS})
    r.update(mode="rehearsal" if args.rehearse else "gpu", gpu=gpu, gpu_memory_gb=round(gpu_gib, 1) if gpu_gib else None, peak_bf16_tflops=peak,
             torch=torch.__version__, commit=_commit(), date=datetime.date.today().isoformat(), budget_s=args.budget_s, phases={})
    started = time.perf_counter()
    for name in phases:
        if time.perf_counter() - started > args.budget_s:
            r["phases"][name] = {"status": "skipped", "why": f"past --budget-s {args.budget_s:g}"}
            continue
        t0 = time.perf_counter()
        try:
            STEPS[name](run)
            r["phases"][name] = {"status": "ok", "seconds": round(time.perf_counter() - t0, 1)}
        except Exception as exc:  # recorded; the next phase still runs (setup's failure ends the run)
            r["phases"][name] = {"status": "failed", "seconds": round(time.perf_counter() - t0, 1), "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            if name == "setup":
                break
        finally:
            r["total_s"] = round(time.perf_counter() - started, 1)
            write(run)
        print(f"{name}: {r['phases'][name]['status']} ({r['phases'][name].get('seconds', 0)} s) {r['phases'][name].get('error', '')}", flush=True)
    problems = check_result(r)
    print(json.dumps({k: v for k, v in r.items() if v is not None and k != "phases"}, indent=1))
    print(f"wrote {out} and {out.with_suffix('.log')}" + (f"; result problems: {problems}" if problems else ""))
    return 0 if all(p["status"] == "ok" for p in r["phases"].values()) and not problems else 1


def write(run: Run) -> None:
    run.out.parent.mkdir(parents=True, exist_ok=True)
    run.out.write_text(json.dumps(run.result, indent=1) + "\n")
    run.out.with_suffix(".log").write_text("\n".join(run.log)[-2_000_000:])


if __name__ == "__main__":
    sys.exit(main())
