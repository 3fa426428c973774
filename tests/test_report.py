"""What a sweep teaches, checked on one real Optuna sweep of the demo tracked on a real MLflow
tracking server, with a final stage (the search on 100 training rows, its best configuration
retrained on all 160): each trial's costs, curves and files; the floors and the study report on
the parent run; ``sweeps.report``, ``sweeps.export`` (with and without ``--merge``) and
``sweeps.predict`` on the final model; and the MLflow UI in a real (headless) browser.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sweeps import export as export_cli
from sweeps import predict as predict_cli
from sweeps import report as report_cli
from sweeps.run import main as run_main
from tests import browser
from tests.conftest import local_ray, mlflow_runs
from trainables.training.precision import cpu_flags

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
# Small, but enough training (40 steps at a high learning rate) that trials learn and differ.
SMALL = [
    "--set", "data.rows=200", "--set", "training.epochs=2", "--set", "training.batch_size=16", "--set", "training.max_length=24",
    "--set", "search.max_concurrent_trials=2", "--set", "search_space.overrides.learning_rate={type: loguniform, low: 0.005, high: 0.02}",
    "--set", "data.max_train_rows=100", "--set", "final.epochs=2",  # the demo's final stage, on all 160 rows
]
METRICS = ("accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro", "eval_loss")
COSTS = ("trainable_params", "total_params", "peak_memory_mb", "train_time_s", "wall_time_s", "examples_per_s", "gpu_hours")
REPORT_FILES = (
    "report.md", "leaderboard.csv", "leaderboard.md", "method_comparison.csv", "method_comparison.md",
    "before_vs_best.csv", "before_vs_best.md", "error_analysis.md", "error_analysis.csv", "best_study.yaml", "floors.csv", "floors.md",
    "plots/optimization_history.png", "plots/parallel_coordinate.png", "plots/slice.png",
)


@dataclasses.dataclass
class Sweep:
    folder: Path
    uri: str
    client: object
    parent: object
    trials: list
    out: str  # what the sweep printed

    def artifact(self, run_id: str, path: str, dst: Path) -> Path:
        import mlflow

        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=self.uri))

    def files(self, run_id: str, path: str = "") -> set[str]:
        out = set()
        for f in self.client.list_artifacts(run_id, path or None):
            out |= self.files(run_id, f.path) if f.is_dir else {f.path}
        return out

    def history(self, run_id: str, key: str) -> dict[int, float]:
        return {m.step: m.value for m in self.client.get_metric_history(run_id, key)}

    @property
    def best(self):
        return next(r for r in self.trials if r.info.run_id == self.parent.data.tags["best_run_id"])

    @property
    def search(self) -> list:
        return [r for r in self.trials if r.data.tags["stage"] == "search"]

    @property
    def final(self) -> list:
        return [r for r in self.trials if r.data.tags["stage"] == "final"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mlflow_server) -> Sweep:
    server = mlflow_server  # the test run's one tracking server
    folder = tmp_path_factory.mktemp("report-sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", server)
        mp.delenv("RAY_ADDRESS", raising=False)
        local_ray()
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert run_main(["emotion_demo", "--search", "optuna", "--num-samples", "3", *SMALL]) == 0
    assert not (folder / "mlflow.db").exists()  # everything went to the server
    client, runs = mlflow_runs(server, "emotion_demo")
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return Sweep(folder, server, client, parent, trials, printed.getvalue())


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SWEEPS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_optuna_sweep_on_a_tracking_server_records_every_trial(sweep):
    assert sweep.parent.data.tags["search"] == "optuna" and sweep.parent.info.status == "FINISHED"
    assert sweep.parent.data.tags["pooling"] == "mean"  # MiniLM, read as it was trained to embed
    assert len(sweep.search) == 3 and len(sweep.final) == 1
    for run in sweep.trials:
        assert 5e-3 <= float(run.data.params["learning_rate"]) <= 2e-2  # sampled from the overridden range
        assert run.info.status == "FINISHED" and "f1_macro" in run.data.metrics


def test_the_searchs_cost_to_target_is_on_the_parent_in_the_console_and_in_the_report(sweep, tmp_path):
    """What the search (not the final stage) spent before any trial first came within 1% of the
    search's best, read back independently from the trials' MLflow records."""
    m = sweep.parent.data.metrics
    points = [(p.timestamp, p.value) for r in sweep.search for p in sweep.client.get_metric_history(r.info.run_id, "f1_macro")]
    best = max(v for _, v in points)
    first = min(t for t, v in points if v >= best - 0.01 * abs(best))
    started = [r.info.start_time for r in sweep.search]
    assert m["to_target_trials"] == sum(s <= first for s in started) >= 1
    assert m["to_target_wall_s"] == pytest.approx((first - min(started)) / 1000)
    spent = math.fsum(r.data.metrics["cpu_hours"] for r in sweep.search)  # each search trial's last report: the search's total
    assert 0 < m["to_target_cpu_hours"] <= spent and m["to_target_share"] == pytest.approx(m["to_target_cpu_hours"] / spent)
    assert "to_target_gpu_hours" not in m, "no trial held a GPU"
    line = f"cost to target: within 1% of the search's best f1_macro ({best:.4f}) after {int(m['to_target_trials'])} of 3 trials"
    assert line in sweep.out
    assert line in sweep.artifact(sweep.parent.info.run_id, "report/report.md", tmp_path).read_text()


def test_final_stage_retrains_the_search_winner_on_every_row_and_is_the_studys_model(sweep, tmp_path):
    p, m = sweep.parent.data.params, sweep.parent.data.metrics
    assert (p["data.train_rows"], p["final.train_rows"]) == ("100", "160")  # search on a subset, final on all
    (final,) = sweep.final
    winner = next(r for r in sweep.search if r.info.run_id == sweep.parent.data.tags["search_best_run_id"])
    search_scores = {r.info.run_id: max(sweep.history(r.info.run_id, "f1_macro").values()) for r in sweep.search}
    assert search_scores[winner.info.run_id] == max(search_scores.values())
    chosen = {k: v for k, v in final.data.params.items() if not k.startswith("study.") and k != "seed"}
    assert chosen == {k: v for k, v in winner.data.params.items() if not k.startswith("study.")}
    assert final.data.params["study.data.max_train_rows"] == "None" and final.data.params["seed"] == "42"
    assert sweep.best.info.run_id == final.info.run_id  # report, export and predict use the final model
    assert m["best_f1_macro"] == pytest.approx(max(sweep.history(final.info.run_id, "f1_macro").values()))
    assert m["final_f1_macro_mean"] == pytest.approx(m["best_f1_macro"]) and m["final_f1_macro_std"] == 0
    assert m["trials_final_trials"] == 1 and m["trials_trials"] == 3


def test_floors_are_fitted_on_the_final_rows_logged_and_compared(sweep, tmp_path):
    m, parent_id = sweep.parent.data.metrics, sweep.parent.info.run_id
    for key in ("floor_majority_accuracy", "floor_tfidf_logreg_f1_macro", "floor_tfidf_logreg_test_f1_macro"):
        assert 0 <= m[key] <= 1, key
    assert m["floor_tfidf_logreg_f1_macro"] > m["floor_majority_f1_macro"]
    logged = json.loads(sweep.artifact(parent_id, "floors.json", tmp_path).read_text())
    assert [f["name"] for f in logged["floors"]] == ["majority", "tfidf_logreg"]
    table = pd.read_csv(sweep.artifact(parent_id, "report/floors.csv", tmp_path)).set_index("model")
    model_row = next(i for i in table.index if i.startswith("final model"))
    assert table.loc[model_row, "test_f1_macro"] == pytest.approx(sweep.best.data.metrics["test_f1_macro"])
    assert table.loc["floor: tfidf_logreg", "f1_macro"] == pytest.approx(m["floor_tfidf_logreg_f1_macro"])
    beats = sweep.best.data.metrics["test_f1_macro"] > m["floor_tfidf_logreg_test_f1_macro"]
    assert sweep.parent.data.tags["beats_floor"] == str(beats).lower()
    text = sweep.artifact(parent_id, "report/report.md", tmp_path).read_text()
    assert ("above the floor: f1_macro" if beats else "BELOW THE FLOOR: f1_macro") in text


def test_each_trial_run_has_costs_curves_base_scores_and_its_best_checkpoint_files(sweep, tmp_path):
    rows = json.loads(sweep.artifact(sweep.parent.info.run_id, "data.json", tmp_path).read_text())["rows"]
    for run in sweep.trials:
        m, run_id = run.data.metrics, run.info.run_id
        for key in COSTS + tuple(f"before_{k}" for k in METRICS):
            assert key in m, key
        assert m["gpu_hours"] == 0  # CPU trials
        assert m["eval_time_s"] > 0  # the evaluations' own seconds
        assert m["trainable_params"] < m["total_params"] / 50
        f1 = sweep.history(run_id, "f1_macro")
        points = 4 if run.data.tags["status"] == "completed" else 2  # ASHA's grace period: 2
        assert len(f1) == points and len(sweep.history(run_id, "train_loss")) == points  # learning curves
        files = sweep.files(run_id)
        assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "eval/predictions.csv",
                "eval/per_class.csv", "eval/confusion_matrix.csv", "eval/confusion_matrix.png"} <= files

        # The files come from the trial's best checkpoint: they reproduce its best eval point.
        from safetensors.numpy import load_file

        local = tmp_path / run_id
        weights = load_file(str(sweep.artifact(run_id, "adapter/adapter_model.safetensors", local)))
        assert all(("lora_" in k or "ia3_" in k or "classifier" in k) for k in weights), "adapter only, no base weights"
        per_class = pd.read_csv(sweep.artifact(run_id, "eval/per_class.csv", local))
        assert per_class["f1"].mean() == pytest.approx(max(f1.values()), abs=1e-6)
        assert per_class["support"].sum() == rows["validation"]
        matrix = pd.read_csv(sweep.artifact(run_id, "eval/confusion_matrix.csv", local), index_col=0)
        assert matrix.values.sum() == rows["validation"] and list(matrix.index) == list(per_class["label"])
        pred = pd.read_csv(sweep.artifact(run_id, "eval/predictions.csv", local), keep_default_na=False)
        accuracy = (pred["label"] == pred["prediction"]).mean()
        at_best = [s for s, v in f1.items() if v == max(f1.values())]
        assert any(accuracy == pytest.approx(sweep.history(run_id, "accuracy")[s], abs=1e-9) for s in at_best)
        base_accuracy = (pred["label"] == pred["before_prediction"]).mean()
        assert base_accuracy == pytest.approx(m["before_accuracy"], abs=1e-9)


def test_parent_run_holds_the_study_report(sweep, tmp_path):
    parent_id = sweep.parent.info.run_id
    files = sweep.files(parent_id)
    assert {"study.yaml", "search_space.yaml", "data.json"} <= files
    assert {f"report/{f}" for f in REPORT_FILES} <= files
    # Optuna's importance needs two finished trials; ASHA may have stopped all but one.
    completed = sum(r.data.tags["status"] == "completed" for r in sweep.search)  # Optuna's view: the search only
    if completed >= 2:
        assert "report/plots/param_importances.png" in files
    else:
        assert "plot param_importances.png not drawn" in sweep.artifact(parent_id, "report/report.md", tmp_path).read_text()
    board = pd.read_csv(sweep.artifact(parent_id, "report/leaderboard.csv", tmp_path))
    assert len(board) == 4 and list(board["f1_macro"]) == sorted(board["f1_macro"], reverse=True)
    model_row = board.set_index("run_id").loc[sweep.best.info.run_id]
    assert model_row["stage"] == "final" and model_row["f1_macro"] == pytest.approx(sweep.parent.data.metrics["best_f1_macro"])
    methods = pd.read_csv(sweep.artifact(parent_id, "report/method_comparison.csv", tmp_path))
    assert set(methods["method"]) == {r.data.tags["method"] for r in sweep.trials}
    for col in ("best_f1_macro", "trainable_params", "peak_memory_mb", "train_time_s", "before_f1_macro"):
        assert methods[col].notna().all(), col
    base_vs_best = pd.read_csv(sweep.artifact(parent_id, "report/before_vs_best.csv", tmp_path)).set_index("metric")
    assert base_vs_best.loc["f1_macro", "fine-tuned (best trial)"] == pytest.approx(model_row["f1_macro"])
    assert base_vs_best.loc["f1_macro", "before training"] == pytest.approx(sweep.best.data.metrics["before_f1_macro"])
    grouped = pd.read_csv(sweep.artifact(parent_id, "report/error_analysis.csv", tmp_path), keep_default_na=False)
    rows = json.loads(sweep.artifact(parent_id, "data.json", tmp_path).read_text())["rows"]
    assert len(grouped) == rows["validation"]
    text = sweep.artifact(parent_id, "report/error_analysis.md", tmp_path).read_text()
    counts = grouped["group"].value_counts()
    for group in ("both right", "right before training, wrong tuned", "wrong before training, right tuned", "both wrong"):
        assert f"| {group} | {counts.get(group, 0)} |" in text


def test_best_config_file_runs_the_best_trial_as_a_study(sweep, tmp_path, capsys):
    path = sweep.artifact(sweep.parent.info.run_id, "report/best_study.yaml", tmp_path)
    study = yaml.safe_load(path.read_text())
    assert study["methods"] == [sweep.best.data.tags["method"]] and study["search"]["algorithm"] == "grid"
    assert study["search_space"]["overrides"]["learning_rate"] == float(sweep.best.data.params["learning_rate"])
    assert run_main([str(path), "--dry-run"]) == 0
    assert "1 trial" in capsys.readouterr().out


def test_report_command_prints_the_leaderboard_and_writes_the_same_report(sweep, tmp_path, capsys):
    out = tmp_path / "report"
    assert report_cli.main(["emotion_demo", "--tracking-uri", sweep.uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Leaderboard" in printed and "Methods" in printed and "Floors (no fine-tuning) vs the study's model" in printed
    assert "Before training (fresh random task head: chance level, not a baseline) vs after" in printed
    for run in sweep.trials:
        assert run.data.tags["trial_name"] in printed
    for f in REPORT_FILES:
        assert (out / f).is_file(), f
    logged = pd.read_csv(sweep.artifact(sweep.parent.info.run_id, "report/leaderboard.csv", tmp_path))
    again = pd.read_csv(out / "leaderboard.csv")
    assert list(again["run_id"]) == list(logged["run_id"]) and np.allclose(again["f1_macro"], logged["f1_macro"])
    # by parent run id too; an unknown run is bad input
    assert report_cli.main([sweep.parent.info.run_id, "--tracking-uri", sweep.uri, "--out", str(tmp_path / "r2")]) == 0
    assert report_cli.main(["0" * 32, "--tracking-uri", sweep.uri]) == 2
    assert "no MLflow run" in capsys.readouterr().err


def plain_load(folder: Path, full_precision: bool = False):
    """How a user loads the export, as its model card says: transformers + peft only (the
    demo's MiniLM classifies by the mean of its tokens: the export ships that class as remote
    code, and the card loads it with transformers' own dynamic-module loader)."""
    from peft import PeftModel
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BitsAndBytesConfig,
    )
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    info = json.loads((folder / "sweep_export.json").read_text())
    kwargs = {}
    if info["quantization"] and not full_precision:
        kwargs = {"quantization_config": BitsAndBytesConfig.from_dict(info["quantization"]), "device_map": "cpu"}
    config = AutoConfig.from_pretrained(folder)
    head = AutoModelForSequenceClassification
    if info["remote_code"]:
        head = get_class_from_dynamic_module(config.auto_map["AutoModelForSequenceClassification"], folder)
        assert head.__name__.startswith("MeanPooled") and "get_class_from_dynamic_module" in (folder / "README.md").read_text()
    base = head.from_pretrained(info["base_model"], config=config, **kwargs)
    return PeftModel.from_pretrained(base, folder).eval(), AutoTokenizer.from_pretrained(folder)


def logits_of(model, tokenizer, texts: list[str], max_length: int = 32):
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            enc = tokenizer(texts[i:i + 32], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            out.append(model(**enc).logits.float().numpy())
    return np.concatenate(out)


def test_exported_adapter_reloads_with_plain_peft_and_predicts_as_the_sweep_did(sweep, tmp_path, cache, capsys):
    out = tmp_path / "export"
    assert export_cli.main(["emotion_demo", "--tracking-uri", sweep.uri, "--out", str(out)]) == 0
    info = json.loads((out / "sweep_export.json").read_text())
    assert info["trial_run_id"] == sweep.best.info.run_id and not info["merged"]
    assert (out / "README.md").is_file() and (out / "tokenizer.json").is_file()
    assert sum(f.stat().st_size for f in out.iterdir()) < 5 * 2**20  # adapter + tokenizer, no base weights

    # The sweep's own validation predictions of this checkpoint.
    pred = pd.read_csv(sweep.artifact(sweep.best.info.run_id, "eval/predictions.csv", tmp_path), keep_default_na=False)
    model, tokenizer = plain_load(out)
    logits = logits_of(model, tokenizer, list(pred["text"]))
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    assert [names[i] for i in logits.argmax(-1)] == list(pred["prediction"])
    # A 4-bit base loaded plainly on a CPU with AVX512-BF16 runs bitsandbytes' bf16 inference
    # kernel (the sweep scores in fp32): the same answers, confidences within bf16 rounding.
    packed = info["quantization"] and {"avx512_bf16", "amx_bf16"} & cpu_flags()
    assert np.allclose(probs.max(-1), pred["confidence"], atol=1e-2 if packed else 1e-3)

    # sweeps.predict gives the sweep's answers (it keeps 4-bit layers on the sweep's layout).
    texts = list(pred["text"][:5])
    capsys.readouterr()
    assert predict_cli.main(["emotion_demo", *texts, "--json", "--tracking-uri", sweep.uri]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["labels"][0] for r in rows] == list(pred["prediction"][:5])
    assert np.allclose([max(r["scores"].values()) for r in rows], pred["confidence"][:5], atol=2e-4)  # the file rounds to 4 decimals
    assert (cache / "adapters" / sweep.best.info.run_id / "sweep_export.json").is_file()


def test_merged_export_is_a_plain_model_equal_to_its_adapter_on_the_full_precision_base(sweep, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    for run in sweep.search:  # every method the sweep tried
        adapter, merged = tmp_path / f"a-{run.info.run_id}", tmp_path / f"m-{run.info.run_id}"
        assert export_cli.main([sweep.parent.info.run_id, "--trial", run.info.run_id, "--tracking-uri", sweep.uri, "--out", str(adapter)]) == 0
        assert export_cli.main([sweep.parent.info.run_id, "--trial", run.info.run_id, "--tracking-uri", sweep.uri, "--out", str(merged), "--merge"]) == 0
        assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
        texts = ["i feel so happy about my new job", "right now i feel so gloomy", "i am scared of the exam", "what a lovely surprise"]
        plain = AutoModelForSequenceClassification.from_pretrained(merged, trust_remote_code=True).eval()  # as its card says
        ref_model, tokenizer = plain_load(adapter, full_precision=True)
        assert np.allclose(logits_of(plain, AutoTokenizer.from_pretrained(merged), texts), logits_of(ref_model, tokenizer, texts), atol=1e-4), run.data.tags["method"]


def test_predict_reads_a_file_and_bad_input_exits_2_writing_nothing(sweep, tmp_path, cache, capsys):
    file = tmp_path / "texts.txt"
    file.write_text("i feel so happy today\n\ni am terrified of spiders\nlately i feel so lonely\n")
    assert predict_cli.main(["emotion_demo", "--file", str(file), "--tracking-uri", sweep.uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].endswith("\ti am terrified of spiders")
    assert predict_cli.main(["emotion_demo", "--tracking-uri", sweep.uri]) == 2
    assert "nothing to predict" in capsys.readouterr().err
    assert predict_cli.main(["no_such_study", "hi"]) == 2
    assert "unknown study" in capsys.readouterr().err
    out = tmp_path / "hub"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    with pytest.MonkeyPatch.context() as mp:
        for key in set(os.environ) - set(env):
            mp.delenv(key)
        assert export_cli.main(["emotion_demo", "--tracking-uri", sweep.uri, "--out", str(out), "--push-to-hub", "me/demo"]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err and not out.exists()
    # a run that is not one of this study's trials (here: the parent itself)
    assert export_cli.main(["emotion_demo", "--tracking-uri", sweep.uri, "--out", str(out), "--trial", sweep.parent.info.run_id]) == 2
    assert "--trial" in capsys.readouterr().err and not out.exists()
    assert predict_cli.main(["emotion_demo", "hi", "--tracking-uri", sweep.uri, "--trial", "0" * 32]) == 2
    assert "is not a trial run" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert export_cli.main(["emotion_demo", "--tracking-uri", sweep.uri, "--out", str(busy)]) == 2
    assert (busy / "notes.txt").read_text() == "mine" and len(list(busy.iterdir())) == 1


# What the study's parent run shows in the runs table, collapsed (MLflow UI column ids).
PARENT_COLUMNS = {
    "metrics.`best_f1_macro`": ("metrics", "best_f1_macro"), "metrics.`trials_completed`": ("metrics", "trials_completed"),
    "metrics.`trials_failed`": ("metrics", "trials_failed"), "metrics.`wall_time_s`": ("metrics", "wall_time_s"),
    "tags.`best.method`": ("tags", "best.method"), "tags.`best.learning_rate`": ("tags", "best.learning_rate"),
}


def test_parent_run_says_what_the_study_found(sweep):
    """Best scores, the best trial's params, trial counts and costs on the parent run itself."""
    m, tags = sweep.parent.data.metrics, sweep.parent.data.tags
    best = sweep.best
    assert m["best_f1_macro"] == pytest.approx(max(sweep.history(best.info.run_id, "f1_macro").values()))
    assert m["best_test_f1_macro"] == pytest.approx(best.data.metrics["test_f1_macro"])
    for key, value in best.data.params.items():
        if not key.startswith("study."):
            assert float(tags[f"best.{key}"]) == pytest.approx(float(value)) if key not in ("method", "lr_scheduler", "target_modules") else tags[f"best.{key}"] == value
    assert tags["best.method"] == best.data.tags["method"]
    search = [r.data.tags["status"] for r in sweep.search]
    assert m["trials_trials"] == len(search) and m["trials_completed"] == search.count("completed")
    assert m["trials_early_stopped"] == search.count("early_stopped") and m["trials_failed"] == search.count("failed") == 0
    assert m["trials_final_trials"] == len(sweep.final)
    assert m["gpu_hours"] == pytest.approx(sum(r.data.metrics["gpu_hours"] for r in sweep.trials)) and m["gpu_hours"] == 0  # CPU
    assert 0 < m["wall_time_s"] <= (sweep.parent.info.end_time - sweep.parent.info.start_time) / 1000
    assert not [k for k in m if k.startswith("best_") and k[5:] in ("progress", "epoch", "learning_rate", "step") or "/" in k]


def test_console_ends_with_the_leaderboard_the_floor_and_where_to_look(sweep):
    out = sweep.out[sweep.out.index("\nleaderboard"):]
    board = [ln for ln in out.splitlines() if ln.startswith("| ") and "run_trial_" in ln]
    assert len(board) == min(5, len(sweep.trials))
    best_name = sweep.best.data.tags["trial_name"]
    assert board[0].startswith(f"| 1 | {best_name} |")  # the study's model first
    assert "floor tfidf_logreg (" in out, out
    if sweep.parent.data.tags["beats_floor"] == "true":  # (a model below the floor is said on stderr)
        assert "above the floor" in out
    parent = sweep.parent.info.run_id
    for command in ("sweeps.report", "sweeps.serve", "sweeps.predict"):  # ($MLFLOW_TRACKING_URI is the store: no --tracking-uri)
        assert f"python -m {command} {parent} " in out, command
    assert f"open {sweep.uri} in a browser" in out


def test_mlflow_ui_lists_the_study_and_its_trials_in_a_real_browser(sweep, tmp_path):
    experiment = sweep.parent.info.experiment_id
    shot = tmp_path / "mlflow_ui.png"
    with browser.page(width=1500, height=640) as page:
        page.goto(f"{sweep.uri}/#/experiments/{experiment}/runs")
        page.get_by_text("matching runs").wait_for(timeout=60_000)
        close = page.get_by_role("button", name="Close")  # the assistant side panel, if shown
        if close.count():
            close.first.click()
        names = page.locator("[role=gridcell][col-id='attributes.`Run Name`']")
        # The collapsed parent row answers "what did this study find" once its columns are shown.
        page.set_viewport_size({"width": 3000, "height": 640})  # the grid renders visible columns only
        page.get_by_role("button", name="Columns", exact=True).click()  # not "Show more columns (N total)"
        menu = page.locator("[data-radix-popper-content-wrapper]")
        for _, name in PARENT_COLUMNS.values():
            menu.get_by_text(name, exact=True).first.click()
        page.keyboard.press("Escape")
        assert names.count() == 1  # collapsed: only the study's row
        for col, (kind, name) in PARENT_COLUMNS.items():
            cell = page.locator(f"[role=gridcell][col-id='{col}']")
            cell.first.wait_for(timeout=30_000)
            shown = cell.all_inner_texts()[0].strip()
            value = getattr(sweep.parent.data, kind)[name]
            assert (float(shown) == pytest.approx(value, rel=1e-3)) if kind == "metrics" else shown == value, (name, shown, value)
        page.set_viewport_size({"width": 2100, "height": 640})  # the README's screenshot: names and the study's columns
        names.locator("button").first.click()  # expand the study's parent run
        page.get_by_text(sweep.trials[0].data.tags["trial_name"]).wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(shot))
        listed = " ".join(names.all_inner_texts())
    assert sweep.parent.info.run_name in listed
    for run in sweep.trials:
        assert run.data.tags["trial_name"] in listed
    assert shot.stat().st_size > 10_000
    if os.environ.get("SWEEPS_UPDATE_DOCS"):  # refresh the README's screenshot
        shutil.copy(shot, REPO / "docs" / "mlflow_ui.png")


def test_mlflow_models_page_lists_the_studys_model_with_its_champion_alias(sweep, tmp_path):
    """The demo's model in MLflow's Model Registry, as the Models page shows it."""
    version = sweep.parent.data.tags["registered_model_version"]
    assert str(sweep.client.get_registered_model("emotion_demo").aliases.get("champion")) == version  # a str over REST, an int from SQLite
    shot = tmp_path / "mlflow_models.png"
    with browser.page(width=1300, height=900) as page:
        page.goto(f"{sweep.uri}/#/models/emotion_demo")
        page.get_by_role("link", name=f"Version {version}", exact=True).first.wait_for(timeout=60_000)
        page.get_by_text("champion").first.wait_for(timeout=30_000)
        close = page.get_by_role("button", name="Close")  # the assistant side panel, if shown
        if close.count():
            close.first.click()
        page.get_by_text("champion").first.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("SWEEPS_UPDATE_DOCS"):  # refresh the docs' screenshot
        shutil.copy(shot, REPO / "docs" / "mlflow_models.png")


def test_served_app_answers_as_predict_does_in_a_real_browser(sweep, tmp_path, cache, capsys):
    """``sweeps.serve`` in its own process, used from headless Chromium: the study it names, the
    label ``sweeps.predict`` gives for the same text, the base model beside it, and a validation
    example that fills the input when clicked."""
    texts = ["i feel so happy about my new job", "right now i feel so gloomy"]
    assert predict_cli.main(["emotion_demo", *texts, "--json", "--tracking-uri", sweep.uri]) == 0
    expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    env = {**os.environ, "SWEEPS_CACHE": str(cache), "MLFLOW_TRACKING_URI": sweep.uri}
    shot = tmp_path / "serve.png"
    with browser.serving(["emotion_demo"], tmp_path / "serve.log", env) as url, browser.page() as page:
        page.goto(url)
        header = page.locator("#served").inner_text()
        assert sweep.best.data.tags["trial_name"] in header and sweep.best.data.tags["method"] in header and "f1_macro" in header
        for text, want in zip(texts, expected):
            page.goto(url)  # a fresh page: the answer shown is this text's, not the previous one's
            page.locator("#input-text textarea").fill(text)
            labels = page.locator("#tuned-labels textarea")
            page.locator("#submit").click()
            page.wait_for_function("document.querySelector('#tuned-labels textarea').value.length > 0", timeout=60_000)
            assert labels.input_value() == ", ".join(want["labels"])
            top = max(want["scores"], key=want["scores"].get)
            assert page.locator("#tuned-scores").inner_text().split("\n")[1].strip() == top
            assert "base model" in page.locator("#base-scores").inner_text()
        page.screenshot(path=str(shot), full_page=True)
        example = page.get_by_text("validation examples").locator("xpath=..").locator("button").first
        example.click()
        page.wait_for_timeout(500)
        assert page.locator("#input-text textarea").input_value()[:30] == example.inner_text().strip()[:30]
    if os.environ.get("SWEEPS_UPDATE_DOCS"):
        shutil.copy(shot, REPO / "docs" / "serve.png")
