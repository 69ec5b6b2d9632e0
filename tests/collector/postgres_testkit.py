"""PostgreSQL for the collector tests: the server's URL, a fresh schema per test, backends.

The tests read ``EDGEPERSONA_TEST_POSTGRES_URL`` (``scripts/ci/start_postgres.sh``
prints it). Without it they skip, unless ``CI`` is set: then they fail, since CI
must run them. Each test gets its own schema (the URL's ``search_path``), so
tests never see each other's tables, and drops it afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from edgepersona.sdk import Contribution, Sealer
from edgepersona.trainer.collector import AggregateStore, Increment, SqliteAggregateStore, encode_batch
from edgepersona.trainer.collector._postgres import PostgresAggregateStore

POSTGRES_ENV = "EDGEPERSONA_TEST_POSTGRES_URL"
START_HINT = 'start a throwaway server with: eval "$(scripts/ci/start_postgres.sh)"'


def postgres_url() -> str:
    """The test server's URL; skips the test without one (fails it in CI)."""
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        reason = f"{POSTGRES_ENV} is not set, so the PostgreSQL collector tests cannot run; {START_HINT}"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
        pytest.skip(reason)
    return url


def with_search_path(url: str, schema: str) -> str:
    """The URL with libpq ``options`` that put the session in ``schema``."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    query.append(("options", f"-csearch_path={schema}"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A URL whose tables live in a new, empty schema that is dropped on exit."""
    url = postgres_url()
    schema = f"test_{secrets.token_hex(6)}"
    name = sql.Identifier(schema)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(name))
    try:
        yield with_search_path(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(name))


def run_sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement on a PostgreSQL URL, outside any store."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement.encode())
        return cursor.fetchall() if cursor.description is not None else []


@dataclass(frozen=True)
class Backend:
    """One storage backend under test, bound to one empty database.

    Attributes:
        name: "sqlite" or "postgresql".
        open: Opens (migrating if needed) a store on that database.
        execute: Runs raw SQL on that database, outside the store.
        error: What a failed ``add_increments`` raises.
    """

    name: str
    open: Callable[[], AggregateStore]
    execute: Callable[[str], list[tuple[Any, ...]]]
    error: type[Exception]

    def tables(self) -> set[str]:
        """The tables the store created."""
        query = ("SELECT name FROM sqlite_master WHERE type = 'table'" if self.name == "sqlite" else
                 "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
        return {row[0] for row in self.execute(query)}


def sqlite_backend(path: Path) -> Backend:
    """SQLite in a file."""
    def execute(statement: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as raw:
            return raw.execute(statement).fetchall()

    return Backend("sqlite", lambda: SqliteAggregateStore(path), execute, sqlite3.Error)


def postgres_backend(url: str) -> Backend:
    """PostgreSQL in one schema."""
    return Backend("postgresql", lambda: PostgresAggregateStore(url), lambda s: run_sql(url, s),
                   psycopg.Error)


def free_port() -> int:
    """A loopback port that was free a moment ago (``serve`` needs a number, not a socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_healthy(base: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    """Poll ``/healthz`` until it answers, the process dies or the deadline passes."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"edgepersona serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1.0) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"edgepersona serve at {base} did not start in time")


@contextmanager
def serve_processes(count: int, *, db_url: str, keys: Path, bundles: Path, app_id: str,
                    logs: Path, start_timeout: float = 30.0, extra: Sequence[str] = ()
                    ) -> Iterator[list[str]]:
    """``count`` ``edgepersona serve`` processes on loopback, sharing one database; stopped on exit.

    Yields:
        Their base URLs. Each one's stderr (its log) is in ``logs/serve-N.log``.
    """
    processes: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for number in range(count):
            port = free_port()
            with (logs / f"serve-{number}.log").open("wb") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "edgepersona.trainer.cli", "serve", "--db", db_url,
                     "--collector-key", str(keys), "--bundles", str(bundles), "--app-id", app_id,
                     "--port", str(port), *extra], stdout=log, stderr=subprocess.STDOUT))
            bases.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + start_timeout
        for base, process in zip(bases, processes, strict=True):
            wait_until_healthy(base, process, deadline)
        yield bases
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def blocked_on_a_lock(url: str, deadline: float = 10.0) -> None:
    """Wait until some session of the test role waits for a lock (the store's, behind ours)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if run_sql(url, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND application_name = 'edgepersona-collector'"):
            return
        time.sleep(0.01)
    raise AssertionError("the store never waited for the open transaction's lock")


def add_in_background(store: AggregateStore, increments: list[Increment]
                      ) -> tuple[threading.Thread, list[Any]]:
    """Start ``add_increments`` in a thread; its result lands in the returned list."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(store.add_increments(increments,
                                                                             purge_before_day=0)))
    thread.start()
    return thread, out


def post_sync(base: str, body: bytes) -> tuple[int, list[str]]:
    """POST a sync body; the HTTP status and each envelope's status."""
    request = urllib.request.Request(f"{base}/v1/sync", data=body,
                                     headers={"content-type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.status, [r["status"] for r in json.loads(response.read())["results"]]


def get_json(url: str) -> Any:
    """GET a JSON document."""
    with urllib.request.urlopen(url, timeout=20) as response:
        return json.loads(response.read())


def send_overlapping(bases: list[str], items: list[Contribution], device: Sealer,
                     rng: np.random.Generator) -> tuple[dict[int, list[str]], list[str]]:
    """Send every contribution to two collectors, overlapping, from four client threads.

    In groups of 40: the first server gets the group while, at the same moment, the
    second gets a shuffled 60% of it (every third one resealed: other bytes, same
    contribution; two sent twice in the batch) and 10 of the next group.

    Returns:
        Each item's statuses, in no particular order, and any request failures.
    """
    sealed = [device.seal(item) for item in items]
    plan: list[tuple[str, list[int], list[bytes]]] = []
    for start in range(0, len(items), 40):
        group = list(range(start, min(start + 40, len(items))))
        other = [int(i) for i in rng.permutation(group)[:24]] + list(range(start + 40, start + 50))[
            : max(0, len(items) - start - 40)]
        other += other[:2]
        plan.append((bases[0], group, [sealed[i] for i in group]))
        plan.append((bases[1], other, [device.seal(items[i]) if i % 3 == 0 else sealed[i] for i in other]))
    statuses: dict[int, list[str]] = {i: [] for i in range(len(items))}
    failures: list[str] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        for base, indices, envelopes in plan[worker::4]:
            try:
                code, results = post_sync(base, encode_batch(envelopes))
            except OSError as exc:
                code, results = 0, [repr(exc)]
            with lock:
                if code != 200:
                    failures.append(f"HTTP {code}: {results}")
                    continue
                for index, status in zip(indices, results, strict=True):
                    statuses[index].append(status)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses, failures + [f"{t.name} still running" for t in threads if t.is_alive()]


def exact_cells(items: list[Contribution]) -> dict[tuple[int, int], tuple[int, list[float], list[float]]]:
    """(day, persona) -> count, sums, sums of squares of the items (exact for dyadic features)."""
    cells: dict[tuple[int, int], tuple[int, list[float], list[float]]] = {}
    for item in items:
        count, sums, sumsq = cells.get((item.day_bucket, item.persona_index), (0, [0.0] * 6, [0.0] * 6))
        cells[(item.day_bucket, item.persona_index)] = (
            count + 1, [a + b for a, b in zip(sums, item.features, strict=True)],
            [a + b * b for a, b in zip(sumsq, item.features, strict=True)])
    return cells
