"""Where the test suite's time goes, per test file, from pytest's JUnit XML (one or two runs).

    .venv/bin/python -m pytest -q --junitxml=after.xml        # or: PYTEST_ADDOPTS=--junitxml=... bash .ci/run
    .venv/bin/python bench/suite_times.py before.xml after.xml  # a markdown table, before | after | ratio

A test's time is pytest's "total" (set-up, call and tear-down): a module's shared fixture (one
sweep that several tests read) counts on the test that first asks for it. The table's rows are
files; its last row is the sum, and the wall time pytest reported for the whole run.
"""

from __future__ import annotations

import argparse
import collections
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def per_file(path: Path) -> tuple[dict[str, float], dict[str, int], float]:
    """Seconds and test counts per test file, and the run's wall time (the <testsuite> time)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    seconds: dict[str, float] = collections.defaultdict(float)
    counts: dict[str, int] = collections.defaultdict(int)
    for case in root.iter("testcase"):
        name = case.get("classname", "").split(".")
        module = next((p for p in name if p.startswith("test_")), name[-1] if name else "?")
        seconds[module] += float(case.get("time", 0))
        counts[module] += 1
    return seconds, counts, sum(float(s.get("time", 0)) for s in suites)


def table(runs: list[Path]) -> str:
    data = [per_file(p) for p in runs]
    files = sorted(set().union(*(d[0] for d in data)), key=lambda f: -data[0][0].get(f, 0))
    head = ["file"] + [f"{p.stem} s (tests)" for p in runs] + (["after / before"] if len(runs) == 2 else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label: str, values: list[tuple[float, int | None]]) -> str:
        cells = [f"{s:.0f}" + (f" ({n})" if n is not None else "") for s, n in values]
        if len(values) == 2:
            cells.append(f"{values[1][0] / values[0][0]:.2f}" if values[0][0] else "-")
        return "| " + " | ".join([label] + cells) + " |"

    for f in files:
        lines.append(row(f, [(d[0].get(f, 0.0), d[1].get(f, 0)) for d in data]))
    lines.append(row("**sum of tests**", [(sum(d[0].values()), sum(d[1].values())) for d in data]))
    lines.append(row("**pytest wall**", [(d[2], None) for d in data]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/suite_times.py", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="JUnit XML files (pytest --junitxml); two give a ratio column")
    args = p.parse_args(argv)
    for run in args.runs:
        if not run.is_file():
            print(f"error: {run}: no such file (write one with pytest --junitxml={run})", file=sys.stderr)
            return 2
    print(table(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
