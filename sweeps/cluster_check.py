"""CLI: ``python -m sweeps.cluster_check CLUSTER.yaml`` checks a cluster file before ``ray up``.

Why: ``ray up`` meets most mistakes late and as a traceback (an empty address list, a key that
is not there, a head that does not answer SSH, half-filled node types). This says each problem
in one line that names the field and the fix, touching nothing: it reads the file, asks Ray's
own schema, looks for local files, and knocks on the head's SSH port.

Exit codes: 0 ready for ``ray up``, 2 problems found (one line each on stderr).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from core.errors import StudyError

LOCAL_PROVIDER = "ray.autoscaler._private.local.node_provider.LocalNodeProvider"
SSH_PORT = 22


def _is_on_prem(provider: dict[str, Any]) -> bool:
    return provider.get("type") == "local" or (provider.get("type") == "external" and provider.get("module") == LOCAL_PROVIDER)


def _ray_schema(config: dict[str, Any]) -> Optional[StudyError]:
    """What ``ray up`` checks first: Ray fills in the provider's defaults, then its JSON schema."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    # its notes on legacy fields the file never had are noise here
    logging.getLogger("ray.autoscaler._private.util").setLevel(logging.ERROR)
    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except jsonschema.ValidationError as e:
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        return StudyError(where, e.message.split("\n")[0], "see Ray's cluster config reference, or start from cluster-onprem.yaml / cluster.yaml")
    except Exception as e:  # Ray's own refusals (click.ClickException, ValueError...): one line
        text = getattr(e, "message", None) or str(e)
        return StudyError("(cluster file)", text.split("\n")[0], "compare with cluster-onprem.yaml / cluster.yaml")
    return None


def _storage(commands: list[str]) -> set[str]:
    return {m for c in commands for m in re.findall(r"--storage[= ](\S+)", str(c))}


def _reachable(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _on_prem(config: dict[str, Any], timeout: float) -> list[StudyError]:
    problems = []
    provider, auth = config.get("provider") or {}, config.get("auth") or {}
    head, workers = str(provider.get("head_ip") or "").strip(), provider.get("worker_ips") or []
    if not head:
        problems.append(StudyError("provider.head_ip", "is empty", "fill in the head machine's address, e.g. 10.0.0.10"))
    if not workers:
        problems.append(StudyError("provider.worker_ips", "is empty: no machine to run trials on", "list the worker machines' addresses, e.g. [10.0.0.11, 10.0.0.12]"))
    head_type = config.get("head_node_type")
    for name, node_type in (config.get("available_node_types") or {}).items():
        if name == head_type:
            continue
        field = f"available_node_types.{name}"
        if workers and node_type.get("max_workers", 0) > len(workers):
            problems.append(StudyError(f"{field}.max_workers", f"is {node_type['max_workers']} but provider.worker_ips lists {len(workers)} machine(s)", f"lower it to {len(workers)} or list more addresses"))
        if "CPU" not in (node_type.get("resources") or {}):
            problems.append(StudyError(f"{field}.resources", "does not say what a worker machine has: the autoscaler starts one only for trials it knows fit", 'give its counts, e.g. {"CPU": 8, "GPU": 1}'))
    if not str(auth.get("ssh_user") or "").strip():
        problems.append(StudyError("auth.ssh_user", "is empty", "fill in the user to log in as on every machine"))
    key = auth.get("ssh_private_key")
    if not key:
        problems.append(StudyError("auth.ssh_private_key", "is not set", "give the private key whose .pub is in every machine's ~/.ssh/authorized_keys"))
    elif not Path(os.path.expanduser(key)).is_file():
        problems.append(StudyError("auth.ssh_private_key", f"{key} does not exist here", "give the private key whose .pub is in every machine's ~/.ssh/authorized_keys (ssh-keygen -t ed25519 makes a pair)"))
    elif not os.access(os.path.expanduser(key), os.R_OK):
        problems.append(StudyError("auth.ssh_private_key", f"{key} is not readable by you", f"chmod 600 {key} (as its owner)"))
    if head and not _reachable(head, SSH_PORT, timeout):
        problems.append(StudyError("provider.head_ip", f"nothing answers SSH at {head}:{SSH_PORT} within {timeout:g} s", "check the machine is on, the address is right and sshd runs there"))
    return problems


def check(config: Any, ssh_timeout: float = 5.0) -> list[StudyError]:
    """Every problem found in a loaded cluster file, in the order a user would fix them."""
    if not isinstance(config, dict):
        return [StudyError("(cluster file)", "is not a YAML mapping", "start from cluster-onprem.yaml or cluster.yaml")]
    problems = []
    provider = config.get("provider") or {}
    if provider.get("type") == "local" and config.get("available_node_types"):
        # Ray refuses this pair with a panic; say why and what works instead
        problems.append(StudyError("provider.type", "local drops the node types (no trial_driver slot on the head, no per-type resources)", f"use type: external with module: {LOCAL_PROVIDER}, as cluster-onprem.yaml does"))
    else:
        schema_problem = _ray_schema(config)
        if schema_problem:
            problems.append(schema_problem)
    if _is_on_prem(provider):
        problems.extend(_on_prem(config, ssh_timeout))
    head_storage, worker_storage = _storage(config.get("head_start_ray_commands") or []), _storage(config.get("worker_start_ray_commands") or [])
    if head_storage and worker_storage and head_storage != worker_storage:
        problems.append(StudyError("worker_start_ray_commands", f"--storage {', '.join(sorted(worker_storage))} differs from the head's {', '.join(sorted(head_storage))}", "give every node the same --storage (a folder all machines mount, or s3://...)"))
    for remote, local in (config.get("file_mounts") or {}).items():
        if str(remote).endswith(".ray/auth_token") and not Path(os.path.expanduser(str(local))).is_file():
            problems.append(StudyError(f"file_mounts.{remote}", f"{local} does not exist here", "run `ray get-auth-token --generate` once (every node gets the token)"))
    return problems


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.cluster_check", description="Check a Ray cluster file (cluster-onprem.yaml, cluster.yaml) before `ray up`.")
    p.add_argument("cluster_file")
    p.add_argument("--ssh-timeout", type=float, default=5.0, help="seconds to wait for the head's SSH port (default 5)")
    args = p.parse_args(argv)
    path = Path(args.cluster_file)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as e:
        print(f"error: {path}: cannot read it ({e.strerror})", file=sys.stderr)
        return 2
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        print(f"error: {path}: not valid YAML{where} ({getattr(e, 'problem', e)})", file=sys.stderr)
        return 2
    problems = check(config, args.ssh_timeout)
    for problem in problems:
        print(f"error: {path}: {problem.one_line()}", file=sys.stderr)
    if problems:
        return 2
    print(f"{path}: ready for `ray up -y {path}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
