"""The SQLite aggregate store: migrations, WAL, atomic increments, dedupe, expiry, reads, URLs."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest

from edgepersona.sdk import InputError, SchemaError
from edgepersona.trainer.collector import (
    AddResult,
    Increment,
    SqliteAggregateStore,
    dedupe_key,
    open_store,
)

SECRET = b"k" * 32


def inc(key: int, *, day: int = 100, version: int = 1, persona: int = 0,
        features: tuple[float, ...] = (1.0, 2.0)) -> Increment:
    return Increment(dedupe_key(SECRET, f"{key:016x}", key), day, version, persona, features)


def test_a_new_database_is_migrated_once_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = SqliteAggregateStore(path)
    assert store.schema_version() == 3
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    store.close()
    again = SqliteAggregateStore(path)
    assert again.schema_version() == 3
    again.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT version FROM schema_migrations").fetchall() == [(1,), (2,), (3,)]
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"schema_migrations", "model_widths", "aggregates", "dedupe_ledger",
                      "ledger_horizon", "quota_slots", "admission_uses"}


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    SqliteAggregateStore(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO schema_migrations VALUES (99, 'from the future')")
    with pytest.raises(SchemaError, match="schema version 99"):
        SqliteAggregateStore(path)


def test_increments_add_counts_sums_and_squares() -> None:
    store = SqliteAggregateStore(":memory:")
    results = store.add_increments([inc(1), inc(2, features=(3.0, -1.0)), inc(3, persona=1),
                                    inc(4, day=101)], purge_before_day=0)
    assert results == [AddResult.ADDED] * 4
    [d100p0, d100p1, d101p0] = store.daily_aggregates(1)
    assert (d100p0.day_bucket, d100p0.persona_index, d100p0.aggregate.count) == (100, 0, 2)
    assert d100p0.aggregate.sums.tolist() == [4.0, 1.0]
    assert d100p0.aggregate.sumsq.tolist() == [10.0, 5.0]
    assert (d100p1.persona_index, d101p0.day_bucket) == (1, 101)
    total = store.aggregates(1)
    assert sorted(total) == [0, 1]
    assert total[0].count == 3 and total[0].sums.tolist() == [5.0, 3.0]
    assert total[0].mean.tolist() == pytest.approx([5 / 3, 1.0])
    assert total[0].variance.tolist() == pytest.approx([np.var([1, 3, 1]), np.var([2, -1, 2])])
    assert store.aggregates(1, first_day=101)[0].count == 1
    assert store.aggregates(1, last_day=100)[0].count == 2
    assert store.aggregates(2) == {}
    assert store.model_versions() == [1]
    with pytest.raises(ValueError, match="read-only"):
        total[0].sums[0] = 9.0


def test_duplicates_and_width_conflicts_change_nothing() -> None:
    store = SqliteAggregateStore(":memory:")
    results = store.add_increments([inc(1), inc(1), inc(2, features=(1.0, 2.0, 3.0))],
                                   purge_before_day=0)
    assert results == [AddResult.ADDED, AddResult.DUPLICATE, AddResult.WIDTH_CONFLICT]
    assert store.add_increments([inc(1, persona=3)], purge_before_day=0) == [AddResult.DUPLICATE]
    assert store.aggregates(1)[0].count == 1
    assert store.dedupe_size() == 1


def test_a_failed_call_writes_nothing() -> None:
    store = SqliteAggregateStore(":memory:")
    store.add_increments([inc(1)], purge_before_day=0)
    broken = Increment(object(), 100, 1, 0, (1.0, 2.0))  # type: ignore[arg-type]
    with pytest.raises(sqlite3.Error):
        store.add_increments([inc(2), inc(3, day=50), broken], purge_before_day=90)
    assert store.dedupe_size() == 1  # neither the purge, the two increments nor their keys
    assert store.aggregates(1)[0].count == 1
    assert [c.day_bucket for c in store.daily_aggregates(1)] == [100]


def test_expired_dedupe_keys_are_purged() -> None:
    store = SqliteAggregateStore(":memory:")
    store.add_increments([inc(1, day=10), inc(2, day=11), inc(3, day=12)], purge_before_day=0)
    store.add_increments([], purge_before_day=11)
    assert store.dedupe_size() == 2
    assert store.purge_dedupe(before_day=13) == 2
    assert store.dedupe_size() == 0
    assert store.aggregates(1)[0].count == 3  # aggregates never expire


def test_dedupe_keys_depend_on_secret_pseudonym_and_sequence() -> None:
    base = dedupe_key(SECRET, "ab" * 16, 7)
    assert len(base) == 32
    assert base == dedupe_key(SECRET, "ab" * 16, 7)
    others = {dedupe_key(b"j" * 32, "ab" * 16, 7), dedupe_key(SECRET, "ab" * 16, 8),
              dedupe_key(SECRET, "ab" * 17, 7), dedupe_key(SECRET, "cd" * 16, 7)}
    assert base not in others and len(others) == 4


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///rel.db")
    assert (tmp_path / "rel.db").exists()
    relative.close()
    absolute = open_store(f"sqlite:///{tmp_path / 'abs.db'}")
    assert (tmp_path / "abs.db").exists()
    absolute.close()
    open_store("sqlite:///:memory:").close()
    with pytest.raises(InputError, match="could not connect to PostgreSQL") as error:
        open_store("postgresql://user:hunter2@db.invalid/collector")
    assert "hunter2" not in str(error.value)
    with pytest.raises(InputError, match="expected sqlite:///PATH") as error:
        open_store("mysql://user:hunter2@db/collector")
    assert "hunter2" not in str(error.value)
    with pytest.raises(InputError):
        open_store("sqlite:///")
