"""Campaign 4: device and collector clocks far behind or far ahead.

The rules, as tested here (``max_future_seconds`` = 300 s, replay window = 7 days):

Device (``PersonaClient``, clock passed in):

1. an event stamped later than clock + ``max_future_seconds`` is refused with
   ``InputError`` and nothing is folded, also inside a ``track_many`` batch
   (exactly clock + margin is still accepted); with a clock far behind, true
   timestamps are refused, while events stamped by the device clock (``at``
   omitted) are accepted;
2. with the clock behind the latest folded event, ``assign`` and ``features``
   evaluate at the latest event (never before it); an explicit time before it
   is an ``InputError``;
3. a clock stepping back makes events arrive out of order: they fold to the
   same features as in order;
4. bundle expiry is judged by the device clock: a clock at or past
   ``expires_at`` refuses an unexpired bundle (``BundleExpiredError``) at
   ``open`` and at ``update``, and after a refused update the last good bundle
   stays active and trusted; a clock before ``created_at`` is not checked
   (expiry is the only time check);

Collector (``Collector``, clock passed in):

5. a day bucket older than ``today - 6`` is ``stale_day_bucket``, later than
   ``today + 1`` is ``future_day_bucket``; both are final rejections (the
   device drops them and counts them in ``rejected``, the aggregates do not move);
6. the dedupe ledger's purge horizon is persisted and only moves forward: a
   collector clock that jumps ahead and back, or two collectors on one database
   whose clocks straddle a day boundary, never count a replay twice — a
   contribution of a day below the horizon is refused as stale (so a clock that
   jumped ahead makes the collector refuse older days until time catches up).

These are deterministic, so short and long runs are the same::

    python -m pytest tests/campaigns/test_campaign_clock_faults.py
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from campaign_testkit import APP, CollectorFiles, dyadic_contributions

from edgepersona.sdk import (
    BundleExpiredError,
    ClientOptions,
    InputError,
    MemoryKeyProvider,
    MemoryTransport,
    PersonaClient,
    Sealer,
    SyncAgent,
    TrackedEvent,
    day_bucket,
)
from edgepersona.trainer.collector import Collector, CollectorConfig, Outcome, SqliteAggregateStore
from edgepersona.trainer.collector._schemas import SyncResponse
from edgepersona.trainer.release.train import TrainResult

T0 = 1_750_000_000.0  # 2025-06-15: the true time of these tests
DAY = 86_400.0
MARGIN = ClientOptions().max_future_seconds


class Clock:
    """A settable clock in POSIX seconds."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys() -> MemoryKeyProvider:
    return MemoryKeyProvider()


def open_client(trained: TrainResult, public_key: bytes, store: Path, keys: MemoryKeyProvider,
                clock: Clock) -> PersonaClient:
    return PersonaClient.open(dict(trained.files), trusted_keys=[public_key], store=store, key_provider=keys,
                              clock=clock, options=ClientOptions(backend="numpy"))


@pytest.mark.parametrize("skew_days", [0.0, -1.0, -3650.0])
def test_events_beyond_the_future_margin_are_refused_and_nothing_is_folded(
        trained: TrainResult, public_key: bytes, tmp_path: Path, keys: MemoryKeyProvider,
        skew_days: float) -> None:
    clock = Clock(T0 + skew_days * DAY)
    with open_client(trained, public_key, tmp_path / "s.db", keys, clock) as client:
        client.track("purchase", 1.0)  # stamped by the device clock: always accepted
        client.track("purchase", 2.0, at=clock.now + MARGIN)  # the margin itself is still accepted
        before = client.features(at=clock.now + MARGIN)
        refused: list[Callable[[], object]] = [
            lambda: client.track("purchase", 4.0, at=clock.now + MARGIN + 0.001),
            lambda: client.track_many([TrackedEvent("me", "purchase", 8.0, clock.now),
                                       TrackedEvent("you", "purchase", 16.0, clock.now + 2 * DAY)])]
        if skew_days < 0:  # the device is behind: the true time is in its future
            refused.append(lambda: client.track("purchase", 32.0, at=T0))
        for call in refused:
            with pytest.raises(InputError, match="ahead of the clock"):
                call()
        assert client.features(at=clock.now + MARGIN) == before and client.subjects() == ["me"]
    with open_client(trained, public_key, tmp_path / "s.db", keys, clock) as client:
        assert client.features(at=clock.now + MARGIN) == before


@pytest.mark.parametrize("behind_days", [1.0, 30.0, 3650.0])
def test_assign_with_the_clock_behind_the_latest_event_evaluates_at_that_event(
        trained: TrainResult, public_key: bytes, tmp_path: Path, keys: MemoryKeyProvider,
        behind_days: float) -> None:
    clock = Clock()
    with open_client(trained, public_key, tmp_path / "s.db", keys, clock) as client:
        for day in range(10):
            client.track("session", at=T0 - day * DAY)
            client.track("purchase", 80.0 + day, at=T0 - day * DAY + 60)
        latest = T0 + MARGIN
        client.track("view", at=latest, properties={"category": "books"})
        clock.now = T0 - behind_days * DAY  # the device clock jumps back
        assert client.features() == client.features(at=latest)
        assert client.assign() == client.assign(at=latest)
        with pytest.raises(InputError, match="cannot evaluate at"):
            client.assign(at=latest - 1)
        clock.now = latest + DAY  # and ahead again: evaluated at the clock
        assert client.assign() == client.assign(at=latest + DAY)


def test_a_clock_stepping_back_folds_out_of_order_events_exactly(
        trained: TrainResult, public_key: bytes, tmp_path: Path, keys: MemoryKeyProvider) -> None:
    rng = random.Random(5)
    events = [TrackedEvent("me", rng.choice(["session", "purchase", "view"]), float(rng.randint(1, 90)),
                           T0 - rng.uniform(0, 60) * DAY, {"category": f"c{rng.randint(0, 9)}"})
              for _ in range(200)]
    clock, features = Clock(), []
    for name, order in (("in-order", sorted(events, key=lambda e: e.at or 0.0)),
                        ("shuffled", rng.sample(events, len(events)))):
        with open_client(trained, public_key, tmp_path / f"{name}.db", keys, clock) as client:
            for event in order:  # one track each, as a device whose clock keeps stepping back
                client.track(event.event, event.value, at=event.at, properties=event.properties)
            features.append(client.features(at=T0))
    np.testing.assert_allclose(features[0], features[1], rtol=1e-9, atol=1e-9)


def test_a_device_clock_past_expiry_refuses_the_bundle_and_keeps_the_last_good_one(
        trained: TrainResult, trained_v2: TrainResult, public_key: bytes, tmp_path: Path,
        keys: MemoryKeyProvider) -> None:
    expires = trained.manifest.expires_at.timestamp()
    assert trained_v2.manifest.expires_at.timestamp() == expires
    clock, store = Clock(expires), tmp_path / "s.db"
    with pytest.raises(BundleExpiredError, match="expired at"):
        open_client(trained, public_key, store, keys, clock)  # exactly at expires_at: expired
    clock.now = expires - 1
    with open_client(trained, public_key, store, keys, clock) as client:
        client.track("purchase", 5.0, at=T0)
        clock.now = expires + 365 * DAY  # the clock jumps decades ahead: v2 is "expired" too
        with pytest.raises(BundleExpiredError):
            client.update(dict(trained_v2.files))
        assert client.runtime.version == 1 and client.assign().model_version == 1
    with pytest.raises(BundleExpiredError):
        open_client(trained, public_key, store, keys, clock)  # nor can it restart while the clock is wrong
    clock.now = T0
    with open_client(trained, public_key, store, keys, clock) as client:  # v1 is still trusted
        assert client.runtime.version == 1 and client.features(at=T0)[1] == 5.0


def test_a_device_clock_before_the_bundle_was_created_is_not_checked(
        trained: TrainResult, public_key: bytes, tmp_path: Path, keys: MemoryKeyProvider) -> None:
    created = trained.manifest.created_at
    clock = Clock((created - timedelta(days=3650)).timestamp())
    with open_client(trained, public_key, tmp_path / "s.db", keys, clock) as client:
        assert client.runtime.version == 1


@pytest.fixture
def aggregates(tmp_path: Path) -> Iterator[SqliteAggregateStore]:
    store = SqliteAggregateStore(tmp_path / "collector.db")
    yield store
    store.close()


def collector(files: CollectorFiles, store: SqliteAggregateStore, clock: Clock) -> Collector:
    config = CollectorConfig(app_id=APP, bundles_dir=files.bundles)
    return Collector(config, collector_private_key=files.private, store=store, clock=clock)


def test_the_collector_rejects_stale_and_future_day_buckets_for_good(
        collector_files: CollectorFiles, aggregates: SqliteAggregateStore) -> None:
    today = day_bucket(T0)
    judge = collector(collector_files, aggregates, Clock())
    sealer = Sealer(collector_files.public_path.read_bytes(), app_id=APP)
    offsets = {-3650: "stale_day_bucket", -7: "stale_day_bucket", -6: "accepted", 0: "accepted",
               1: "accepted", 2: "future_day_bucket", 3650: "future_day_bucket"}
    items = dyadic_contributions(len(offsets), 1, days=[today], bundles=collector_files.bundles, seed=3)
    for item, (offset, expected) in zip(items, offsets.items(), strict=True):
        [outcome] = judge.ingest(sealer.seal(replace(item, day_bucket=today + offset))).outcomes
        assert outcome.value == expected, offset
    assert sum(cell.count for cell in aggregates.aggregates(1).values()) == 3


@pytest.mark.parametrize(("skew_days", "outcome"), [(2.0, "future"), (-8.0, "stale"), (1.0, None)])
def test_a_device_clock_far_off_gets_its_contributions_rejected_and_dropped(
        trained: TrainResult, public_key: bytes, tmp_path: Path, keys: MemoryKeyProvider,
        collector_files: CollectorFiles, aggregates: SqliteAggregateStore, skew_days: float,
        outcome: str | None) -> None:
    judge = collector(collector_files, aggregates, Clock())

    def post(body: bytes) -> bytes:
        return SyncResponse.from_report(judge.ingest(body)).model_dump_json().encode()

    transport = MemoryTransport(post, lambda version: b"")
    device_clock = Clock(T0 + skew_days * DAY)
    with open_client(trained, public_key, tmp_path / "s.db", keys, device_clock) as client:
        agent = SyncAgent(client, Sealer(collector_files.public_path.read_bytes(), app_id=APP), transport)
        agent.contribute()
        report = agent.flush()
        assert (report.rejected, report.remaining) == ((1, 0) if outcome else (0, 0))
        assert agent.counters["rejected"] == (1 if outcome else 0)
    counted = sum(cell.count for cell in aggregates.aggregates(1).values())
    assert counted == (0 if outcome else 1)
    if outcome:
        assert judge.counts()[Outcome(f"{outcome}_day_bucket")] == 1


def test_a_collector_clock_jumping_ahead_and_back_never_counts_a_replay_twice(
        collector_files: CollectorFiles, aggregates: SqliteAggregateStore) -> None:
    clock = Clock()
    judge = collector(collector_files, aggregates, clock)
    sealer = Sealer(collector_files.public_path.read_bytes(), app_id=APP)
    first, other = dyadic_contributions(2, 1, days=[day_bucket(T0)], bundles=collector_files.bundles, seed=1)
    envelope = sealer.seal(first)
    assert judge.ingest(envelope).outcomes[0].value == "accepted"
    clock.now = T0 + 10 * DAY  # a wrong NTP step forward...
    judge.ingest(sealer.seal(other))  # ...any request now purges the ledger by the wrong clock
    clock.now = T0  # ...and back
    before = sum(cell.count for cell in aggregates.aggregates(1).values())
    # Its key may be purged, but the day is below the persisted horizon: refused, not re-counted.
    assert judge.ingest(envelope).outcomes[0].value in {"duplicate", "stale_day_bucket"}
    assert sum(cell.count for cell in aggregates.aggregates(1).values()) == before


def test_two_collectors_whose_clocks_straddle_midnight_never_count_a_replay_twice(
        collector_files: CollectorFiles, aggregates: SqliteAggregateStore) -> None:
    midnight = (day_bucket(T0) + 1) * DAY
    behind, ahead = Clock(midnight - 30), Clock(midnight + 30)  # one minute apart, one database
    slow, fast = collector(collector_files, aggregates, behind), collector(collector_files, aggregates, ahead)
    sealer = Sealer(collector_files.public_path.read_bytes(), app_id=APP)
    oldest = day_bucket(behind()) - 6  # still accepted by the slow collector
    old, other = dyadic_contributions(2, 1, days=[oldest], bundles=collector_files.bundles, seed=2)
    envelope = sealer.seal(old)
    assert slow.ingest(envelope).outcomes[0].value == "accepted"
    fast.ingest(sealer.seal(other))  # stale there; and the fast collector purged the day's keys
    before = sum(cell.count for cell in aggregates.aggregates(1).values())
    assert slow.ingest(envelope).outcomes[0].value in {"duplicate", "stale_day_bucket"}
    assert sum(cell.count for cell in aggregates.aggregates(1).values()) == before == 1
