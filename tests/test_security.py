"""Untrusted files and secrets: checkpoints load without running pickled code, URIs lose
their credentials before they are logged or exported, a public Hub repo is never pushed to."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sweeps.tracking import store
from trainables.training import loop


@pytest.mark.parametrize("uri, shown", [
    ("http://alice:s3cret@mlflow.internal:5000", "http://alice:***@mlflow.internal:5000"),
    ("https://token123@host/path?x=1", "https://***@host/path?x=1"),
    ("postgresql://mlflow:pw@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("s3://bucket/ray_results", "s3://bucket/ray_results"),
])
def test_credentials_are_stripped_from_uris(uri, shown):
    assert store.redact(uri) == shown
    assert store.redact_all({"a": [uri], "b": {"c": uri}, "n": 3}) == {"a": [shown], "b": {"c": shown}, "n": 3}


def test_training_state_round_trips_through_a_weights_only_load(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {
        "progress": {"step": 3, "train_time": 1.5},
        "rng": torch.get_rng_state(),
        "optimizer": opt.state_dict(),
        "base": {"metrics": {"before_f1": np.float64(0.25)}, "payload": (np.arange(6, dtype=np.float32).reshape(3, 2), np.array([0, 1, 1])), "texts": ["a", "b"]},
    }
    torch.save(loop.to_tensors(state), tmp_path / "s.pt")
    back = loop.from_tensors(torch.load(tmp_path / "s.pt", weights_only=True))
    logits, labels = back["base"]["payload"]
    assert isinstance(logits, np.ndarray) and logits.dtype == np.float32 and logits.tolist() == state["base"]["payload"][0].tolist()
    assert labels.tolist() == [0, 1, 1] and back["base"]["metrics"]["before_f1"] == 0.25 and back["base"]["texts"] == ["a", "b"]
    assert back["optimizer"]["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_a_tampered_checkpoint_does_not_run_code(tmp_path, minilm_path):
    """A checkpoint folder on shared storage is untrusted: restoring it must not execute a
    pickled payload (torch.load(weights_only=True))."""
    _Payload.marker = tmp_path / "pwned"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"progress": _Payload()}, folder / loop.TRAINING_STATE)
    (folder / "trial_state.json").write_text("{}")
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(net.parameters())
    from unittest import mock

    with mock.patch.object(loop.models, "load_trained"), pytest.raises(pickle.UnpicklingError):
        loop.restore(str(folder), net, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))
    assert not Path(_Payload.marker).exists()


class _Repo:
    def __init__(self, private: bool):
        self.private = private


def test_push_to_hub_refuses_an_existing_public_repo(tmp_path, monkeypatch, capsys):
    """No network here: the Hub client is replaced by one that knows two repos."""
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    from sweeps import export

    known = {"me/public": _Repo(False), "me/private": _Repo(True)}

    class FakeApi:
        def __init__(self, token=None):
            self.token = token

        def repo_info(self, repo):
            if repo not in known:
                raise RepositoryNotFoundError(f"{repo} not found", response=mock_response())
            return known[repo]

    def mock_response():
        from unittest import mock

        return mock.Mock(status_code=404, headers={}, url="https://huggingface.co/api/models/x")

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    out = tmp_path / "export"
    assert export.main(["emotion_demo", "--out", str(out), "--push-to-hub", "me/public"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --push-to-hub: me/public exists and is public (fix: push to a new repo name (created private), or make that repo private first)"
    assert not out.exists()
    export.check_hub_repo("me/private", "hf_test")  # a private repo, or a new one, is fine
    export.check_hub_repo("me/new", "hf_test")
