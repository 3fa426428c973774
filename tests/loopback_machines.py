"""Machines for `ray up` on loopback addresses of this host: one sshd answers on 127.0.0.x:22 and
gives every address a machine of its own, as far as a cluster can tell: its own home (a mount
namespace whose /etc/passwd names it, since ssh and Ray expand ``~`` through the password
database, not $HOME), while the file system, the venv and /tmp stay shared like an NFS mount.

Why not Docker or real VMs: CI has neither; SSH, rsync, Ray's launcher, its autoscaler and the
node scripts are the real ones. What it cannot show: a second kernel, a real network between
nodes, a machine that needs python3-venv from apt (docs/clusters.md says so).

Needs root (port 22, mount namespaces), openssh-server, rsync and unshare
(``scripts/setup.sh --tests`` installs the first two)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"

SHELL = """#!/bin/bash
# Every SSH command to 127.0.0.N runs as machine N: its own home, via a private /etc/passwd.
n=${SSH_CONNECTION#* * }; n=${n%% *}; n=${n##*.}
export SWEEPS_VENV=%(venv)s
exec unshare --mount --propagation private /bin/bash -c 'mount --bind "$0" /etc/passwd && export HOME="$1" && cd "$HOME" && exec /bin/bash -c "${SSH_ORIGINAL_COMMAND:-exec /bin/bash -l}"' "%(root)s/passwd-$n" "%(root)s/home-$n"
"""


def missing(addresses: list[str]) -> str:
    """Why this host cannot run loopback machines on ``addresses`` ('' when it can)."""
    if os.geteuid() != 0:
        return "needs root (sshd on port 22 of loopback addresses, mount namespaces)"
    for tool in (SSHD, shutil.which("rsync"), shutil.which("unshare"), shutil.which("ssh-keygen")):
        if not tool or not os.access(tool, os.X_OK):
            return "needs openssh-server, rsync and unshare (bash scripts/setup.sh --tests installs them)"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:  # a container without CAP_SYS_ADMIN, for one
        return f"needs mount namespaces (unshare --mount: {probe.stderr.strip()[:120]})"
    for address in addresses:  # Ray's launcher always uses port 22
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, 22))
            except OSError:
                return f"needs port 22 on {address}, which another process holds (a system sshd on 0.0.0.0:22?)"
    return ""


class LoopbackMachines:
    """``addresses`` (127.0.0.x) as SSH-reachable machines under ``root``; ``key`` logs in."""

    def __init__(self, root: Path, addresses: list[str], venv: Path) -> None:
        assert all(a.startswith("127.") and a != "127.0.0.1" for a in addresses), "loopback only, never 127.0.0.1 (Ray rewrites it)"
        self.root, self.addresses, self.venv = root, addresses, venv
        self.key = root / "id_ed25519"
        self._sshd: subprocess.Popen | None = None

    def home(self, address: str) -> Path:
        return self.root / f"home-{address.rsplit('.', 1)[1]}"

    def start(self) -> "LoopbackMachines":
        root = self.root
        root.mkdir(parents=True, exist_ok=True)
        for name in ("id_ed25519", "host_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
        shutil.copy(root / "id_ed25519.pub", root / "authorized_keys")
        passwd = Path("/etc/passwd").read_text().splitlines()
        for address in self.addresses:
            n = address.rsplit(".", 1)[1]
            self.home(address).mkdir()
            lines = [self._with_home(line, self.home(address)) for line in passwd]
            (root / f"passwd-{n}").write_text("\n".join(lines) + "\n")
        shell = root / "shell.sh"
        shell.write_text(SHELL % {"root": root, "venv": self.venv})
        shell.chmod(0o755)
        config = root / "sshd_config"
        config.write_text("".join(f"ListenAddress {a}:22\n" for a in self.addresses) + (
            f"HostKey {root}/host_key\nPidFile {root}/sshd.pid\nAuthorizedKeysFile {root}/authorized_keys\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            f"UsePAM no\nStrictModes no\nMaxStartups 50\nMaxSessions 50\nForceCommand {shell}\n"
        ))
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
        self._sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=open(root / "sshd.log", "w"))
        deadline = time.time() + 15
        while not all(self._answers(a) for a in self.addresses):
            if self._sshd.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"sshd did not start on {self.addresses}: {(root / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.2)
        return self

    @staticmethod
    def _with_home(line: str, home: Path) -> str:
        fields = line.split(":")
        if len(fields) == 7 and fields[2] == str(os.geteuid()):
            fields[5] = str(home)
        return ":".join(fields)

    @staticmethod
    def _answers(address: str) -> bool:
        try:
            with socket.create_connection((address, 22), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """End sshd and anything a node left running on these addresses (Ray, MLflow)."""
        patterns = [rf"(--node[-_]ip[-_]address|--monitor-ip|--host)[= ]{a}( |$)" for a in self.addresses]
        found = subprocess.run(["pgrep", "-f", "--", "|".join(patterns)], capture_output=True, text=True).stdout.split()
        kill = set(found) | {child for pid in found for child in _descendants(pid)}  # uvicorn's workers too
        if kill:
            subprocess.run(["kill", "-9", *sorted(kill)], check=False, capture_output=True)
        if self._sshd is not None:
            self._sshd.send_signal(signal.SIGTERM)
            try:
                self._sshd.wait(10)
            except subprocess.TimeoutExpired:
                self._sshd.kill()


def _descendants(pid: str) -> list[str]:
    out = subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True).stdout.split()
    return out + [d for child in out for d in _descendants(child)]
