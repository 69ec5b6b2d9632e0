"""The SQLite aggregate store: the collector's embedded default.

One connection, WAL journal, ``synchronous=FULL`` (an acknowledged
contribution survives power loss), writes serialised by a lock and each
:meth:`SqliteAggregateStore.add_increments` call wrapped in ``BEGIN
IMMEDIATE … COMMIT``. The schema is versioned in ``schema_migrations``;
migrations run in order, each in its own transaction, on open.

Schema, version 3 (feature vectors are little-endian float64 blobs)::

    schema_migrations(version INTEGER PK, description TEXT)
    model_widths(model_version INTEGER PK, feature_count INTEGER)
    aggregates(model_version, persona_index, day_bucket  -- composite PK
               count INTEGER, sums BLOB, sumsq BLOB)
    dedupe_ledger(ledger_key BLOB PK, day_bucket INTEGER)  -- the dedupe set, by day
    ledger_horizon(id = 1, day_bucket INTEGER)             -- v2: the purge horizon
    quota_slots(slot_key BLOB PK, day_bucket INTEGER)      -- v3: per-pseudonym quota
    admission_uses(token_key BLOB PK, expires_day, uses)   -- v3: admission token uses

The shared statements are in :mod:`._queries`.

No table has a column for a pseudonym, a sequence number, a device or a time
finer than a day.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

from edgepersona.sdk import SchemaError
from edgepersona.trainer.collector import _queries as q
from edgepersona.trainer.collector._aggregates import (
    AddResult,
    DailyAggregate,
    FloatVector,
    Increment,
    PersonaAggregate,
    SummedAggregates,
    freeze,
    rolled_forward,
)

__all__ = ["SqliteAggregateStore"]

_VECTOR: Final = np.dtype("<f8")
_MIGRATIONS: Final = (
    (1, "model widths, aggregates per (model version, persona, day) and the dedupe ledger", (
        "CREATE TABLE model_widths (model_version INTEGER PRIMARY KEY,"
        " feature_count INTEGER NOT NULL CHECK (feature_count > 0))",
        "CREATE TABLE aggregates (model_version INTEGER NOT NULL, persona_index INTEGER NOT NULL,"
        " day_bucket INTEGER NOT NULL, count INTEGER NOT NULL CHECK (count > 0),"
        " sums BLOB NOT NULL, sumsq BLOB NOT NULL,"
        " PRIMARY KEY (model_version, persona_index, day_bucket)) WITHOUT ROWID",
        "CREATE TABLE dedupe_ledger (ledger_key BLOB PRIMARY KEY, day_bucket INTEGER NOT NULL)"
        " WITHOUT ROWID",
        "CREATE INDEX dedupe_ledger_by_day ON dedupe_ledger (day_bucket)",
    )),
    (2, "ledger purge horizon: day buckets below it are stale for good", (
        "CREATE TABLE ledger_horizon (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " day_bucket INTEGER NOT NULL)",
        "INSERT INTO ledger_horizon VALUES (1, COALESCE((SELECT MIN(day_bucket) FROM dedupe_ledger), 0))",
    )),
    (3, "per-pseudonym quota slots and admission token uses", (
        "CREATE TABLE quota_slots (slot_key BLOB PRIMARY KEY, day_bucket INTEGER NOT NULL)"
        " WITHOUT ROWID",
        "CREATE INDEX quota_slots_by_day ON quota_slots (day_bucket)",
        "CREATE TABLE admission_uses (token_key BLOB PRIMARY KEY, expires_day INTEGER NOT NULL,"
        " uses INTEGER NOT NULL CHECK (uses >= 0)) WITHOUT ROWID",
    )),
)
_UPSERT: Final = (
    "INSERT INTO aggregates (model_version, persona_index, day_bucket, count, sums, sumsq)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model_version, persona_index, day_bucket)"
    " DO UPDATE SET count = excluded.count, sums = excluded.sums, sumsq = excluded.sumsq")


@dataclass
class _Cell:
    """One aggregate cell being updated inside a transaction (written once at the end)."""

    count: int
    sums: FloatVector
    sumsq: FloatVector
    dirty: bool = field(default=False)


class SqliteAggregateStore(SummedAggregates):
    """Aggregates and the dedupe set in one SQLite file (see the module docstring).

    Args:
        path: The database file (created with mode 0600 if missing), or
            ``":memory:"`` for a throw-away store.

    Raises:
        SchemaError: The file's schema is newer than this code knows.
        sqlite3.DatabaseError: The file is not a usable SQLite database.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        if self._path != ":memory:" and not Path(self._path).exists():
            os.close(os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    @property
    def path(self) -> str:
        """The database file (``":memory:"`` for an in-memory store)."""
        return self._path

    def schema_version(self) -> int:
        """The latest migration applied to this database.

        Returns:
            The schema version (0 for an empty database).
        """
        with self._lock:
            return self._applied_version()

    def _applied_version(self) -> int:
        """Read the schema version; the caller holds the lock."""
        row = self._conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        """Apply pending migrations in order, each in its own transaction."""
        with self._lock:
            self._conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations"
                               " (version INTEGER PRIMARY KEY, description TEXT NOT NULL)")
            known = _MIGRATIONS[-1][0]
            if (current := self._applied_version()) > known:
                raise SchemaError(f"collector database {self._path} has schema version {current},"
                                  f" newer than this edgepersona knows ({known}); upgrade edgepersona")
            for version, description, statements in _MIGRATIONS:
                with self._transaction():
                    if self._applied_version() >= version:
                        continue
                    for statement in statements:
                        self._conn.execute(statement)
                    self._conn.execute("INSERT INTO schema_migrations VALUES (?, ?)",
                                       (version, description))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception; lock held by caller."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def add_increments(self, increments: Sequence[Increment], *, purge_before_day: int
                       ) -> list[AddResult]:
        """Purge expired dedupe keys and quota slots, then add increments; one transaction.

        Args:
            increments: In order; a key repeated within the call is a duplicate.
            purge_before_day: Keys of day buckets below this are deleted.

        Returns:
            One result per increment, in order.

        Raises:
            sqlite3.Error: The transaction failed; nothing of it was written.
        """
        with self._lock, self._transaction():
            horizon = self._advance_horizon(purge_before_day)
            widths: dict[int, int] = {}
            cells: dict[tuple[int, int, int], _Cell] = {}
            results = [AddResult.STALE if increment.day_bucket < horizon
                       else self._add_one(increment, widths, cells) for increment in increments]
            self._conn.executemany(_UPSERT, [
                (*key, cell.count, cell.sums.tobytes(), cell.sumsq.tobytes())
                for key, cell in cells.items() if cell.dirty])
        return results

    def _advance_horizon(self, before_day: int) -> int:
        """Move the purge horizon forward and purge below it; inside the transaction.

        The horizon only moves forward: keys below it may be purged, so a contribution
        of such a day is refused whatever the judging collector's clock says.
        """
        self._conn.execute("UPDATE ledger_horizon SET day_bucket = MAX(day_bucket, ?)", (before_day,))
        horizon = int(self._conn.execute(q.HORIZON).fetchone()[0])
        for statement in (q.PURGE_DEDUPE, q.PURGE_SLOTS, q.PURGE_ADMISSION):
            self._conn.execute(q.render(statement, "?"), (horizon,))
        return horizon

    def _add_one(self, increment: Increment, widths: dict[int, int],
                 cells: dict[tuple[int, int, int], _Cell]) -> AddResult:
        """Record one increment in the dedupe set, a quota slot and its cell; inside the transaction."""
        width = self._width(increment.model_version, widths)
        features = np.array(increment.features, dtype=_VECTOR)
        if width is not None and width != len(features):
            return AddResult.WIDTH_CONFLICT
        inserted = self._conn.execute(
            "INSERT INTO dedupe_ledger (ledger_key, day_bucket) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (increment.dedupe_key, increment.day_bucket)).rowcount
        if inserted == 0:
            return AddResult.DUPLICATE
        if not self._take_slot(increment):
            self._conn.execute("DELETE FROM dedupe_ledger WHERE ledger_key = ?", (increment.dedupe_key,))
            return AddResult.QUOTA_EXCEEDED
        if width is None:
            self._conn.execute("INSERT INTO model_widths VALUES (?, ?)",
                               (increment.model_version, len(features)))
            widths[increment.model_version] = len(features)
        key = (increment.model_version, increment.persona_index, increment.day_bucket)
        cell = cells.get(key) or self._load_cell(key, len(features))
        cells[key] = cell
        cell.count, cell.dirty = cell.count + 1, True
        cell.sums += features
        cell.sumsq += features * features
        return AddResult.ADDED

    def _take_slot(self, increment: Increment) -> bool:
        """Take the first free quota slot of the increment, in one statement (True if no quota)."""
        if not increment.quota_keys:
            return True
        slots = ", ".join("(?, ?)" for _ in increment.quota_keys)
        statement = ("INSERT INTO quota_slots (slot_key, day_bucket)"  # noqa: S608 - only markers
                     f" WITH slot (key, rank) AS (VALUES {slots}) SELECT key, ? FROM slot"
                     " WHERE NOT EXISTS (SELECT 1 FROM quota_slots WHERE slot_key = slot.key)"
                     " ORDER BY rank LIMIT 1")
        ranked = [value for rank, key in enumerate(increment.quota_keys) for value in (key, rank)]
        return self._conn.execute(statement, (*ranked, increment.day_bucket)).rowcount == 1

    def _width(self, model_version: int, widths: dict[int, int]) -> int | None:
        """The stored feature count of a model version (cached for this transaction)."""
        if model_version not in widths:
            row = self._conn.execute("SELECT feature_count FROM model_widths WHERE model_version = ?",
                                     (model_version,)).fetchone()
            if row is None:
                return None
            widths[model_version] = int(row[0])
        return widths[model_version]

    def _load_cell(self, key: tuple[int, int, int], width: int) -> _Cell:
        """The stored cell, or an empty one, as writable arrays."""
        row = self._conn.execute(
            "SELECT count, sums, sumsq FROM aggregates"
            " WHERE model_version = ? AND persona_index = ? AND day_bucket = ?", key).fetchone()
        if row is None:
            return _Cell(0, np.zeros(width), np.zeros(width))
        return _Cell(int(row[0]), np.frombuffer(row[1], dtype=_VECTOR).astype(np.float64),
                     np.frombuffer(row[2], dtype=_VECTOR).astype(np.float64))

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
        with self._lock:
            rows = self._conn.execute(q.render(q.DAILY_CELLS, "?"),
                                      (model_version, low, high)).fetchall()
        return [DailyAggregate(int(day), int(persona), PersonaAggregate(
                    int(count), freeze(np.frombuffer(sums, dtype=_VECTOR)),
                    freeze(np.frombuffer(sumsq, dtype=_VECTOR))))
                for day, persona, count, sums, sumsq in rows]

    def model_versions(self) -> list[int]:
        """Model versions that have aggregates, ascending.

        Returns:
            The versions.
        """
        with self._lock:
            rows = self._conn.execute(q.MODEL_VERSIONS).fetchall()
        return [int(row[0]) for row in rows]

    def dedupe_size(self) -> int:
        """Number of dedupe keys held.

        Returns:
            The count.
        """
        with self._lock:
            return int(self._conn.execute(q.DEDUPE_SIZE).fetchone()[0])

    def purge_dedupe(self, *, before_day: int) -> int:
        """Delete dedupe keys (and quota slots) of day buckets below ``before_day``.

        Args:
            before_day: The oldest day bucket kept.

        Returns:
            How many dedupe keys were deleted.
        """
        with self._lock, self._transaction():
            self._conn.execute(q.render(q.PURGE_SLOTS, "?"), (before_day,))
            return self._conn.execute(q.render(q.PURGE_DEDUPE, "?"), (before_day,)).rowcount

    def spend_admission(self, token_key: bytes, *, expires_day: int, uses: int, quota: int) -> int:
        """Spend up to ``uses`` of an admission token's ``quota``, atomically.

        Args:
            token_key: The keyed hash of the token's id.
            expires_day: The token's last day; its row is purged after it.
            uses: How many uses this request asks for.
            quota: The token's total quota.

        Returns:
            How many uses were granted (0 when the quota is spent).
        """
        with self._lock, self._transaction():
            (spent,) = self._conn.execute(q.render(q.LOCK_ADMISSION, "?"),
                                          (token_key, expires_day)).fetchone()
            granted = max(0, min(uses, quota - int(spent)))
            self._conn.execute(q.render(q.SET_ADMISSION, "?"), (int(spent) + granted, token_key))
        return granted

    def roll_up_small_cells(self, k_min: Mapping[int, int], *, before_day: int) -> int:
        """Roll closed cells below k-min forward into the oldest open day (see the protocol).

        Args:
            k_min: Model version → k-min; versions not listed are left alone.
            before_day: The oldest open day bucket.

        Returns:
            How many closed cells were rolled forward.
        """
        rolled = 0
        with self._lock, self._transaction():
            horizon = self._advance_horizon(before_day)
            for version, k in sorted(k_min.items()):
                rows = self._conn.execute(q.render(q.SMALL_CLOSED_OF_VERSION, "?"),
                                          (version, horizon, k)).fetchall()
                cells = [(int(p), int(d), int(n), np.frombuffer(s, dtype=_VECTOR),
                          np.frombuffer(sq, dtype=_VECTOR)) for p, d, n, s, sq in rows]
                for persona, day, *_ in cells:
                    self._conn.execute(q.render(q.DELETE_CELL, "?"), (version, persona, day))
                for persona, (count, sums, sumsq) in rolled_forward(cells).items():
                    cell = self._load_cell((version, persona, horizon), len(sums))
                    self._conn.execute(_UPSERT, (version, persona, horizon, cell.count + count,
                                                 (cell.sums + sums).tobytes(),
                                                 (cell.sumsq + sumsq).tobytes()))
                rolled += len(cells)
        return rolled

    def small_closed_cells(self, k_min: int) -> list[tuple[int, int, int, int]]:
        """Closed cells (below the purge horizon) whose count is below ``k_min``.

        Args:
            k_min: The smallest count a closed cell may hold.

        Returns:
            (model version, persona index, day bucket, count) of each, sorted.
        """
        with self._lock:
            rows = self._conn.execute(q.render(q.SMALL_CLOSED_CELLS, "?"), (k_min,)).fetchall()
        return [(int(v), int(p), int(d), int(n)) for v, p, d, n in rows]

    def close(self) -> None:
        """Checkpoint the WAL and close the connection."""
        with self._lock:
            self._conn.close()
