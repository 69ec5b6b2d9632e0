"""Hold the collector at a target rate on loopback, then prove nothing was lost or counted twice.

``python -m benchmarks.load [--seconds 300] [--rate 1000] [--batch 50] [--count N] [--json PATH]``

* the documented long run: ``python -m benchmarks.load --seconds 300`` (5 minutes);
* CI runs a 10-second version inside the suite: ``tests/campaigns/test_campaign_load.py``.

It starts ``edgepersona serve`` on 127.0.0.1 (SQLite in a scratch folder, or ``--db URL``
naming an *empty* PostgreSQL database or schema), then ``--workers`` threads post
sealed contributions in batches of ``--batch`` envelopes, paced so that batch ``n``
leaves at ``n * batch / rate`` seconds, until ``--seconds`` have passed or
``--count`` envelopes were sent, whichever comes first. It stops by itself. One batch
in 50 also re-sends an already acknowledged contribution, resealed (other bytes, same
pseudonym and sequence), to keep the dedupe path busy under load.

Reported (JSON on stdout, and in ``--json PATH``):

* ``envelopes_per_s``: acknowledged envelopes per second of sending; ``held`` is that
  divided by the target rate;
* ``lost``: acknowledged contributions missing from the aggregates; ``double_counted``:
  aggregate counts beyond the distinct acknowledged contributions (both per
  persona and day cell, features exact: they are multiples of 1/4);
* ``rss_mib``: the server's resident memory after warm-up, at the end and at most
  (``flat`` when the growth stays under 16 MiB or 10 %);
* request latency (median, p99) and the collector's own ``/v1/metrics`` counts.

Exit status 1 when anything acknowledged was lost or double-counted, or a
contribution was never acknowledged.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import Contribution, Sealer, day_bucket
from edgepersona.trainer.collector import (
    AggregateStore,
    BundleShelf,
    encode_batch,
    nearest_personas,
    open_store,
)
from edgepersona.trainer.release.export import zip_bundle
from edgepersona.trainer.release.keys import generate_collector_key

from ._fixtures import bench_bundle
from ._measure import RunConfig

__all__ = ["LoadPlan", "ServeProcess", "main", "run_load"]

APP_ID = "load.edgepersona"
PER_DEVICE = 4  # contribution i is device i // PER_DEVICE, sequence i % PER_DEVICE + 1: within the
#                collector's default per-pseudonym daily quota, as honest devices are
VARIANTS = 97  # distinct (persona, features) pairs cycled through
REPLAY_EVERY = 50  # batches; one in this many also re-sends an acknowledged contribution
RSS_FLAT_MIB = 16.0  # growth tolerated as flat, MiB (or RSS_FLAT_FRACTION, whichever is larger)
RSS_FLAT_FRACTION = 0.10
_START_TIMEOUT = 60.0  # seconds for `edgepersona serve` to answer /healthz


def _free_port() -> int:
    """A loopback port that was free a moment ago (``serve`` takes a number, not a socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_rss_mib(pid: int) -> float | None:
    """Resident memory of another process in MiB (``VmRSS``), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds a process has used, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServeProcess:
    """``edgepersona serve`` on 127.0.0.1 in a child process: start, SIGKILL, restart on one port.

    Args:
        db: The ``--db`` URL; it outlives the process, so a restart continues on it.
        collector_key: The collector key file or folder.
        bundles: The bundles folder.
        app_id: The app id devices seal for.
        log: The server's output (appended across restarts).
    """

    def __init__(self, *, db: str, collector_key: Path, bundles: Path, app_id: str, log: Path) -> None:
        self._args = ["serve", "--db", db, "--collector-key", str(collector_key),
                      "--bundles", str(bundles), "--app-id", app_id]
        self._log = log
        self._port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base(self) -> str:
        """The base URL (the same after every restart)."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int:
        """The running server's process id."""
        if self._process is None:
            raise RuntimeError("the collector is not running")
        return self._process.pid

    def start(self) -> None:
        """Start the server and wait until ``/healthz`` answers."""
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "edgepersona.trainer.cli", *self._args, "--port", str(self._port)],
                stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"edgepersona serve exited with {self._process.returncode};"
                                   f" see {self._log}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=1.0) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"edgepersona serve did not answer within {_START_TIMEOUT:g} s; see {self._log}")

    def kill(self) -> None:
        """SIGKILL the server (no shutdown code runs) and reap it."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        if self._process is not None:
            self._process.wait(timeout=30)
        self._process = None

    def stop(self) -> None:
        """Stop the server cleanly (SIGINT), or SIGKILL it after 10 s."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=10)
        self.kill()

    def __enter__(self) -> ServeProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def post_batch(base: str, body: bytes, timeout: float = 30.0) -> list[str]:
    """POST one sync body; each envelope's status.

    Raises:
        OSError: worth retrying: no connection, a connection cut mid-answer, a 5xx.
        RuntimeError: the collector refused the body as a whole (a 4xx): retrying cannot help.
    """
    request = urllib.request.Request(f"{base}/v1/sync", data=body, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return [item["status"] for item in json.loads(reply.read())["results"]]
    except urllib.error.HTTPError as refused:
        if refused.code >= 500:
            raise OSError(f"collector answered HTTP {refused.code}") from None
        raise RuntimeError(f"collector refused a well-formed batch: HTTP {refused.code}"
                           f" {refused.read()[:300]!r}") from None
    except http.client.HTTPException as cut:  # e.g. IncompleteRead when the server dies mid-answer
        raise OSError(f"connection cut mid-answer: {cut!r}") from None


@dataclass(frozen=True)
class LoadPlan:
    """What to send: contribution ``i`` is fully determined by ``i`` (see :meth:`contribution`).

    Attributes:
        version: The model version contributions claim.
        personas: (variant → persona index) for the ``VARIANTS`` variants: the
            persona the bundle assigns to the variant's features (the collector checks).
        features: (variant → features), multiples of 1/4 inside the model's bounds.
    """

    version: int
    personas: tuple[int, ...]
    features: tuple[tuple[float, ...], ...]

    @classmethod
    def for_bundles(cls, bundles: Path, seed: int = 20_250_101) -> LoadPlan:
        """A plan for the latest approved version of a bundles folder."""
        latest = BundleShelf(bundles).latest()
        if latest is None:
            raise RuntimeError(f"{bundles} holds no approved bundle")
        shape, rng = latest.shape, np.random.default_rng(seed)
        features = []
        for _ in range(VARIANTS):
            row = []
            for low, high in zip(shape.lower, shape.upper, strict=True):
                value = math.floor((low + rng.uniform() * (high - low)) * 4) / 4
                row.append(min(max(value, math.ceil(low * 4) / 4), high))
            features.append(tuple(row))
        if shape.assigner is None:
            raise RuntimeError(f"{bundles}: the latest bundle declares no assigner")
        personas = tuple(min(nearest_personas(shape.assigner, row)) for row in features)
        return cls(latest.version, personas, tuple(features))

    def contribution(self, index: int, day: int) -> Contribution:
        """Contribution ``index`` for a day bucket."""
        variant = index % VARIANTS
        device = hashlib.sha256(f"load-device-{index // PER_DEVICE}".encode()).hexdigest()
        return Contribution(pseudonym=device, pseudonym_epoch=1,
                            sequence=index % PER_DEVICE + 1, day_bucket=day, model_version=self.version,
                            persona_index=self.personas[variant], features=self.features[variant])


@dataclass
class Tally:
    """What the workers saw; shared under a lock."""

    acked: dict[int, int] = field(default_factory=dict)  # contribution → its day bucket
    statuses: dict[str, int] = field(default_factory=lambda: {"accepted": 0, "duplicate": 0,
                                                              "rejected": 0})
    latencies: list[float] = field(default_factory=list)  # seconds per request
    retries: int = 0
    sent: int = 0
    unacknowledged: set[int] = field(default_factory=set)
    order: list[int] = field(default_factory=list)  # acknowledged contributions, first ack first


class _Pacer:
    """Hands out batch numbers until the deadline or the envelope budget is reached."""

    def __init__(self, *, rate: float, batch: int, seconds: float, count: int) -> None:
        self.rate, self.batch, self.count = rate, batch, count
        self.start = time.monotonic()
        self.deadline = self.start + seconds
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """The next batch number after sleeping until it is due, or None when done."""
        with self._lock:
            number = self._next
            due = self.start + number * self.batch / self.rate
            if due >= self.deadline or number * self.batch >= self.count:
                return None
            self._next += 1
        time.sleep(max(0.0, due - time.monotonic()))
        return number


def _send_batches(base: str, plan: LoadPlan, sealer: Sealer, pacer: _Pacer, tally: Tally,
                  lock: threading.Lock) -> None:
    """One worker: seal and post batches as the pacer releases them; retry failures."""
    while (number := pacer.take()) is not None:
        first = number * pacer.batch
        indices = list(range(first, min(first + pacer.batch, pacer.count)))
        day = day_bucket(time.time())
        with lock:
            if number % REPLAY_EVERY == REPLAY_EVERY - 1 and tally.order:
                indices.append(tally.order[number % len(tally.order)])
            days = {i: tally.acked.get(i, day) for i in indices}
        body = encode_batch([sealer.seal(plan.contribution(i, days[i])) for i in indices])
        for attempt in range(20):
            started = time.perf_counter()
            try:
                statuses = post_batch(base, body)
                break
            except OSError:
                with lock:
                    tally.retries += 1
                time.sleep(min(2.0, 0.05 * 2**attempt))
        else:
            with lock:
                tally.unacknowledged.update(indices)
            continue
        with lock:
            tally.latencies.append(time.perf_counter() - started)
            tally.sent += len(indices)
            for index, status in zip(indices, statuses, strict=True):
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
                if status in ("accepted", "duplicate"):
                    if index not in tally.acked:
                        tally.acked[index] = days[index]
                        tally.order.append(index)
                else:
                    tally.unacknowledged.add(index)


class _Sampler:
    """Samples a process's RSS once a second in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []  # (monotonic seconds, MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            rss = process_rss_mib(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic(), rss))
            if self._stop.wait(1.0):
                return

    def stop(self) -> None:
        """Take a last sample and stop."""
        self._stop.set()
        self._thread.join(5)
        rss = process_rss_mib(self.pid)
        if rss is not None:
            self.samples.append((time.monotonic(), rss))


def compare_with_aggregates(store: AggregateStore, plan: LoadPlan, acked: dict[int, int]) -> dict[str, int]:
    """Lost and double-counted contributions: stored cells against the distinct acknowledged ones.

    Args:
        store: An open :class:`AggregateStore` on the collector's database.
        plan: The plan the contributions came from.
        acked: Acknowledged contribution → its day bucket.

    Returns:
        ``lost``, ``double_counted``, ``sum_mismatches`` (cells whose counts agree but sums differ)
        and ``cells``.
    """
    width = len(plan.features[0])
    counts: dict[tuple[int, int], int] = {}
    sums: dict[tuple[int, int], npt.NDArray[np.float64]] = {}
    for index, day in acked.items():
        variant = index % VARIANTS
        cell = (day, plan.personas[variant])
        counts[cell] = counts.get(cell, 0) + 1
        sums[cell] = sums.get(cell, np.zeros(width)) + np.array(plan.features[variant])
    stored = {(c.day_bucket, c.persona_index): c.aggregate for c in store.daily_aggregates(plan.version)}
    lost = double = mismatched = 0
    for cell in counts.keys() | stored.keys():
        want = counts.get(cell, 0)
        have = stored[cell].count if cell in stored else 0
        lost, double = lost + max(0, want - have), double + max(0, have - want)
        if want == have and not np.array_equal(sums[cell], stored[cell].sums):
            mismatched += 1
    return {"lost": lost, "double_counted": double, "sum_mismatches": mismatched, "cells": len(counts)}


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def _rss_report(samples: list[tuple[float, float]], warm_until: float) -> dict[str, Any]:
    """RSS after warm-up, at the end and at most, and whether it stayed flat."""
    if not samples:
        return {"before": None, "after": None, "max": None, "flat": None}
    warm = [mib for at, mib in samples if at >= warm_until] or [samples[-1][1]]
    before, after = warm[0], samples[-1][1]
    flat = after - before <= max(RSS_FLAT_MIB, RSS_FLAT_FRACTION * before)
    return {"before": round(before, 1), "after": round(after, 1),
            "max": round(max(mib for _, mib in samples), 1), "flat": flat}


def run_load(*, seconds: float, rate: float, batch: int, count: int, workers: int, db: str | None,
             bundles: Path | None, scratch: Path) -> dict[str, Any]:
    """Start a collector, hold it at ``rate`` for ``seconds`` (or ``count`` envelopes), check it.

    Args:
        seconds: How long to send.
        rate: Target envelopes per second.
        batch: Envelopes per request.
        count: The most envelopes to send.
        workers: Sending threads.
        db: A ``--db`` URL (an empty database), or None for SQLite in ``scratch``.
        bundles: A bundles folder, or None to train the benchmark bundle into ``scratch``.
        scratch: A private folder for keys, bundles, the database and the server log.

    Returns:
        The report (see the module docstring).
    """
    bundles = bundles or _bench_bundles(scratch)
    db = db or f"sqlite:///{scratch / 'collector.db'}"
    _, public = generate_collector_key(scratch / "collector-key")
    plan, sealer = LoadPlan.for_bundles(bundles), Sealer(public.read_bytes(), app_id=APP_ID)
    tally, lock = Tally(), threading.Lock()
    server = ServeProcess(db=db, collector_key=scratch / "collector-key", bundles=bundles, app_id=APP_ID,
                          log=scratch / "serve.log")
    with server:
        sampler = _Sampler(server.pid)
        cpu_before = process_cpu_seconds(server.pid) or 0.0
        pacer = _Pacer(rate=rate, batch=batch, seconds=seconds, count=count)
        work = (server.base, plan, sealer, pacer, tally, lock)
        threads = [threading.Thread(target=_send_batches, args=work) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sending = time.monotonic() - pacer.start
        sampler.stop()
        cpu = (process_cpu_seconds(server.pid) or cpu_before) - cpu_before
        with urllib.request.urlopen(f"{server.base}/v1/metrics", timeout=30) as reply:
            metrics = json.loads(reply.read())
    store = open_store(db)
    try:
        check = compare_with_aggregates(store, plan, tally.acked)
    finally:
        store.close()
    acknowledged = tally.statuses["accepted"] + tally.statuses["duplicate"]
    return {
        "target_rate": rate, "batch": batch, "workers": workers, "seconds": round(sending, 1),
        "envelopes_sent": tally.sent, "envelopes_acknowledged": acknowledged,
        "distinct_acknowledged": len(tally.acked), "statuses": tally.statuses, "retries": tally.retries,
        "unacknowledged": len(tally.unacknowledged - tally.acked.keys()),
        "envelopes_per_s": round(acknowledged / sending, 1),
        "held": round(acknowledged / sending / rate, 3),
        "latency_ms": {"p50": round(_percentile(tally.latencies, 50) * 1e3, 1),
                       "p99": round(_percentile(tally.latencies, 99) * 1e3, 1)},
        "server_cpu_percent": round(100 * cpu / sending, 1),
        "rss_mib": _rss_report(sampler.samples, pacer.start + min(10.0, 0.2 * seconds)),
        "collector_metrics": {k: metrics[k] for k in ("accepted", "duplicate", "rejected", "ledger_keys")},
        **check,
    }


def _bench_bundles(scratch: Path) -> Path:
    """The benchmark bundle (k=8, 16 features), trained now, as a bundles folder."""
    folder = scratch / "bundles"
    folder.mkdir(parents=True, exist_ok=True)
    zip_bundle(bench_bundle(RunConfig(quick=True, scratch=scratch)).files, folder / "bench-personas-v1.zip")
    return folder


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to send (300)")
    parser.add_argument("--rate", type=float, default=1_000.0, help="target envelopes per second (1000)")
    parser.add_argument("--batch", type=int, default=50, help="envelopes per request (50)")
    parser.add_argument("--count", type=int, default=None, help="most envelopes (default: rate x seconds)")
    parser.add_argument("--workers", type=int, default=4, help="sending threads (4)")
    parser.add_argument("--db", default=None, help="an empty database URL (default: SQLite in scratch)")
    parser.add_argument("--bundles", type=Path, default=None,
                        help="bundles folder (default: train the benchmark bundle)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0 or not 1 <= args.batch <= 256 or args.workers < 1:
        parser.error("--seconds and --rate must be > 0, --batch 1..256, --workers >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load, print the report; 1 if anything was lost, double-counted or unacknowledged."""
    args = _parse(argv)
    count = args.count if args.count is not None else math.ceil(args.rate * args.seconds)
    with tempfile.TemporaryDirectory(prefix="edgepersona-load-") as scratch:
        report = run_load(seconds=args.seconds, rate=args.rate, batch=args.batch, count=count,
                          workers=args.workers, db=args.db, bundles=args.bundles, scratch=Path(scratch))
    text = json.dumps(report, indent=2, sort_keys=True)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    rss = report["rss_mib"]
    print(f"[load] {report['envelopes_per_s']} envelopes/s of {args.rate:g} target"
          f" ({report['held']:.0%} held) for {report['seconds']} s; lost {report['lost']},"
          f" double-counted {report['double_counted']}, unacknowledged {report['unacknowledged']};"
          f" server RSS {rss['before']} -> {rss['after']} MiB (max {rss['max']})", file=sys.stderr)
    bad = report["lost"] or report["double_counted"] or report["sum_mismatches"] or report["unacknowledged"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
