"""A trial's files in MLflow: the adapter of its best checkpoint and that checkpoint's
validation report (predictions, per-class scores, confusion matrix as CSV and PNG).

Runs in the driver when a trial ends, reading the checkpoint from Ray storage (a local folder
or s3://...), so workers never need to reach the MLflow store.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from mlflow.tracking import MlflowClient
from pyarrow.fs import FileType

from core import outcomes
from trainables.evaluation import eval_files

ADAPTER = "adapter"  # artifact folder of the adapter (+ trained head), what export/predict load
# peft adapters; the `head` baseline's head weights; the `full` baseline's whole model (save_pretrained)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "head.safetensors", "config.json", "model.safetensors", "generation_config.json")


class BestCheckpoints:
    """Each trial's checkpoints by score: the best is the one Ray Train (or, for a trial in
    process, trainables.training.kept_checkpoints) keeps (the best by the study metric, and
    the latest); the others are fallbacks in case a tie was broken the other way."""

    def __init__(self, metric: str, mode: str) -> None:
        self.metric, self.mode = metric, mode
        self._seen: dict[str, list[tuple[float, str]]] = {}

    def add(self, trial: str, result: dict) -> None:
        """``checkpoint_path``: where the trial kept the checkpoint it reported with ``result``
        (a Train run's TuneReportCallback says, and so does a trial in process)."""
        path, value = result.get("checkpoint_path"), result.get(self.metric)
        if isinstance(path, str) and outcomes.usable(value):
            self._seen.setdefault(trial, []).append((float(value), path))

    def ranked(self, trial: str) -> list[str]:
        """Best first (core.outcomes' rule: on a tie, the earlier checkpoint)."""
        return [path for _, path in sorted(self._seen.get(trial, []), key=lambda e: outcomes.rank_key(e[0], False, self.mode))]


def log_best(client: MlflowClient, run_id: str, candidates: list[str], title: str, storage: str, pictures: "Pictures") -> Optional[str]:
    """Log the first existing checkpoint of ``candidates`` to ``run_id``; returns its path.
    ``storage``: the Ray storage root; on s3:// (or any URI) the paths Train reports carry no
    scheme and are read through that storage's filesystem. ``pictures`` draws the confusion
    matrix's PNG in another process and logs it when drawn (``Pictures.wait``: all logged)."""
    from pyarrow.fs import FileSystem
    from ray.train import Checkpoint

    filesystem = FileSystem.from_uri(storage)[0] if "://" in storage else None
    for path in candidates + _kept_by_train(candidates, filesystem):
        try:
            checkpoint = Checkpoint(path, filesystem=filesystem)
            if checkpoint.filesystem.get_file_info(checkpoint.path).type != FileType.Directory:
                continue
        except (OSError, ValueError):
            continue
        with checkpoint.as_directory() as folder:
            _log_folder(client, run_id, Path(folder), title, pictures)
        client.set_tag(run_id, "best_checkpoint", path)
        return path
    return None


def _kept_by_train(reported: list[str], filesystem: Any) -> list[str]:
    """Checkpoints Train kept beside the reported ones, newest first. When ASHA stops a trial
    right after its worker saved a better checkpoint, Train (num_to_keep=1, same metric) has
    already deleted every checkpoint Tune heard of and kept one whose result never reached Tune."""
    from pyarrow.fs import FileSelector, LocalFileSystem

    fs = filesystem or LocalFileSystem()
    found: set[str] = set()
    for parent in {path.rstrip("/").rsplit("/", 1)[0] for path in reported if "/" in path}:
        try:
            infos = fs.get_file_info(FileSelector(parent))
        except (OSError, ValueError):
            continue
        found |= {i.path for i in infos if i.type == FileType.Directory and i.base_name.startswith("checkpoint_")}
    return sorted(found - set(reported), reverse=True)  # Train names them checkpoint_<timestamp>


def _log_folder(client: MlflowClient, run_id: str, folder: Path, title: str, pictures: "Pictures") -> None:
    for name in ADAPTER_FILES:
        if (folder / name).is_file():
            client.log_artifact(run_id, str(folder / name), ADAPTER)
    report = folder / eval_files.FOLDER
    if report.is_dir():
        client.log_artifacts(run_id, str(report), eval_files.FOLDER)
        matrix = report / eval_files.CONFUSION
        if matrix.is_file():
            pictures.confusion(run_id, matrix.read_text(), title)


CONFUSION_PNG = "confusion_matrix.png"


_DRAWING: Optional[Any] = None


def _drawing_process(broken: Optional[Any] = None) -> Any:
    """One process per driver that draws every trial's picture (spawned on first use, kept for
    the driver's life): matplotlib holds the GIL for a whole drawing, so a thread would still
    stall Tune's event loop. ``broken``: the pool whose process died (killed, out of memory),
    which refuses all later work: a new one replaces it."""
    global _DRAWING
    if _DRAWING is None or _DRAWING is broken:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _DRAWING = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent, initargs=(os.getpid(),),
        )
    return _DRAWING


def _exit_with_parent(parent: int) -> None:
    """Run in the drawing process: end it once the driver that spawned it is gone. A pool worker
    waits on a task pipe it holds both ends of, so it never sees the driver die; a driver that
    was killed (or ended with ``os._exit``) left it running for good, 280 MB each."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-driver", daemon=True).start()


class Pictures:
    """A trial run's confusion-matrix PNG, drawn away from the Tune driver's event loop and
    logged to the run once drawn (after its status, at most a second or two later); ``wait``
    returns when every picture asked for is logged. Drawing one took ~0.2-0.35 s of the driver
    per trial, half of its time at 1,000 short trials (bench/thousand_trials.py)."""

    def __init__(self, tracking_uri: str) -> None:
        self._uri = tracking_uri
        self._logging: Optional[Any] = None  # a thread that logs each picture once drawn
        self._pending: list[Any] = []

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks (with the Tuner): the picture queue is not part of them."""
        return {"_uri": self._uri, "_logging": None, "_pending": []}

    def confusion(self, run_id: str, matrix_csv: str, title: str) -> None:
        from concurrent.futures import ThreadPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        from sweeps.reporting.plots import confusion_png_bytes  # what the drawing process imports

        if self._logging is None:
            self._logging = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trial-pictures")
        pool = _drawing_process()
        try:
            drawn = pool.submit(confusion_png_bytes, matrix_csv, title)
        except BrokenProcessPool:  # its process died since the last picture: one lost picture at most
            drawn = _drawing_process(broken=pool).submit(confusion_png_bytes, matrix_csv, title)
        self._pending.append(self._logging.submit(self._log, run_id, drawn))

    def _log(self, run_id: str, drawn: Any) -> None:
        client = MlflowClient(self._uri)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                png = Path(tmp) / CONFUSION_PNG
                png.write_bytes(drawn.result())
                client.log_artifact(run_id, str(png), eval_files.FOLDER)
        except Exception as exc:  # a missing picture never fails the study: its run says why
            with contextlib.suppress(Exception):
                client.set_tag(run_id, "artifacts_error", f"{CONFUSION_PNG}: {type(exc).__name__}: {exc}"[:500])

    def wait(self) -> None:
        for job in self._pending:
            job.result()
        self._pending.clear()
