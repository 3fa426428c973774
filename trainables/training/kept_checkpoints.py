"""The checkpoints of a trial that trains in its own Tune actor (``resources.in_process``), kept
by the trial itself the way Ray Train keeps a Train run's: in the trial's folder in Ray storage,
the best by the study metric and the latest, and reported to Tune as a ``checkpoint_path``
metric (as Train's TuneReportCallback reports a Train run's), never as a Tune checkpoint.

Why not Tune's own checkpoints: with ``CheckpointConfig(num_to_keep=1)`` Tune forces a snapshot
of the whole experiment state after every checkpoint of every trial (so the snapshot never names
a checkpoint it deleted). That rewrite grows with the study: at 400 one-checkpoint trials it
was 40% of the driver's time and made its cost per trial grow from 0.2 to 0.4 s
(bench/thousand_trials.py, bench/RESULTS.md). Tune never restores such a trial from a
checkpoint (it has none): a restarted or resumed trial starts its function again and
``latest`` finds where it stood, as a Train run finds its own.
"""

from __future__ import annotations

import json
import posixpath
from typing import Optional

from pyarrow.fs import FileSelector, FileSystem, FileType, LocalFileSystem, copy_files

from core import outcomes

PREFIX = "checkpoint_"  # as Tune and Train name theirs: sweeps.tracking.artifacts finds them by it
COMPLETE = ".complete"  # written after every file was copied: a folder without it is a torn copy
STATE = "trial_state.json"  # the metrics reported with the checkpoint (trainables.training.loop)


class KeptCheckpoints:
    """A trial's checkpoint folders ``checkpoint_000000``, ``checkpoint_000001``, ... under
    ``trial_path`` in ``filesystem`` (Ray storage: a local folder, NFS or a bucket)."""

    def __init__(self, filesystem: FileSystem, trial_path: str, metric: str, mode: str) -> None:
        self.fs, self.trial_path, self.metric, self.mode = filesystem, trial_path.rstrip("/"), metric, mode

    @classmethod
    def of_this_trial(cls, metric: str, mode: str) -> "KeptCheckpoints":
        """The current Tune trial's (a reused actor runs several trials: ask each time)."""
        from ray import tune

        storage = tune.get_context().get_storage()
        return cls(storage.storage_filesystem, storage.trial_fs_path, metric, mode)

    def latest(self) -> Optional[str]:
        """The newest complete checkpoint's path, None before the first."""
        complete = self._complete()
        return complete[-1][1] if complete else None

    def holds(self, path: str) -> bool:
        return posixpath.dirname(path.rstrip("/")) == self.trial_path

    def persist(self, local_folder: str) -> str:
        """Copy ``local_folder`` in as the next checkpoint, mark it complete, then delete every
        other checkpoint but the best and the latest (torn copies of a killed attempt too)."""
        index = max((i for i, _ in self._folders()), default=-1) + 1
        path = f"{self.trial_path}/{PREFIX}{index:06d}"
        self.fs.create_dir(path)
        copy_files(local_folder, path, source_filesystem=LocalFileSystem(), destination_filesystem=self.fs)
        with self.fs.open_output_stream(f"{path}/{COMPLETE}") as f:
            f.write(b"")
        self._prune()
        return path

    def _folders(self) -> list[tuple[int, str]]:
        try:
            infos = self.fs.get_file_info(FileSelector(self.trial_path, allow_not_found=True))
        except (OSError, ValueError):
            return []
        found = []
        for info in infos:
            suffix = info.base_name[len(PREFIX):]
            if info.type == FileType.Directory and info.base_name.startswith(PREFIX) and suffix.isdigit():
                found.append((int(suffix), info.path))
        return sorted(found)

    def _complete(self) -> list[tuple[int, str]]:
        folders = self._folders()
        marks = self.fs.get_file_info([f"{path}/{COMPLETE}" for _, path in folders]) if folders else []
        done = {posixpath.dirname(i.path) for i in marks if i.type == FileType.File}
        return [(i, path) for i, path in folders if path in done]

    def _score(self, path: str) -> Optional[float]:
        try:
            with self.fs.open_input_stream(f"{path}/{STATE}") as f:
                value = json.loads(f.read()).get(self.metric)
        except (OSError, ValueError):
            return None
        return float(value) if outcomes.usable(value) else None

    def _prune(self) -> None:
        complete = self._complete()
        if not complete:
            return
        # core.outcomes' rule: scored before unscored, then by score; on a tie the earlier one
        best = sorted(complete, key=lambda e: outcomes.rank_key(self._score(e[1]), False, self.mode))[0][1]
        keep = {best, complete[-1][1]}
        for _, path in self._folders():
            if path not in keep:
                self.fs.delete_dir(path)
