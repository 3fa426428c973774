"""Where a study's Ray results and checkpoints live."""

from __future__ import annotations

import os
from pathlib import Path

from sweeps.study import Study


def storage_root(study: Study) -> str:
    """The study's storage_path, else $SWEEPS_STORAGE_PATH (cluster.yaml points it at S3),
    else ./ray_results. A URI (s3://, gs://, ...) is used as is: on a cluster it must be
    storage every node reaches, so results and checkpoints outlive any node."""
    where = study.storage_path or os.environ.get("SWEEPS_STORAGE_PATH") or "ray_results"
    if "://" in where:
        return where.rstrip("/")
    return str(Path(where).expanduser().resolve())
