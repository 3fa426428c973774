"""An in-process trial's own checkpoints (trainables.training.kept_checkpoints): the best and the
latest stay, torn copies never count, on a local folder and on a non-local filesystem (pyarrow's
in-memory one stands in for a bucket). The trial path through real Ray and Tune (kill, restart,
resume from the latest) is tests/test_resume.py; artifacts from the kept best, test_tracking.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyarrow.fs import LocalFileSystem, _MockFileSystem

from trainables.training.kept_checkpoints import COMPLETE, KeptCheckpoints


def local_checkpoint(tmp_path: Path, name: str, **metrics: float) -> str:
    folder = tmp_path / "local" / name
    folder.mkdir(parents=True)
    (folder / "trial_state.json").write_text(json.dumps(metrics))
    (folder / "adapter_model.safetensors").write_bytes(b"weights " + name.encode())
    return str(folder)


def names(kept: KeptCheckpoints) -> list[str]:
    return [path.rsplit("/", 1)[1] for _, path in kept._folders()]


@pytest.mark.parametrize("where", ["local", "memory"])
def test_the_best_and_the_latest_stay(tmp_path, where):
    fs = LocalFileSystem() if where == "local" else _MockFileSystem()
    trial = str(tmp_path / "trial") if where == "local" else "bucket/study/trial"
    kept = KeptCheckpoints(fs, trial, "f1_macro", "max")
    assert kept.latest() is None
    paths = [kept.persist(local_checkpoint(tmp_path, f"c{i}", f1_macro=v)) for i, v in enumerate([0.3, 0.6, 0.5, 0.4])]
    assert [p.rsplit("/", 1)[1] for p in paths] == [f"checkpoint_{i:06d}" for i in range(4)]
    assert names(kept) == ["checkpoint_000001", "checkpoint_000003"]  # best (0.6) and latest
    assert kept.latest() == paths[3] and kept.holds(paths[3]) and not kept.holds(str(tmp_path / "local" / "c3"))
    with fs.open_input_stream(f"{paths[1]}/adapter_model.safetensors") as f:
        assert f.read() == b"weights c1"  # every file copied


def test_a_better_latest_leaves_one(tmp_path):
    kept = KeptCheckpoints(LocalFileSystem(), str(tmp_path / "trial"), "eval_loss", "min")
    for i, loss in enumerate([0.9, 0.7, 0.5]):
        kept.persist(local_checkpoint(tmp_path, f"c{i}", eval_loss=loss))
    assert names(kept) == ["checkpoint_000002"]


def test_ties_keep_the_earlier_and_unscored_never_wins(tmp_path):
    kept = KeptCheckpoints(LocalFileSystem(), str(tmp_path / "trial"), "f1_macro", "max")
    kept.persist(local_checkpoint(tmp_path, "a", f1_macro=0.5))
    kept.persist(local_checkpoint(tmp_path, "b", f1_macro=0.5))
    kept.persist(local_checkpoint(tmp_path, "c", f1_macro=float("nan")))
    assert names(kept) == ["checkpoint_000000", "checkpoint_000002"]


def test_a_torn_copy_is_not_resumed_from_and_goes_at_the_next_checkpoint(tmp_path):
    """A killed attempt can leave a folder whose copy never finished: the restarted trial
    resumes from the last complete one, and its next checkpoint takes a fresh number."""
    trial = tmp_path / "trial"
    kept = KeptCheckpoints(LocalFileSystem(), str(trial), "f1_macro", "max")
    first = kept.persist(local_checkpoint(tmp_path, "a", f1_macro=0.5))
    torn = trial / "checkpoint_000001"
    torn.mkdir()
    (torn / "trial_state.json").write_text(json.dumps({"f1_macro": 0.9}))  # no COMPLETE mark
    assert kept.latest() == first
    nxt = kept.persist(local_checkpoint(tmp_path, "b", f1_macro=0.4))
    assert nxt.endswith("checkpoint_000002") and not torn.exists()
    assert names(kept) == ["checkpoint_000000", "checkpoint_000002"]
    assert (trial / "checkpoint_000002" / COMPLETE).is_file()
