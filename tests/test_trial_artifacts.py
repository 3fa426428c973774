"""Units of the report path that need no Ray cluster: which checkpoint a trial logs, reading it
through a storage URI, the eval files, error-analysis groups, and the markdown tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from sweeps.reporting import error_analysis
from sweeps.reporting.leaderboard import markdown
from sweeps.tracking import artifacts
from sweeps.tracking.artifacts import BestCheckpoints, Pictures, log_best
from trainables.evaluation import eval_files

NAMES = ["anger", "joy", "sadness"]


def checkpoint(folder, logits, labels, base=None):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"x")
    eval_files.write(str(folder), logits, labels, NAMES, False, {"text": [f"t{i}" for i in range(len(labels))]}, base)
    return str(folder)


def test_best_checkpoint_by_metric_and_mode_earlier_wins_ties():
    best = BestCheckpoints("f1_macro", "max")
    for value, path in ((0.2, "a"), (0.5, "b"), (0.5, "c"), (0.1, "d")):
        best.add("t", {"f1_macro": value, "checkpoint_path": path})
    best.add("t", {"f1_macro": 0.9})  # a report without checkpoint is ignored
    assert best.ranked("t") == ["b", "c", "a", "d"]
    low = BestCheckpoints("eval_loss", "min")
    for value, path in ((0.7, "a"), (0.3, "b")):
        low.add("t", {"eval_loss": value, "checkpoint_path": path})
    assert low.ranked("t") == ["b", "a"] and low.ranked("other") == []


def test_log_best_reads_storage_uris_and_skips_deleted_checkpoints(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e", artifact_location=str(tmp_path / "art")))
    logits = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    labels = np.array([0, 1, 0, 2])
    kept = checkpoint(tmp_path / "ckpt_2", logits, labels, base=np.zeros((4, 3)) + [0, 1, 0])
    gone = str(tmp_path / "ckpt_1")  # deleted by Train (num_to_keep=1)
    # Train reports paths without a scheme; the storage root says which filesystem they are on.
    pictures = Pictures(uri)
    assert log_best(client, run.info.run_id, [gone, kept], "t", storage=f"file://{tmp_path}", pictures=pictures) == kept
    pictures.wait()  # the confusion matrix's PNG is drawn in another process, logged when drawn
    files = {f.path for f in client.list_artifacts(run.info.run_id, "adapter")} | {f.path for f in client.list_artifacts(run.info.run_id, "eval")}
    assert files == {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "eval/predictions.csv",
                     "eval/per_class.csv", "eval/confusion_matrix.csv", "eval/confusion_matrix.png"}
    assert client.get_run(run.info.run_id).data.tags["best_checkpoint"] == kept
    assert log_best(client, run.info.run_id, [gone], "t", storage=str(tmp_path), pictures=pictures) is None


def test_log_best_falls_back_to_the_checkpoint_train_kept(tmp_path):
    # ASHA stopped the trial after its worker saved checkpoint 2: Train (num_to_keep=1) deleted
    # checkpoint 1, the only one Tune heard of; checkpoint 2's result never reached Tune.
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("e", artifact_location=str(tmp_path / "art")))
    trial = tmp_path / "_train" / "trial-1"
    kept = checkpoint(trial / "checkpoint_2026-11-23_07-59-25.136804", np.eye(3), np.arange(3))
    (trial / "checkpoint_manager_snapshot.json").write_text("{}")
    reported = str(trial / "checkpoint_2026-11-23_07-59-24.875262")
    assert log_best(client, run.info.run_id, [reported], "t", storage=str(tmp_path), pictures=Pictures(client.tracking_uri)) == kept
    assert {f.path for f in client.list_artifacts(run.info.run_id, "adapter")} == {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"}


def test_a_drawing_process_that_died_is_replaced_and_later_pictures_are_logged(tmp_path):
    """The driver's one drawing process is killed (out of memory, a signal): the picture it was
    drawing is lost and tagged on its run, the study goes on, and the next trial's is drawn by a
    new process."""
    import os
    import signal

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    matrix = "label,anger,joy\nanger,3,1\njoy,0,4\n"
    pictures = Pictures(uri)
    first, second = client.create_run(exp).info.run_id, client.create_run(exp).info.run_id
    pictures.confusion(first, matrix, "t")
    pictures.wait()
    pool = artifacts._drawing_process()
    for process in list(pool._processes.values()):  # its one worker process, spawned by this one
        os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=30)
    pictures.confusion(second, matrix, "t")  # submitted to the dead pool, or to its replacement
    pictures.wait()
    third = client.create_run(exp).info.run_id
    pictures.confusion(third, matrix, "t")
    pictures.wait()
    assert artifacts._drawing_process() is not pool
    for run_id in (first, third):
        assert {f.path for f in client.list_artifacts(run_id, "eval")} == {"eval/confusion_matrix.png"}
    second_files = {f.path for f in client.list_artifacts(second, "eval")}
    assert second_files == {"eval/confusion_matrix.png"} or "artifacts_error" in client.get_run(second).data.tags


def test_eval_files_and_error_groups_agree_with_the_predictions(tmp_path):
    logits = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    base = np.array([[0, 2.0, 0], [0, 2.0, 0], [2.0, 0, 0], [0, 2.0, 0]])
    labels = np.array([0, 1, 0, 2])
    folder = checkpoint(tmp_path / "c", logits, labels, base)
    pred = pd.read_csv(f"{folder}/eval/predictions.csv", keep_default_na=False)
    assert list(pred["prediction"]) == ["anger", "joy", "joy", "sadness"]
    assert list(pred["before_prediction"]) == ["joy", "joy", "anger", "joy"]
    matrix = pd.read_csv(f"{folder}/eval/confusion_matrix.csv", index_col=0)
    assert matrix.loc["anger", "joy"] == 1 and matrix.values.trace() == 3
    per_class = pd.read_csv(f"{folder}/eval/per_class.csv").set_index("label")
    assert per_class.loc["anger", "recall"] == 0.5 and per_class.loc["joy", "precision"] == 0.5
    grouped = error_analysis.with_groups(pred)
    assert list(grouped["group"]) == ["wrong before training, right tuned", "both right", "right before training, wrong tuned", "wrong before training, right tuned"]
    counts = error_analysis.group_counts(grouped).set_index("group")["count"].to_dict()
    assert counts == {"both right": 1, "right before training, wrong tuned": 1, "wrong before training, right tuned": 2, "both wrong": 0}
    text = error_analysis.report_markdown(grouped)
    assert "| anger | joy | 1 |" in text and "gets 1 wrong (25.0%)" in text


def test_multi_label_files_use_label_sets():
    import tempfile

    logits = np.array([[1.0, 1.0, -1.0], [-1.0, -1.0, -1.0]])
    labels = np.array([[1, 1, 0], [0, 0, 1]])
    with tempfile.TemporaryDirectory() as tmp:
        eval_files.write(tmp, logits, labels, NAMES, True, {"text": ["a", "b"]})
        pred = pd.read_csv(f"{tmp}/eval/predictions.csv", keep_default_na=False)
        matrix = pd.read_csv(f"{tmp}/eval/confusion_matrix.csv", index_col=0)
    assert list(pred["label"]) == ["anger|joy", "sadness"] and list(pred["prediction"]) == ["anger|joy", ""]
    assert list(matrix.columns) == ["TN", "FP", "FN", "TP"] and matrix.loc["sadness", "FN"] == 1
    assert list(error_analysis.with_groups(pred)["correct"]) == [True, False]


def test_markdown_tables_escape_pipes_and_format_numbers():
    frame = pd.DataFrame([{"a": "x|y", "b": 1234567.0, "c": 0.123456, "d": None}])
    assert markdown(frame).splitlines()[2] == "| x\\|y | 1,234,567 | 0.1235 |  |"


def test_the_drawing_process_ends_with_a_driver_that_was_killed(tmp_path):
    """A driver that dies without shutting down (SIGKILL, os._exit) takes its drawing process
    with it, instead of leaving a 280 MB process behind for good."""
    import os
    import subprocess
    import sys
    import time

    driver = (
        "import os\n"
        "from sweeps.tracking import artifacts\n"
        "print(artifacts._drawing_process().submit(os.getpid).result(), flush=True)\n"
        "os._exit(0)\n"
    )
    out = tmp_path / "driver.out"  # a file, not a pipe: an orphaned worker would hold a pipe open
    with out.open("w") as f:
        subprocess.run([sys.executable, "-c", driver], stdout=f, stderr=subprocess.DEVNULL, timeout=120, check=True)
    worker = int(out.read_text().split()[-1])
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.kill(worker, 9)
    raise AssertionError(f"the drawing process {worker} outlived its driver")
