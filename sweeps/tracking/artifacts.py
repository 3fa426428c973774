"""A trial's files in MLflow: the adapter of its best checkpoint and that checkpoint's
validation report (predictions, per-class scores, confusion matrix as CSV and PNG).

Runs in the driver when a trial ends, reading the checkpoint from Ray storage (a local folder
or s3://...), so workers never need to reach the MLflow store.
"""

from __future__ import annotations

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
    """Each trial's checkpoints by score: the best is the one Ray Train (or Tune, for a trial
    in process) keeps (num_to_keep=1 ordered by the study metric); the others are fallbacks in
    case Ray broke a tie the other way."""

    def __init__(self, metric: str, mode: str) -> None:
        self.metric, self.mode = metric, mode
        self._seen: dict[str, list[tuple[float, str]]] = {}

    def add(self, trial: str, result: dict, trial_fs_path: Optional[str] = None) -> None:
        """``checkpoint_path``: where a Train run kept the checkpoint (TuneReportCallback says);
        a trial that trains in its Tune actor checkpoints through Tune, into its own folder
        (``trial_fs_path``), under the name Tune gives in ``checkpoint_dir_name``."""
        path, value = result.get("checkpoint_path"), result.get(self.metric)
        if path is None and result.get("checkpoint_dir_name") and trial_fs_path:
            path = f"{trial_fs_path.rstrip('/')}/{result['checkpoint_dir_name']}"
        if isinstance(path, str) and outcomes.usable(value):
            self._seen.setdefault(trial, []).append((float(value), path))

    def ranked(self, trial: str) -> list[str]:
        """Best first (core.outcomes' rule: on a tie, the earlier checkpoint)."""
        return [path for _, path in sorted(self._seen.get(trial, []), key=lambda e: outcomes.rank_key(e[0], False, self.mode))]


def log_best(client: MlflowClient, run_id: str, candidates: list[str], title: str, storage: str) -> Optional[str]:
    """Log the first existing checkpoint of ``candidates`` to ``run_id``; returns its path.
    ``storage``: the Ray storage root; on s3:// (or any URI) the paths Train reports carry no
    scheme and are read through that storage's filesystem."""
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
            _log_folder(client, run_id, Path(folder), title)
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


def _log_folder(client: MlflowClient, run_id: str, folder: Path, title: str) -> None:
    for name in ADAPTER_FILES:
        if (folder / name).is_file():
            client.log_artifact(run_id, str(folder / name), ADAPTER)
    report = folder / eval_files.FOLDER
    if report.is_dir():
        client.log_artifacts(run_id, str(report), eval_files.FOLDER)
        matrix = report / eval_files.CONFUSION
        if matrix.is_file():
            from sweeps.reporting.plots import confusion_png  # matplotlib: only when there is a matrix

            with tempfile.TemporaryDirectory() as tmp:
                png = confusion_png(matrix, Path(tmp) / "confusion_matrix.png", title)
                client.log_artifact(run_id, str(png), eval_files.FOLDER)
