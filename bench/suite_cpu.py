"""Where a command's CPU time goes, by process kind: every process on the machine, sampled.

    .venv/bin/python bench/suite_cpu.py -- .venv/bin/python -m pytest -q tests/test_mlflow_outage.py
    .venv/bin/python bench/suite_cpu.py --top 30 -- .venv/bin/python -m pytest -q   # the whole suite

Why sampling every process and not profiling the command: a sweep's work happens in processes
the command never forks itself (Ray's workers are children of the raylet; Tune's trial actors,
Ray Train's controller and helper actors, the MLflow server's own workers). Each is named by its
process title (``ray::ImplicitFunc`` is a Tune trial, ``ray::RayTrainWorker`` a Train worker,
``ray::TrainController`` ...), or its command line for plain Python processes.

Every 0.5 s the script reads each process's user + system CPU seconds from ``/proc/PID/stat``;
a process's share is its last reading minus its first (minus the start of the run for processes
that were already running). A process that lived less than one interval may be missed, so the
sum is a lower bound; the busy share is the machine's own (``/proc/stat``), for comparison.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def snapshot(seen: dict[tuple[str, str], tuple[float, str]]) -> None:
    """Update pid -> (CPU seconds, name) for every live process."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
            cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ").strip()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        rest = stat[stat.rfind(")") + 2:].split()
        cpu = (int(rest[11]) + int(rest[12])) / TICKS
        key = (pid, rest[19])  # pid + start time: a reused pid is another process
        name = comm if comm.startswith("ray::") or not comm.startswith("python") else (cmd[:80] or comm)
        old = seen.get(key)
        seen[key] = (max(cpu, old[0] if old else 0.0), old[1] if old else name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=25, help="process kinds to list")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command after --")
    seen: dict[tuple[str, str], tuple[float, str]] = {}
    snapshot(seen)
    before = {k: v[0] for k, v in seen.items()}
    busy0, total0 = machine_busy()
    started = time.time()
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        snapshot(seen)
        time.sleep(0.5)
    snapshot(seen)
    wall = time.time() - started
    busy1, total1 = machine_busy()
    kinds: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for key, (cpu, name) in seen.items():
        used = cpu - before.get(key, 0.0)
        if used > 0.05:
            kinds[name][0] += used
            kinds[name][1] += 1
    total = sum(v[0] for v in kinds.values())
    print(f"exit {proc.returncode}; wall {wall:.1f} s; CPU {total:.1f} s in processes; "
          f"machine busy {100 * (busy1 - busy0) / max(1, total1 - total0):.0f}% of {os.cpu_count()} CPUs")
    print(f"{'CPU s':>8} {'procs':>6}  process")
    for name, (cpu, count) in sorted(kinds.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{cpu:8.1f} {int(count):6d}  {name}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
