"""``python -m tests.smoke_driver FOLDER [FOLDER ...]``: one long-lived study driver for the
catalogue's smoke runs (tests/test_catalogue.py).

Each FOLDER holds a ``job.json`` (the ``python -m sweeps.run`` arguments of one study). The
driver claims folders one at a time (an atomic ``mkdir``, so several drivers can share one list),
and runs each study in it exactly as ``python -m sweeps.run ARGS`` would (its own working
folder, so its own ./mlflow.db and ./ray_results; its output in ``driver.log``), writing
``result.json`` (exit code, seconds). What it saves over one process per study: Python, torch,
transformers, Ray and MLflow imported once, one Ray client connection for every study.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path


def run_one(folder: Path, argv: list[str]) -> int:
    """``sweeps.run.main(argv)`` in ``folder``, its stdout and stderr (file descriptors too, so
    Ray's and the libraries' own output) in ``folder/driver.log``."""
    from sweeps.run import main

    sys.stdout.flush()
    sys.stderr.flush()
    # A study changes its process's environment (mlflow.set_tracking_uri sets MLFLOW_TRACKING_URI):
    # each study starts from the driver's own, as a fresh `python -m sweeps.run` would.
    environ = dict(os.environ)
    saved = os.dup(1), os.dup(2)
    with open(folder / "driver.log", "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        os.chdir(folder)
        try:
            return main(argv)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            return 3
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            os.environ.clear()
            os.environ.update(environ)


def main(folders: list[str]) -> int:
    from tests import mlflow_template

    mlflow_template.install_from_env()
    for name in folders:
        folder = Path(name).resolve()
        try:
            (folder / "claimed").mkdir()
        except FileExistsError:
            continue  # another driver runs this one
        started = time.time()
        rc = run_one(folder, json.loads((folder / "job.json").read_text()))
        (folder / "result.json").write_text(json.dumps({"rc": rc, "seconds": time.time() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
