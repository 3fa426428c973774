"""bench/gpu_acceptance.py, the parts a CPU can check before GPU minutes are spent: its
arguments and refusals, the study it runs, the batch it sizes to run out of memory, the long
rows it builds, and the shape of the JSON it writes. (The phases themselves run on a GPU, or
on this CPU with --rehearse: bench/README.md.)"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


acceptance = _load("gpu_acceptance")


@pytest.fixture
def data(tmp_path):
    from trainables.data.synthetic import emotion_rows

    folder = tmp_path / "emotion"
    folder.mkdir()
    for name, seed in (("train.txt", 0), ("val.txt", 1)):
        (folder / name).write_text("".join(f"{r['text']};{r['label']}\n" for r in emotion_rows(200, seed=seed)))
    return folder


@pytest.mark.parametrize("argv,message", [
    (["--phases", "setup,swep"], "error: --phases: unknown phase(s) swep (fix: use setup,sweep,predict,serve,export,report,oom,compile,mfu)"),
    (["--phases", "sweep"], "error: --phases: every run starts with setup (fix: add setup)"),
    ([], "error: no CUDA GPU here (fix: run it on a GPU machine, or --rehearse for the CPU dress rehearsal)"),
])
def test_bad_arguments_are_one_line_exit_2_before_anything_starts(capsys, tmp_path, data, argv, message):
    if not argv and acceptance._cuda():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "result.json"
    assert acceptance.main(["--data", str(data), "--out", str(out), *argv]) == 2
    assert capsys.readouterr().err.strip() == message
    assert not out.exists()


def test_missing_data_is_one_line(capsys, tmp_path):
    assert acceptance.main(["--rehearse", "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --data: no train.txt / val.txt in {tmp_path} (fix: pass the emotion folder, e.g. .gpu/emotion)"


def test_a_rehearsal_leaves_out_the_gpu_only_phases(data):
    args = acceptance.parser().parse_args(["--rehearse", "--data", str(data)])
    assert acceptance.plan(args) == ["setup", "sweep", "predict", "serve", "export", "report", "compile"]


def test_its_study_validates_with_three_packed_methods_on_the_bench_model(data, tiny_llama):
    from sweeps.study import load_study

    study = load_study(str(acceptance.STUDY), [f"model={tiny_llama}", f"data.files.train={data / 'train.txt'}", f"data.files.validation={data / 'val.txt'}"])
    assert study.methods == ["lora", "qlora", "ia3"] and study.search.algorithm == "grid" and study.space.grid_size(study.methods) == 3
    assert study.resources.gpus_per_worker == "auto" and study.scheduler.name == "none"


def test_the_oom_batch_is_the_smallest_the_estimate_puts_past_one_and_a_half_gpus(tmp_path):
    from transformers import AutoConfig

    from trainables.training import memory

    gpu_check = _load("gpu_check")
    family, dims = gpu_check.SHAPES["llama-3.2-1b"]
    AutoConfig.for_model(family, pad_token_id=0, **dims).save_pretrained(tmp_path)  # the config alone: no weights
    run = acceptance.Run(work=tmp_path, out=tmp_path / "r.json", rehearse=False, data=tmp_path, tokenizer=None, shape="llama-3.2-1b",
                         peak_tflops=989.0, gpu_gib=139.8, model=str(tmp_path))
    batch = acceptance.oom_batch(run)
    from transformers import AutoModelForSequenceClassification

    shape = memory.shape_of(AutoConfig.from_pretrained(tmp_path, num_labels=6), AutoModelForSequenceClassification)
    need = lambda b: memory.estimate(shape, "lora", batch=b, seq_len=2048, base_bytes=2).total_gib  # noqa: E731
    assert need(batch) >= 1.5 * 139.8 > need(batch // 2), "runs out of memory for real, and not by a wide margin"
    assert 4 <= batch <= 512


def test_long_rows_join_consecutive_tweets_under_the_first_ones_label(tmp_path, data):
    run = acceptance.Run(work=tmp_path, out=tmp_path / "r.json", rehearse=True, data=data, tokenizer=None, shape="llama-3.2-1b", peak_tflops=None, gpu_gib=None)
    folder = acceptance.long_rows(run)
    lines = [ln.rsplit(";", 1) for ln in (data / "train.txt").read_text().splitlines()]
    rows = list(csv.DictReader(open(folder / "train.csv")))
    assert rows[0]["text"] == " ".join(t for t, _ in lines[:4]) and rows[0]["label"] == lines[0][1]
    assert len(list(csv.DictReader(open(folder / "validation.csv")))) == 32


def full_result() -> dict:
    r = {k: None for k in acceptance.RESULT_KEYS}
    r.update(mode="gpu", gpu="NVIDIA H200", gpu_memory_gb=139.8, peak_bf16_tflops=989.0, torch="2.11.0", commit="abc1234", date="2026-12-03",
             budget_s=480.0, total_s=431.2, phases={"setup": {"status": "ok", "seconds": 12.0}, "mfu": {"status": "skipped", "why": "budget"}},
             sweep_wall_s=95.0, trials_completed=3, trials_failed=0, trials_per_gpu_hour=113.7, packing_trials_per_gpu=8,
             peak_memory_gb_lora=4.1, peak_memory_gb_qlora=2.9, qlora_lora_memory_ratio=0.71, mfu_sweep_lora=0.12, predict_labels=[["joy"], ["anger"]],
             serve_matches_predict=True, oom_batch=64, oom_retries=2, oom_final_micro_batch=16, oom_survived=True, mfu_trial_compiled=0.31)
    return r


def test_the_result_json_has_every_key_with_its_type_and_mfu_as_a_fraction():
    assert acceptance.check_result(full_result()) == []
    bad = full_result()
    bad.update(mfu_trial_eager=31.0, oom_retries="two", unexpected=1)
    del bad["gpu"]
    bad["phases"]["sweep"] = {"status": "maybe"}
    assert sorted(acceptance.check_result(bad)) == sorted([
        "missing key gpu", "unknown key unexpected", "mfu_trial_eager: 31.0 is not a fraction of peak (0-1)",
        "oom_retries: 'two' is not int", "phases.sweep: {'status': 'maybe'}",
    ])
