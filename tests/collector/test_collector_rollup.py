"""No closed cell below k-min stays at rest: roll-ups on both backends, through the collector,
and the audit's named check on a database that still holds one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_testkit import APP, TODAY, CollectorKeys, FakeClock, TestClient, contribution, post
from hypothesis import HealthCheck, given, settings, strategies as st
from postgres_testkit import Backend, fresh_schema, postgres_backend, sqlite_backend

from edgepersona.sdk import InputError, Sealer
from edgepersona.trainer.cli import main
from edgepersona.trainer.collector import (
    AggregateStore,
    CollectorConfig,
    Increment,
    SqliteAggregateStore,
    create_app,
    dedupe_key,
    encode_batch,
    small_cells_at_rest,
)

SECRET = b"r" * 32


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


def inc(key: int, *, day: int, persona: int, features: tuple[float, ...] = (1.0, 2.0)) -> Increment:
    return Increment(dedupe_key(SECRET, f"{key:016x}", key), day, 1, persona, features)


def totals(store: AggregateStore) -> dict[int, tuple[int, list[float], list[float]]]:
    return {p: (a.count, a.sums.tolist(), a.sumsq.tolist()) for p, a in store.aggregates(1).items()}


def test_closed_small_cells_roll_forward_and_nothing_is_lost(any_store: AggregateStore) -> None:
    any_store.add_increments([inc(1, day=100, persona=0), *[inc(k, day=101, persona=0) for k in range(2, 7)],
                              inc(7, day=100, persona=1, features=(3.0, 1.0)),
                              inc(8, day=102, persona=1), inc(9, day=104, persona=1)], purge_before_day=0)
    before = totals(any_store)
    assert any_store.small_closed_cells(3) == []  # nothing is closed yet
    any_store.add_increments([], purge_before_day=103)  # days 100..102 close
    assert any_store.small_closed_cells(3) == [(1, 0, 100, 1), (1, 1, 100, 1), (1, 1, 102, 1)]
    assert any_store.roll_up_small_cells({1: 3}, before_day=103) == 3
    assert any_store.small_closed_cells(3) == []
    cells = {(c.persona_index, c.day_bucket): c.aggregate.count for c in any_store.daily_aggregates(1)}
    assert cells == {(0, 101): 5, (0, 103): 1, (1, 103): 2, (1, 104): 1}
    assert totals(any_store) == before  # counts, sums and sums of squares, exactly
    assert any_store.roll_up_small_cells({1: 3}, before_day=104) == 2  # still small: rolls on
    cells = {(c.persona_index, c.day_bucket): c.aggregate.count for c in any_store.daily_aggregates(1)}
    assert cells == {(0, 101): 5, (0, 104): 1, (1, 104): 3}
    assert totals(any_store) == before
    assert any_store.roll_up_small_cells({2: 3}, before_day=104) == 0  # another version: untouched


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9), st.integers(1, 4)), max_size=25),
       k_min=st.integers(2, 6), close=st.integers(0, 12))
def test_after_a_roll_up_no_closed_cell_is_small_and_the_totals_hold(
        tmp_path_factory: pytest.TempPathFactory, cells: list[tuple[int, int, int]], k_min: int,
        close: int) -> None:
    store = SqliteAggregateStore(tmp_path_factory.mktemp("rollup") / "c.db")
    key = 0
    for persona, day, count in cells:
        for _ in range(count):
            key += 1
            store.add_increments([inc(key, day=100 + day, persona=persona, features=(key / 4, 1.0))],
                                 purge_before_day=0)
    before = totals(store)
    store.roll_up_small_cells({1: k_min}, before_day=100 + close)
    assert store.small_closed_cells(k_min) == []
    after = totals(store)
    assert {p: v[0] for p, v in after.items()} == {p: v[0] for p, v in before.items()}
    for persona, (_, sums, _) in after.items():
        assert sums == pytest.approx(before[persona][1])
    store.close()


def test_the_collector_rolls_up_once_a_day_and_the_audit_names_a_small_cell(
        tmp_path: Path, sealer: Sealer, collector_keys: CollectorKeys, shared_bundles: Path,
        bundle_dir: Path, signing_keys: object, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "collector.db"
    store = SqliteAggregateStore(db)
    clock = FakeClock()
    client = TestClient(create_app(CollectorConfig(app_id=APP, bundles_dir=shared_bundles),
                                   collector_private_key=collector_keys.private, store=store, clock=clock))
    post(client, encode_batch([sealer.seal(contribution(pseudonym=f"{n:064x}")) for n in range(2)]))
    clock.advance_days(7)  # TODAY is closed now; the bundle's k-min is 5
    store.add_increments([], purge_before_day=TODAY + 1)  # as a collector that never rolls up would
    url = f"sqlite:///{db}"
    public = str(signing_keys.public_path)  # type: ignore[attr-defined]
    assert [cell[2:] for cell in small_cells_at_rest(url, 5)] == [(TODAY, 2)]
    assert main(["audit", str(bundle_dir), "--trusted-key", public, "--db", url, "--json"]) == 3
    checks = {c["check"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    small = checks["no closed collector cell below k-min at rest"]
    assert not small["passed"] and small["figure"].startswith("1 closed cell(s) below k-min 5")
    post(client, sealer.seal(contribution(pseudonym="ab" * 32, day_bucket=TODAY + 7)))  # first request today
    assert small_cells_at_rest(url, 5) == []
    cells = {(c.day_bucket, c.aggregate.count) for c in store.daily_aggregates(1)}
    assert sum(count for _, count in cells) == 3 and min(day for day, _ in cells) == TODAY + 1
    assert main(["audit", str(bundle_dir), "--trusted-key", public, "--db", url, "--json"]) == 0
    capsys.readouterr()
    store.close()
    with pytest.raises(InputError, match="no collector database"):
        small_cells_at_rest(f"sqlite:///{tmp_path / 'missing.db'}", 5)
    assert not (tmp_path / "missing.db").exists()
