"""The PostgreSQL aggregate store: the SQLite store's behaviour, sync end to end, and concurrency.

Store checks run on both backends; the rest runs on PostgreSQL only (the
SQLite store has its own tests). Needs ``EDGEPERSONA_TEST_POSTGRES_URL``; see
``postgres_testkit``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from collector_testkit import APP, TODAY, FakeClock, TestClient, cells, contribution, post, pseudonym_of
from hypothesis import HealthCheck, given, settings, strategies as st
from postgres_testkit import (
    Backend,
    add_in_background,
    blocked_on_a_lock,
    exact_cells,
    fresh_schema,
    get_json,
    postgres_backend,
    postgres_url,
    run_sql,
    send_overlapping,
    serve_processes,
    sqlite_backend,
)
from psycopg.conninfo import conninfo_to_dict

from edgepersona.sdk import InputError, SchemaError, Sealer, day_bucket
from edgepersona.trainer.cli import main
from edgepersona.trainer.collector import (
    AddResult,
    AggregateStore,
    CollectorConfig,
    Increment,
    SqliteAggregateStore,
    create_app,
    dedupe_key,
    encode_batch,
    open_store,
)
from edgepersona.trainer.collector._postgres import PostgresAggregateStore
from edgepersona.trainer.release.keys import generate_collector_key

SECRET = b"k" * 32


def inc(key: int, *, day: int = 100, version: int = 1, persona: int = 0,
        features: tuple[float, ...] = (1.0, 2.0)) -> Increment:
    return Increment(dedupe_key(SECRET, f"{key:016x}", key), day, version, persona, features)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield sqlite_backend(tmp_path / "collector.db")
    else:
        with fresh_schema() as url:
            yield postgres_backend(url)


@pytest.fixture
def any_store(backend: Backend) -> Iterator[AggregateStore]:
    store = backend.open()
    yield store
    store.close()


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresAggregateStore]:
    """Overrides conftest's SQLite store, so ``client`` and ``make_app`` use PostgreSQL here."""
    db = PostgresAggregateStore(pg_url)
    yield db
    db.close()


# --- the store contract, on both backends ---------------------------------------------------

def test_a_new_database_is_migrated_once(backend: Backend, tmp_path: Path) -> None:
    backend.open().close()
    again = backend.open()
    assert again.schema_version() == 3  # type: ignore[attr-defined]
    again.close()
    reference = SqliteAggregateStore(tmp_path / "reference.db")
    reference.close()
    expected = sqlite_backend(tmp_path / "reference.db").execute("SELECT * FROM schema_migrations")
    assert backend.execute("SELECT version, description FROM schema_migrations") == expected
    assert backend.tables() == {"schema_migrations", "model_widths", "aggregates", "dedupe_ledger",
                                "ledger_horizon", "quota_slots", "admission_uses"}


def test_a_newer_schema_is_refused(backend: Backend) -> None:
    backend.open().close()
    backend.execute("INSERT INTO schema_migrations VALUES (99, 'from the future')")
    with pytest.raises(SchemaError, match="schema version 99"):
        backend.open()


def test_increments_add_counts_sums_and_squares(any_store: AggregateStore) -> None:
    results = any_store.add_increments([inc(1), inc(2, features=(3.0, -1.0)), inc(3, persona=1),
                                        inc(4, day=101)], purge_before_day=0)
    assert results == [AddResult.ADDED] * 4
    [d100p0, d100p1, d101p0] = any_store.daily_aggregates(1)
    assert (d100p0.day_bucket, d100p0.persona_index, d100p0.aggregate.count) == (100, 0, 2)
    assert d100p0.aggregate.sums.tolist() == [4.0, 1.0]
    assert d100p0.aggregate.sumsq.tolist() == [10.0, 5.0]
    assert (d100p1.persona_index, d101p0.day_bucket) == (1, 101)
    any_store.add_increments([inc(5, features=(0.5, 0.25))], purge_before_day=0)  # a later call
    total = any_store.aggregates(1)
    assert sorted(total) == [0, 1]
    assert total[0].count == 4 and total[0].sums.tolist() == [5.5, 3.25]
    assert total[0].variance.tolist() == pytest.approx([np.var([1, 3, 1, 0.5]), np.var([2, -1, 2, 0.25])])
    assert any_store.aggregates(1, first_day=101)[0].count == 1
    assert any_store.aggregates(1, last_day=100)[0].count == 3
    assert any_store.aggregates(2) == {}
    assert any_store.model_versions() == [1]
    with pytest.raises(ValueError, match="read-only"):
        total[0].sums[0] = 9.0


def test_duplicates_and_width_conflicts_change_nothing(any_store: AggregateStore) -> None:
    results = any_store.add_increments([inc(1), inc(1), inc(2, features=(1.0, 2.0, 3.0))],
                                       purge_before_day=0)
    assert results == [AddResult.ADDED, AddResult.DUPLICATE, AddResult.WIDTH_CONFLICT]
    assert any_store.add_increments([inc(1, persona=3)], purge_before_day=0) == [AddResult.DUPLICATE]
    assert any_store.aggregates(1)[0].count == 1
    assert any_store.dedupe_size() == 1


def test_a_new_version_takes_the_width_of_its_first_added_increment(any_store: AggregateStore) -> None:
    any_store.add_increments([inc(1)], purge_before_day=0)
    results = any_store.add_increments(
        [inc(1, version=5, features=(1.0,)),  # a duplicate key: it claims no width
         inc(2, version=5, features=(1.0, 2.0, 3.0)), inc(3, version=5, features=(1.0,)),
         inc(3, version=5, features=(4.0, 5.0, 6.0))], purge_before_day=0)
    assert results == [AddResult.DUPLICATE, AddResult.ADDED, AddResult.WIDTH_CONFLICT, AddResult.ADDED]
    assert any_store.dedupe_size() == 3
    assert any_store.aggregates(5)[0].sums.tolist() == [5.0, 7.0, 9.0]


def test_a_failed_call_writes_nothing(backend: Backend, any_store: AggregateStore) -> None:
    any_store.add_increments([inc(1)], purge_before_day=0)
    broken = Increment(object(), 100, 1, 0, (1.0, 2.0))  # type: ignore[arg-type]
    with pytest.raises(backend.error):
        any_store.add_increments([inc(2), inc(3, day=50), broken], purge_before_day=90)
    assert any_store.dedupe_size() == 1
    assert any_store.aggregates(1)[0].count == 1
    assert [c.day_bucket for c in any_store.daily_aggregates(1)] == [100]


def test_expired_dedupe_keys_are_purged(any_store: AggregateStore) -> None:
    any_store.add_increments([inc(1, day=10), inc(2, day=11), inc(3, day=12)], purge_before_day=0)
    any_store.add_increments([], purge_before_day=11)
    assert any_store.dedupe_size() == 2
    assert any_store.purge_dedupe(before_day=13) == 2
    assert any_store.dedupe_size() == 0
    assert any_store.aggregates(1)[0].count == 3


# --- PostgreSQL: URLs, secrets, migrations and races ----------------------------------------

def test_open_store_routes_postgres_urls(pg_url: str) -> None:
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        opened = open_store(url)
        assert isinstance(opened, PostgresAggregateStore)
        opened.close()


@pytest.mark.parametrize("wrong", ["password", "port", "unparsable"])
def test_errors_never_show_the_password(wrong: str) -> None:
    url = postgres_url()
    host = url.rsplit("@", 1)[1]
    bad = {"password": f"postgresql://edgepersona:hunter2-secret@{host}",
           "port": "postgresql://edgepersona:hunter2-secret@127.0.0.1:1/db",
           "unparsable": f"postgresql://edgepersona:hunter2%zzsecret@{host}"}[wrong]
    with pytest.raises(InputError) as error:
        open_store(bad)
    assert "hunter2" not in str(error.value) and "zzsecret" not in str(error.value)
    assert ("cannot be parsed" if wrong == "unparsable" else "could not connect") in str(error.value)


def test_serve_reports_a_bad_password_without_it(tmp_path: Path, shared_bundles: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    host = postgres_url().rsplit("@", 1)[1]
    generate_collector_key(tmp_path / "keys")
    code = main(["serve", "--db", f"postgresql://edgepersona:hunter2@{host}", "--collector-key",
                 str(tmp_path / "keys"), "--bundles", str(shared_bundles)])
    err = capsys.readouterr().err
    assert code == 1 and "could not connect" in err and "hunter2" not in err


def test_collectors_starting_together_migrate_once(pg_url: str) -> None:
    stores: list[AggregateStore] = []
    threads = [threading.Thread(target=lambda: stores.append(PostgresAggregateStore(pg_url)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(stores) == 4
    assert run_sql(pg_url, "SELECT version FROM schema_migrations ORDER BY 1") == [(1,), (2,), (3,)]
    for opened in stores:
        opened.close()


@pytest.mark.parametrize("other_commits", [True, False])
def test_an_uncommitted_dedupe_key_decides_the_duplicate(pg_url: str, store: PostgresAggregateStore,
                                                         other_commits: bool) -> None:
    with psycopg.connect(pg_url) as other:  # another collector, mid-transaction
        other.execute("INSERT INTO dedupe_ledger VALUES (%s, 100)", (inc(1).dedupe_key,))
        thread, out = add_in_background(store, [inc(1), inc(2)])
        blocked_on_a_lock(pg_url)
        if other_commits:
            other.commit()
        else:
            other.rollback()
        thread.join(10)
    first = AddResult.DUPLICATE if other_commits else AddResult.ADDED
    assert out == [[first, AddResult.ADDED]]
    assert store.aggregates(1)[0].count == (1 if other_commits else 2)


def test_a_width_claimed_concurrently_wins_and_the_call_reruns(pg_url: str,
                                                               store: PostgresAggregateStore) -> None:
    with psycopg.connect(pg_url) as other:
        other.execute("INSERT INTO model_widths VALUES (5, 3)")
        thread, out = add_in_background(store, [inc(1, version=5), inc(2, version=5, features=(1.0,) * 3)])
        blocked_on_a_lock(pg_url)
        other.commit()
        thread.join(10)
    assert out == [[AddResult.WIDTH_CONFLICT, AddResult.ADDED]]
    assert store.dedupe_size() == 1  # the conflicting key was rolled back with the first attempt


def test_a_deadlock_is_detected_and_the_call_retried(pg_url: str, store: PostgresAggregateStore,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgepersona.trainer.collector")
    first, second = sorted([inc(1), inc(2)], key=lambda i: i.dedupe_key)  # the store's lock order
    with psycopg.connect(pg_url) as other:
        other.execute("INSERT INTO dedupe_ledger VALUES (%s, 100)", (second.dedupe_key,))
        thread, out = add_in_background(store, [first, second])
        blocked_on_a_lock(pg_url)  # the store holds `first` and waits for `second`
        other.execute("INSERT INTO dedupe_ledger VALUES (%s, 100)", (first.dedupe_key,))  # a cycle
        other.commit()  # PostgreSQL aborted the store's transaction (it waited first); it reran
        thread.join(10)
    assert out == [[AddResult.DUPLICATE, AddResult.DUPLICATE]]
    assert "deadlock detected" in caplog.text and "retrying" in caplog.text


def test_threads_and_stores_add_overlapping_batches_exactly_once(pg_url: str) -> None:
    stores = [PostgresAggregateStore(pg_url, pool_size=3) for _ in range(2)]
    keys = list(range(400))
    results: list[list[AddResult]] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        order = keys[worker * 37 % 400:] + keys[:worker * 37 % 400]  # every worker sends every key
        for start in range(0, 400, 50):
            batch = [inc(k, persona=k % 3, day=100 + k % 2, features=(k / 4, 1.0))
                     for k in order[start:start + 50]]
            added = stores[worker % 2].add_increments(batch, purge_before_day=0)
            with lock:
                results.append(added)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    flat = [result for batch in results for result in batch]
    assert (flat.count(AddResult.ADDED), flat.count(AddResult.DUPLICATE)) == (400, 5 * 400)
    total = stores[0].aggregates(1)
    assert sum(a.count for a in total.values()) == 400
    assert {p: a.sums.tolist() for p, a in total.items()} == {
        p: [sum(k / 4 for k in keys if k % 3 == p), float(sum(1 for k in keys if k % 3 == p))]
        for p in range(3)}
    for opened in stores:
        opened.close()


# --- sync end to end on PostgreSQL (conftest's client and make_app over the store above) -----

def test_sync_accepts_counts_replays_once_and_expires_keys(client: TestClient, sealer: Sealer,
                                                          store: PostgresAggregateStore,
                                                          clock: FakeClock) -> None:
    first = sealer.seal(contribution(sequence=1, day_bucket=TODAY - 6))
    batch = [first, sealer.seal(contribution(sequence=2, day_bucket=TODAY + 1)), first,
             sealer.seal(contribution(sequence=3, model_version=7)),
             sealer.seal(contribution(sequence=4, persona_index=0, model_version=2))]
    body = post(client, encode_batch(batch)).json()
    assert [r["reason"] or r["status"] for r in body["results"]] == [
        "accepted", "accepted", "duplicate", "unknown_model_version", "accepted"]
    assert post(client, sealer.seal(contribution(sequence=2, day_bucket=TODAY + 1))).json()[
        "duplicate"] == 1  # resealed: other bytes, same (pseudonym, sequence)
    [old, new] = cells(store)
    assert (old[0], old[2], new[0], new[2]) == (TODAY - 6, 1, TODAY + 1, 1)
    assert new[3] == list(contribution().features)
    clock.advance_days(1)
    post(client, sealer.seal(contribution(sequence=5)))  # purges the expired key on write
    assert store.dedupe_size() == 3
    metrics = client.get("/v1/metrics").json()
    assert (metrics["accepted"], metrics["duplicate"], metrics["ledger_keys"]) == (4, 2, 3)
    assert store.aggregates(1)[2].count == 3 and store.aggregates(2)[0].count == 1


OFFSETS = st.integers(-8, 2)  # day offsets: -7 is stale, 2 is in the future
SENDS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), OFFSETS, st.sampled_from([1, 2, 9]),
                           st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6),
                           st.booleans()),  # replay this device's previous envelope
                 min_size=1, max_size=6)


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(SENDS, min_size=1, max_size=4))
def test_aggregates_are_the_per_call_sums_of_accepted_contributions(
        batches: list[list[Any]], sealer: Sealer, collector_keys: Any, shared_bundles: Path,
        pg_url: str, store: PostgresAggregateStore) -> None:
    from collector_testkit import LOWER, UPPER, persona_of

    run_sql(pg_url, "TRUNCATE aggregates, dedupe_ledger, model_widths, quota_slots")
    # exact sums are the subject here: personas follow the features, no per-pseudonym quota
    client = TestClient(create_app(CollectorConfig(app_id=APP, bundles_dir=shared_bundles,
                                                   pseudonym_daily_quota=None),
                                   collector_private_key=collector_keys.private, store=store,
                                   clock=FakeClock()))
    expected: dict[tuple[int, int, int], list[Any]] = {}
    last: dict[int, tuple[bytes, Any]] = {}
    seen: set[tuple[int, int]] = set()
    for number, batch in enumerate(batches):
        envelopes: list[bytes] = []
        deltas: dict[tuple[int, int, int], tuple[int, Any, Any]] = {}
        for position, (device, _persona, offset, version, where, replay) in enumerate(batch):
            if not (replay and device in last):
                features = tuple(lo + p * (hi - lo) for p, lo, hi in zip(where, LOWER, UPPER, strict=True))
                item = contribution(pseudonym=pseudonym_of(device), sequence=number * 10 + position,
                                    day_bucket=TODAY + offset, model_version=version,
                                    persona_index=persona_of(features), features=features)
                last[device] = (sealer.seal(item), item)
            envelope, item = last[device]
            envelopes.append(envelope)
            key = (device, item.sequence)
            if item.model_version in (1, 2) and -6 <= item.day_bucket - TODAY <= 1 and key not in seen:
                seen.add(key)
                f = np.array(item.features)
                cell = (item.model_version, item.persona_index, item.day_bucket)
                count, sums, sumsq = deltas.get(cell, (0, np.zeros(6), np.zeros(6)))
                deltas[cell] = (count + 1, sums + f, sumsq + f * f)  # the call's own sum, from zeros
        assert post(client, encode_batch(envelopes)).status_code == 200
        for cell, (count, sums, sumsq) in deltas.items():  # then added to the stored row
            before = expected.get(cell, [0, np.zeros(6), np.zeros(6)])
            expected[cell] = [before[0] + count, before[1] + sums, before[2] + sumsq]
    stored = {(v, c.persona_index, c.day_bucket): [c.aggregate.count, c.aggregate.sums.tolist(),
                                                   c.aggregate.sumsq.tolist()]
              for v in (1, 2) for c in store.daily_aggregates(v)}
    assert stored == {cell: [n, s.tolist(), q.tolist()] for cell, (n, s, q) in expected.items()}


# --- two collector processes, one database ----------------------------------------------------

def test_two_collector_processes_count_every_contribution_exactly_once(
        pg_url: str, tmp_path: Path, shared_bundles: Path) -> None:
    _, public = generate_collector_key(tmp_path / "keys")
    device = Sealer(public.read_bytes(), app_id=APP)
    today = day_bucket(time.time())
    rng = np.random.default_rng(8)
    items = [contribution(pseudonym=pseudonym_of(d), sequence=s, day_bucket=today - (d + s) % 2,
                          model_version=1 + d % 2,
                          features=tuple(float(x) / 4 for x in rng.integers(0, 21, 6)))  # exact sums
             for d in range(30) for s in range(1, 21)]
    with serve_processes(2, db_url=pg_url, keys=tmp_path / "keys", bundles=shared_bundles, app_id=APP,
                         logs=tmp_path, extra=["--pseudonym-daily-quota", "0"]) as bases:
        statuses, failures = send_overlapping(bases, items, device, rng)
        metrics = [get_json(f"{base}/v1/metrics") for base in bases]
    assert failures == []
    assert all(s.count("accepted") == 1 and set(s) <= {"accepted", "duplicate"}
               for s in statuses.values()), "every contribution is acknowledged and accepted exactly once"
    assert sum(m["accepted"] for m in metrics) == len(items) < sum(len(s) for s in statuses.values())
    assert sum(len(s) for s in statuses.values()) == sum(m["accepted"] + m["duplicate"] for m in metrics)
    reader = PostgresAggregateStore(pg_url)
    for version in (1, 2):
        stored = {(c.day_bucket, c.persona_index): (c.aggregate.count, c.aggregate.sums.tolist(),
                                                    c.aggregate.sumsq.tolist())
                  for c in reader.daily_aggregates(version)}
        assert stored == exact_cells([i for i in items if i.model_version == version])
    assert reader.dedupe_size() == len(items)
    reader.close()
    password = str(conninfo_to_dict(pg_url)["password"])
    logs = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert "sync: batch of" in logs and password not in logs
