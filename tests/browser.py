"""Headless Chromium (Playwright, Debian's chromium) for the tests that check a web UI the way
a user sees it: the MLflow UI and the ``sweeps.serve`` app."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# No sandbox as root, and no background connections (this machine has no internet).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def need_chromium() -> None:
    """Skip where chromium is missing; in CI that is a failure (setup.sh --tests installs it)."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: bash scripts/setup.sh --tests installs it")
        pytest.skip("no chromium: run bash scripts/setup.sh --tests")


@contextlib.contextmanager
def page(width: int = 1300, height: int = 800) -> Iterator[object]:
    """A fresh page in headless Chromium."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(args: list[str], log: Path, env: dict[str, str], timeout_s: float = 240, cwd: Path | None = None) -> Iterator[str]:
    """``python -m sweeps.serve ARGS`` in its own process, as a user starts it; yields its URL
    once it answers, and stops it afterwards. (Also what bench/gpu_acceptance.py serves with:
    a RuntimeError, not a pytest failure, when it does not come up.)"""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sweeps.serve", *args, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sweeps.serve exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    up = response.status == 200
            except OSError:  # not listening yet
                up = False
            if up:
                break
            if time.time() > deadline:
                raise RuntimeError(f"sweeps.serve did not answer in {timeout_s} s: {log.read_text()[-2000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
