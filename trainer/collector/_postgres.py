"""The PostgreSQL aggregate store: several collector processes sharing one database.

The tables, keys and migration history are the SQLite store's (:mod:`._sqlite`),
with PostgreSQL types; feature vectors are ``double precision[]`` instead of
blobs, so the database itself adds them element-wise::

    schema_migrations(version PK, description)       same rows as SQLite's
    model_widths(model_version PK, feature_count)
    aggregates(model_version, persona_index, day_bucket  -- composite PK
               count, sums float8[], sumsq float8[])
    dedupe_ledger(ledger_key bytea PK, day_bucket)   -- the dedupe set, indexed by day
    ledger_horizon, quota_slots, admission_uses      -- v2, v3: as SQLite's

How concurrent writers stay exact. Each :meth:`PostgresAggregateStore.add_increments`
call is one READ COMMITTED transaction:

1. lock the purge horizon row, delete expired dedupe keys, quota slots, token uses;
2. insert the batch's dedupe keys in one ``INSERT … ON CONFLICT DO NOTHING
   RETURNING``, sorted by key: a key another transaction holds uncommitted makes
   this one wait and then see it as a duplicate, so the primary key decides
   exactly once which request counts a contribution;
3. the first contribution of a model version with no stored width claims it
   (``ON CONFLICT DO NOTHING``); if another transaction claimed it first, the
   whole call rolls back and runs again, now seeing the stored width; quota
   slots are read, the first free one per increment chosen and inserted; a
   slot another transaction took meanwhile rolls the call back too;
4. one upsert per touched cell, in key order, carrying the call's count and
   vector sums; its ``DO UPDATE`` adds them to the stored row element-wise *in
   SQL*. The upsert locks the row and adds to its latest committed value, so
   no update is lost, and no stored value round-trips through Python, so no
   ``SELECT … FOR UPDATE`` and no race on creating a cell. (A new cell's sums
   are bit-for-bit SQLite's; a cell that grows across calls adds each call's
   sum at once, so its last bits can differ from SQLite's one-at-a-time order,
   as they do anyway between concurrent writers.)

Locks are taken in one global order (the purge horizon row, dedupe keys sorted,
quota slots sorted, widths, cells sorted), so writers queue instead of
deadlocking. Deadlocks and serialization failures, and lost connections, are
still retried a few times with jittered backoff; a retried call is safe because
the dedupe set turns anything that did commit into duplicates. Migrations run
under an advisory lock, so collectors starting together migrate once.
Durability: commits wait for the WAL flush (``synchronous_commit`` is raised to
``local`` if the server has it ``off``).
The URL's password is never logged nor put in an error message. Shared
statements are in :mod:`._queries`, transaction bodies in :mod:`._pgwrite`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Final, TypeVar

import psycopg
from psycopg import IsolationLevel
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

from edgepersona.sdk import InputError, SchemaError
from edgepersona.trainer.collector import _queries as q
from edgepersona.trainer.collector._aggregates import (
    AddResult,
    DailyAggregate,
    Increment,
    PersonaAggregate,
    SummedAggregates,
    freeze,
)
from edgepersona.trainer.collector._pgwrite import Connection as _Connection, RerunError, add, roll_up

__all__ = ["PostgresAggregateStore"]

_log = logging.getLogger("edgepersona.trainer.collector")
_T = TypeVar("_T")

_MIGRATION_LOCK: Final = 0x6570_6D69_6772_6174  # pg_advisory_xact_lock key, b"epmigrat"
_MIGRATIONS: Final = (
    (1, "model widths, aggregates per (model version, persona, day) and the dedupe ledger", (
        "CREATE TABLE model_widths (model_version bigint PRIMARY KEY,"
        " feature_count integer NOT NULL CHECK (feature_count > 0))",
        "CREATE TABLE aggregates (model_version bigint NOT NULL, persona_index bigint NOT NULL,"
        " day_bucket bigint NOT NULL, count bigint NOT NULL CHECK (count > 0),"
        " sums double precision[] NOT NULL, sumsq double precision[] NOT NULL,"
        " PRIMARY KEY (model_version, persona_index, day_bucket),"
        " CHECK (array_ndims(sums) = 1 AND array_ndims(sumsq) = 1"
        " AND cardinality(sums) = cardinality(sumsq)"
        " AND array_position(sums, NULL) IS NULL AND array_position(sumsq, NULL) IS NULL))",
        "CREATE TABLE dedupe_ledger (ledger_key bytea PRIMARY KEY, day_bucket bigint NOT NULL)",
        "CREATE INDEX dedupe_ledger_by_day ON dedupe_ledger (day_bucket)",
    )),
    (2, "ledger purge horizon: day buckets below it are stale for good", (
        "CREATE TABLE ledger_horizon (id integer PRIMARY KEY CHECK (id = 1),"
        " day_bucket bigint NOT NULL)",
        "INSERT INTO ledger_horizon VALUES (1, COALESCE((SELECT MIN(day_bucket) FROM dedupe_ledger), 0))",
    )),
    (3, "per-pseudonym quota slots and admission token uses", (
        "CREATE TABLE quota_slots (slot_key bytea PRIMARY KEY, day_bucket bigint NOT NULL)",
        "CREATE INDEX quota_slots_by_day ON quota_slots (day_bucket)",
        "CREATE TABLE admission_uses (token_key bytea PRIMARY KEY, expires_day bigint NOT NULL,"
        " uses bigint NOT NULL CHECK (uses >= 0))",
    )),
)
_RETRIED_STATES: Final = frozenset({"40001", "40P01", "57P01"})  # serialization, deadlock, shutdown
_ATTEMPTS: Final = 6
_BACKOFF: Final = 0.005  # seconds before the second attempt, doubling after
_CONNECT_TIMEOUT: Final = 10  # seconds, unless the URL sets connect_timeout


class PostgresAggregateStore(SummedAggregates):
    """Aggregates and the dedupe set in a PostgreSQL database (see the module docstring).

    Args:
        url: ``postgresql://user:password@host:port/database`` (libpq URI
            parameters such as ``sslmode`` or ``options`` are honoured).
        pool_size: Most connections open at once; ``add_increments`` calls
            from that many threads run concurrently.

    Raises:
        InputError: The URL cannot be parsed, or no connection can be made
            (the message never contains the URL nor its password).
        SchemaError: The database's schema is newer than this code knows.
    """

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        if type(pool_size) is not int or not 1 <= pool_size <= 64:
            raise InputError(f"pool_size must be an int in 1..64, got {pool_size!r}")
        self._target, self._secrets = _describe(url)
        extra: dict[str, str | int] = {"application_name": "edgepersona-collector"}
        if "connect_timeout" not in conninfo_to_dict(url):
            extra["connect_timeout"] = _CONNECT_TIMEOUT
        self._conninfo = make_conninfo(url, **extra)
        self._slots = threading.BoundedSemaphore(pool_size)
        self._idle: list[_Connection] = []
        self._idle_lock = threading.Lock()
        self._closed = False
        try:
            first = self._connect()
        except psycopg.Error as exc:
            raise InputError(f"could not connect to {self._target}: {self._scrub(str(exc))}"
                             " (the URL is not shown: it may hold a password)") from None
        self._idle.append(first)
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> _Connection:
        """A new autocommit connection pinned to READ COMMITTED and durable commits."""
        conn = psycopg.connect(self._conninfo, autocommit=True)
        conn.isolation_level = IsolationLevel.READ_COMMITTED  # see the module docstring
        row = conn.execute("SHOW synchronous_commit").fetchone()
        if row is not None and row[0] == "off":
            conn.execute("SET synchronous_commit TO local")
        return conn

    def _scrub(self, message: str) -> str:
        """The message with any form of the URL's password replaced by ``***``."""
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return " ".join(message.split())

    @contextmanager
    def _connection(self) -> Iterator[_Connection]:
        """Borrow a pooled connection (opened on demand); broken ones are discarded."""
        with self._slots:
            with self._idle_lock:
                if self._closed:
                    raise psycopg.InterfaceError("the PostgreSQL aggregate store is closed")
                conn = self._idle.pop() if self._idle else None
            conn = conn if conn is not None and not conn.closed else self._connect()
            try:
                yield conn
            finally:
                reusable = not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE
                with self._idle_lock:
                    if reusable and not self._closed:
                        self._idle.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()

    def _retrying(self, work: Callable[[_Connection], _T]) -> _T:
        """Run ``work`` in a transaction, again after deadlocks, serialization failures, lost links."""
        failure: Exception | None = None
        for attempt in range(_ATTEMPTS):
            if attempt:
                time.sleep(_BACKOFF * 2 ** (attempt - 1) * (0.5 + secrets.randbelow(1000) / 1000))
                _log.info("postgres: retrying a transaction (attempt %d of %d) after: %s",
                          attempt + 1, _ATTEMPTS, self._scrub(str(failure)))
            try:
                with self._connection() as conn, conn.transaction():
                    return work(conn)
            except RerunError as exc:
                failure = exc
            except psycopg.Error as exc:
                if not _retried(exc):
                    raise
                failure = exc
        raise psycopg.OperationalError(f"the transaction failed {_ATTEMPTS} times; the last error"
                                       f" was: {self._scrub(str(failure))}") from failure

    def schema_version(self) -> int:
        """The latest migration applied to this database.

        Returns:
            The schema version (0 for an empty database).
        """
        with self._connection() as conn:
            return _applied_version(conn)

    def _migrate(self) -> None:
        """Apply pending migrations in order, each in its own transaction, under an advisory lock."""
        known = _MIGRATIONS[-1][0]
        for version, description, statements in _MIGRATIONS:
            with self._connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations"
                             " (version integer PRIMARY KEY, description text NOT NULL)")
                if (current := _applied_version(conn)) > known:
                    raise SchemaError(f"collector database {self._target} has schema version {current},"
                                      f" newer than this edgepersona knows ({known}); upgrade edgepersona")
                if current >= version:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, description))

    def add_increments(self, increments: Sequence[Increment], *, purge_before_day: int
                       ) -> list[AddResult]:
        """Purge expired dedupe keys and quota slots, then add increments; one transaction.

        Args:
            increments: In order; a key repeated within the call is a duplicate.
            purge_before_day: Keys of day buckets below this are deleted.

        Returns:
            One result per increment, in order.

        Raises:
            psycopg.Error: The transaction failed (after retries where they
                help); nothing of it was written.
        """
        return self._retrying(lambda conn: add(conn, increments, purge_before_day))

    def daily_aggregates(self, model_version: int, *, first_day: int | None = None,
                         last_day: int | None = None) -> list[DailyAggregate]:
        """Per-(persona, day) aggregates, for refits that weigh days differently.

        Args:
            model_version: The model version.
            first_day: The first day bucket included (default: all).
            last_day: The last day bucket included (default: all).

        Returns:
            The cells, ordered by day bucket then persona index.
        """
        low = -1 if first_day is None else first_day
        high = 2**32 if last_day is None else last_day
        with self._connection() as conn:
            rows = conn.execute(q.render(q.DAILY_CELLS, "%s"), (model_version, low, high)).fetchall()
        return [DailyAggregate(int(day), int(persona),
                               PersonaAggregate(int(count), freeze(sums), freeze(sumsq)))
                for day, persona, count, sums, sumsq in rows]

    def model_versions(self) -> list[int]:
        """Model versions that have aggregates, ascending.

        Returns:
            The versions.
        """
        with self._connection() as conn:
            rows = conn.execute(q.MODEL_VERSIONS).fetchall()
        return [int(row[0]) for row in rows]

    def dedupe_size(self) -> int:
        """Number of dedupe keys held.

        Returns:
            The count.
        """
        with self._connection() as conn:
            row = conn.execute(q.DEDUPE_SIZE).fetchone()
        return int(row[0]) if row is not None else 0

    def purge_dedupe(self, *, before_day: int) -> int:
        """Delete dedupe keys (and quota slots) of day buckets below ``before_day``.

        Args:
            before_day: The oldest day bucket kept.

        Returns:
            How many dedupe keys were deleted.

        Raises:
            psycopg.Error: The delete failed (after retries where they help).
        """
        def purge(conn: _Connection) -> int:
            conn.execute(q.render(q.PURGE_SLOTS, "%s"), (before_day,))
            return conn.execute(q.render(q.PURGE_DEDUPE, "%s"), (before_day,)).rowcount

        return self._retrying(purge)

    def spend_admission(self, token_key: bytes, *, expires_day: int, uses: int, quota: int) -> int:
        """Spend up to ``uses`` of an admission token's ``quota``, atomically.

        Args:
            token_key: The keyed hash of the token's id.
            expires_day: The token's last day; its row is purged after it.
            uses: How many uses this request asks for.
            quota: The token's total quota.

        Returns:
            How many uses were granted (0 when the quota is spent).

        Raises:
            psycopg.Error: The transaction failed (after retries where they help).
        """
        def spend(conn: _Connection) -> int:
            row = conn.execute(q.render(q.LOCK_ADMISSION, "%s"), (token_key, expires_day)).fetchone()
            spent = int(row[0]) if row is not None else quota
            granted = max(0, min(uses, quota - spent))
            conn.execute(q.render(q.SET_ADMISSION, "%s"), (spent + granted, token_key))
            return granted

        return self._retrying(spend)

    def roll_up_small_cells(self, k_min: Mapping[int, int], *, before_day: int) -> int:
        """Roll closed cells below k-min forward into the oldest open day (see the protocol).

        Args:
            k_min: Model version → k-min; versions not listed are left alone.
            before_day: The oldest open day bucket.

        Returns:
            How many closed cells were rolled forward.

        Raises:
            psycopg.Error: The transaction failed (after retries where they help).
        """
        return self._retrying(lambda conn: roll_up(conn, k_min, before_day))

    def small_closed_cells(self, k_min: int) -> list[tuple[int, int, int, int]]:
        """Closed cells (below the purge horizon) whose count is below ``k_min``.

        Args:
            k_min: The smallest count a closed cell may hold.

        Returns:
            (model version, persona index, day bucket, count) of each, sorted.
        """
        with self._connection() as conn:
            rows = conn.execute(q.render(q.SMALL_CLOSED_CELLS, "%s"), (k_min,)).fetchall()
        return [(int(v), int(p), int(d), int(n)) for v, p, d, n in rows]

    def close(self) -> None:
        """Close every connection; connections still borrowed close when returned."""
        with self._idle_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _describe(url: str) -> tuple[str, tuple[str, ...]]:
    """The database named without credentials, and the password's forms to scrub from messages."""
    try:
        raw = urllib.parse.urlsplit(url).password
        options = conninfo_to_dict(url)
    except (ValueError, psycopg.Error):
        raise InputError("the PostgreSQL URL cannot be parsed (it is not shown: it may hold a"
                         " password); expected postgresql://user:password@host:port/database") from None
    password = str(options.get("password") or "")
    target = (f"PostgreSQL database {options.get('dbname', '(default)')!s} on"
              f" {options.get('host', 'localhost')!s}:{options.get('port', 5432)!s}")
    forms = sorted({form for form in (password, raw or "", urllib.parse.quote(password, safe=""))
                    if form}, key=len, reverse=True)
    return target, tuple(forms)


def _retried(error: psycopg.Error) -> bool:
    """Whether running the transaction again may succeed (and is safe: it rolled back)."""
    state = error.sqlstate
    if state is None:
        return isinstance(error, psycopg.OperationalError)  # the connection dropped
    return state in _RETRIED_STATES or state.startswith("08")


def _applied_version(conn: _Connection) -> int:
    """Read the schema version (0 before the first migration)."""
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row is not None else 0
