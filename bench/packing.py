"""Benchmark: trials per GPU-hour with memory-aware packing against one trial per GPU.

The same study (``bench/packing_bench.yaml``: 8 LoRA trials that differ only in learning rate,
real emotion tweets, batch 16) runs twice on this machine's GPU through the real sweep (local
Ray, Tune, MLflow): with ``resources.gpus_per_worker: 1`` (a whole GPU per trial, what a plain
Ray Tune or HF ``hyperparameter_search`` setup asks for) and with ``auto`` (the share comes from
the study's estimated peak memory, ``sweeps/tuning/packing.py``). Reports each run's wall time,
trials per GPU-hour and the ratio, each trial's measured peak GPU memory against the estimate
that packed it, its training tokens/s, and that both runs reach the same scores.

The model is a folder (``--model``), or random weights at a real shape written here
(``--random-shape llama-3.2-1b``, no hub needed; with ``--tokenizer``, a tokenizer folder, else
the packaged MiniLM's): throughput and memory are real, scores only have to agree.

    python bench/packing.py --random-shape llama-3.2-1b [--tokenizer DIR] [--data DIR] [--trials 8] [--json out.json]   # needs a CUDA GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STUDY = Path(__file__).with_name("packing_bench.yaml")
DATA = ROOT / ".." / "shared" / "data" / "emotion"


def random_model(shape: str, tokenizer: str | None, folder: Path) -> str:
    """A random checkpoint at ``shape`` (gpu_check's) with a decoder-ready tokenizer beside it."""
    from transformers import AutoTokenizer

    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_check import make_checkpoint

    from trainables.model.load import resolve
    from trainables.model.tiny import as_decoder_tokenizer

    make_checkpoint(shape, folder)
    as_decoder_tokenizer(AutoTokenizer.from_pretrained(tokenizer or resolve("packaged:all-minilm-l6-v2"))).save_pretrained(folder)
    return str(folder)


def sweep(mode: str, model: str, sets: list[str], workdir: Path) -> dict[str, Any]:
    """One timed study with ``gpus_per_worker`` = ``mode`` (Ray starts and stops inside)."""
    from sweeps.study import load_study
    from sweeps.tuning import packing
    from sweeps.tuning.tuner import run_study

    out = workdir / f"gpus-{mode}"
    study = load_study(str(STUDY), [
        *sets, f"model={model}", f"resources.gpus_per_worker={mode}", f"storage_path={out / 'ray_results'}", f"tracking.tracking_uri=sqlite:///{out / 'mlflow.db'}",
    ])
    out.mkdir(parents=True)
    method, estimate = packing.estimate_study(study)
    started = time.perf_counter()
    outcome = run_study(study, local=True)
    seconds = time.perf_counter() - started
    trials = []
    for r in outcome.results:
        if r.error is not None:
            raise SystemExit(f"bench: a trial failed with gpus_per_worker {mode}: {r.error}")
        m = r.metrics
        trials.append({"learning_rate": r.config["learning_rate"], "f1_macro": float(m["f1_macro"]), "seconds": float(m["time_total_s"]),
                       "peak_gib": float(m["peak_memory_mb"]) / 1024, "tokens_per_s": float(m["tokens_per_s"]), "gpus_per_worker": float(m["gpus_per_worker"])})
    return {"seconds": seconds, "estimate_gib": estimate.total_gib, "estimate_method": method, "trials": trials,
            "trials_per_gpu_hour": len(trials) / (seconds / 3600)}


def report(results: dict[str, Any]) -> str:
    base = results["1"]["trials_per_gpu_hour"]
    lines = ["| gpus_per_worker | share used | wall s | trials per GPU-hour | vs one per GPU | median trial tokens/s | max trial peak GiB | estimate GiB | F1 macro min-max |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode, res in results.items():
        t = res["trials"]
        f1 = [x["f1_macro"] for x in t]
        lines.append(f"| {mode} | {max(x['gpus_per_worker'] for x in t):g} | {res['seconds']:.0f} | {res['trials_per_gpu_hour']:.0f} | "
                     f"{res['trials_per_gpu_hour'] / base:.2f} | {statistics.median(x['tokens_per_s'] for x in t):.0f} | "
                     f"{max(x['peak_gib'] for x in t):.2f} | {res['estimate_gib']:.2f} | {min(f1):.3f}-{max(f1):.3f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a model folder (or hub id the machine can reach)")
    p.add_argument("--random-shape", choices=["llama-3.2-1b", "mistral-7b"], help="write random weights at this shape instead")
    p.add_argument("--tokenizer", help="tokenizer folder for --random-shape (default: the packaged MiniLM's)")
    p.add_argument("--data", default=str(DATA), help="folder with the emotion train.txt / val.txt (default: ../shared/data/emotion)")
    p.add_argument("--trials", type=int, default=8, help="the first N of the study's 8 learning rates")
    p.add_argument("--train-rows", type=int, default=2000, help="tweets each trial trains on (one epoch)")
    p.add_argument("--modes", nargs="+", default=["1", "auto"], help="gpus_per_worker values to run (the first is the baseline)")
    p.add_argument("--json", help="also write the raw numbers here")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench/packing.py: needs a CUDA GPU (packing shares GPUs; on CPU, tests/test_packing.py covers it with fake GPUs)", file=sys.stderr)
        return 2
    if not (args.model or args.random_shape):
        print("bench/packing.py: pass --model FOLDER or --random-shape llama-3.2-1b", file=sys.stderr)
        return 2
    from trainables.inference import quiet

    quiet()
    from sweeps.study import load_study

    data = Path(args.data)
    sets = [f"data.files.train={data / 'train.txt'}", f"data.files.validation={data / 'val.txt'}", f"data.max_train_rows={args.train_rows}"]
    rates = load_study(str(STUDY), sets).space.params["learning_rate"].values[: args.trials]
    sets.append(f"search_space.overrides.learning_rate={yaml.safe_dump(rates, default_flow_style=True).strip()}")  # YAML reads 5e-05 as text
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or random_model(args.random_shape, args.tokenizer, Path(tmp) / "model")
        for mode in args.modes:
            results[mode] = sweep(mode, model, sets, Path(tmp))
            print(json.dumps({mode: {k: v for k, v in results[mode].items() if k != "trials"}}), flush=True)
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, {len(rates)} trials\n{report(results)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
