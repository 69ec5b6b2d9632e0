"""``python -m benchmarks.summarize RUN.json [RUN.json ...]``: targets across repeated runs.

On a shared, noisy machine one run is not enough: run the same suites several
times (each into its own ``--out`` folder) and summarise the runs' targets as
one Markdown table, every run's value and their median, with each run's load
average, so a figure is the median of runs and its spread is visible.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "summary_markdown"]


def _targets(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(suite, target name) → the target's record, for one run."""
    out = {}
    for suite, body in doc["suites"].items():
        for target in body.get("targets", []):
            out[(suite, target["name"])] = target
    return out


def summary_markdown(docs: Sequence[dict[str, Any]]) -> str:
    """One Markdown table: per target, each run's value and the median, met or not.

    Args:
        docs: the runs' JSON documents, in run order.

    Returns:
        The Markdown text.
    """
    runs = [_targets(doc) for doc in docs]
    keys = list(dict.fromkeys(key for run in runs for key in run))
    head = " | ".join(f"run {i + 1}" for i in range(len(docs)))
    lines = [f"| suite | target | {head} | median | limit | met (median) |",
             "| --- | --- |" + " ---: |" * (len(docs) + 2) + " :---: |"]
    for key in keys:
        found = [run[key] for run in runs if key in run]
        values = [t["value"] for t in found]
        median = statistics.median(values)
        first = found[0]
        met = median <= first["limit"] if first["op"] == "<=" else median >= first["limit"]
        cells = " | ".join(f"{run[key]['value']:.3g}" if key in run else "n/a" for run in runs)
        lines.append(f"| {key[0]} | {key[1]} | {cells} | **{median:.3g} {first['unit']}** |"
                     f" {first['op']} {first['limit']:g} | {'yes' if met else '**no**'} |")
    loads = "; ".join(f"run {i + 1}: {doc['load_before']} → {doc['load_after']}"
                      for i, doc in enumerate(docs))
    return "\n".join(lines) + f"\n\nLoad averages (1, 5, 15 min) before → after: {loads}.\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the summary of the given run files."""
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m benchmarks.summarize RUN.json [RUN.json ...]", file=sys.stderr)
        return 2
    print(summary_markdown([json.loads(p.read_text(encoding="utf-8")) for p in paths]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
