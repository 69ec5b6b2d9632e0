"""Campaign 5: bounded load on the collector: the rate is held, nothing lost or counted twice.

Runs the load generator ``benchmarks/load.py`` as CI does, for 10 seconds at
500 envelopes per second (batches of 50) against a real ``edgepersona serve``
on loopback, and checks its report: every envelope was acknowledged, the
aggregates hold each distinct acknowledged contribution exactly once (no
loss, no double count, exact sums) and the collector's own counters agree.
Rate and memory are reported, not asserted (timings depend on the machine).

The documented long run (5 minutes at 1,000 envelopes/s; figures in the README)::

    python -m benchmarks.load --seconds 300

``EDGEPERSONA_CAMPAIGN=long`` makes this test run it for 300 s as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from campaign_testkit import CollectorFiles, sized

ROOT = Path(__file__).resolve().parents[2]
SECONDS = sized(10, 300)
RATE = sized(500, 1_000)  # envelopes per second


@pytest.mark.slow
def test_the_collector_holds_a_bounded_load_without_losing_or_double_counting(
        tmp_path: Path, collector_files: CollectorFiles) -> None:
    out = tmp_path / "load.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.load", "--seconds", str(SECONDS), "--rate",
                           str(RATE), "--batch", "50", "--bundles", str(collector_files.bundles),
                           "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 180, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert (report["lost"], report["double_counted"], report["sum_mismatches"]) == (0, 0, 0)
    assert report["unacknowledged"] == 0 and report["statuses"]["rejected"] == 0
    assert report["envelopes_acknowledged"] == report["envelopes_sent"] > 0
    metrics = report["collector_metrics"]
    assert metrics["accepted"] == report["distinct_acknowledged"] == metrics["ledger_keys"]
    assert metrics["duplicate"] == report["statuses"]["duplicate"]
    print(f"\n[campaign] load: {report['envelopes_per_s']} envelopes/s of {RATE} target for"
          f" {report['seconds']} s ({report['held']:.0%} held), lost {report['lost']}, double-counted"
          f" {report['double_counted']}, server RSS {report['rss_mib']['before']} ->"
          f" {report['rss_mib']['after']} MiB, p99 {report['latency_ms']['p99']} ms")
