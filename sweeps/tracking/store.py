"""Where a study's MLflow store is, whether it answers, and URIs with their secrets left out."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

from mlflow.tracking import MlflowClient

from core.errors import StudyError


def tracking_uri(configured: Optional[str]) -> str:
    """Study setting, else $MLFLOW_TRACKING_URI, else ./mlflow.db (what plain `mlflow ui` opens)."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def check_reachable(uri: str) -> None:
    """Fail before anything is written when the tracking store cannot be used: a server that
    does not answer or refuses our credentials, a SQLite file in a folder that does not exist.
    (A store that goes away mid-sweep is retried by MLflow's own client: ~4 min by default,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES / _BACKOFF_FACTOR set more.)"""

    fix = "start it (mlflow server ...), fix the URI, or leave tracking.tracking_uri and MLFLOW_TRACKING_URI unset for ./mlflow.db"
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise StudyError("tracking.tracking_uri", f"{redact(uri)}: folder {folder} does not exist", "create it or point the URI elsewhere")
        return
    if not uri.startswith(("http://", "https://")):
        _check_opens(uri)
        return
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        text = str(exc)
        if "401" in text or "403" in text or "Unauthorized" in text or "Permission" in text:
            raise StudyError("tracking.tracking_uri", f"MLflow at {redact(uri)} refused the credentials", "set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)") from None
        errno = re.search(r"\[Errno[^\]]*\][^\"')]*", text)
        reason = errno.group(0).strip() if errno else text.splitlines()[0][:200]
        raise StudyError("tracking.tracking_uri", f"MLflow at {redact(uri)} is unreachable ({reason})", fix) from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _check_opens(uri: str) -> None:
    """A store that is not a server or SQLite (file:./mlruns, a plain folder, postgresql://...):
    MLflow opens it, or its reason is the error. MLflow 3 refuses its file store unless
    MLFLOW_ALLOW_FILE_STORE=true; a database that does not answer fails here too."""
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = first.split(". ")[0][:200]
        fix = ("use sqlite:///mlflow.db or a server URL (mlflow migrate-filestore moves existing runs), "
               "or set MLFLOW_ALLOW_FILE_STORE=true") if "filesystem" in first or "file store" in first.lower() \
            else "fix the URI, or leave tracking.tracking_uri and MLFLOW_TRACKING_URI unset for ./mlflow.db"
        raise StudyError("tracking.tracking_uri", f"MLflow cannot open {redact(uri)} ({reason})", fix) from None


def redact(uri: str) -> str:
    """The URI without the password or token in it (``scheme://user:secret@host`` -> ``user:***``;
    a lone ``token@host`` -> ``***``), for anything printed, logged to MLflow or exported."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None and "@" not in parts.netloc:
        return uri
    user = parts.username if parts.password is not None else ""
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}" if user else f"***@{host}", parts.path, parts.query, parts.fragment))


def redact_all(value: Any) -> Any:
    """``redact`` applied to every string in a (nested) dict or list."""
    if isinstance(value, str):
        return redact(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_all(v) for v in value)
    return value
