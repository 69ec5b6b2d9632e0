"""Campaign 1: SIGKILL the device at random points of track, track_many, update and sync flushes.

A forking worker (``campaign_device_child.py``) runs each job in a fresh child
that opens a ``PersonaClient`` like a restarted app and works until the test
SIGKILLs it, at a random moment after its start (a quarter of the kills, so
some land while the store opens) or after it said ``ready``. After every kill
the test opens the store itself and checks:

* track / track_many: the store opens and holds exactly events ``1..n`` for
  some ``n`` between the last acknowledged and the last attempted event:
  nothing acknowledged is lost, nothing is folded twice, no batch is half
  applied (two subjects, one transaction);
* update (v1 to v2, the app installs the archive atomically, then calls
  ``update``): ``PersonaClient.open`` of the installed archive succeeds, its
  version is 1 or 2 and equals the persisted trusted version afterwards, an
  acknowledged update is never undone, assignments come wholly from that
  version (they equal a fresh runtime's of it), and v1 is refused once 2 is trusted;
* flush (SyncAgent against the real collector app on a loopback port): the
  queue record stays readable, no sequence number is reused, nothing is
  dropped or rejected; after a final drain the collector counts exactly the
  contributions the device ever committed (each once; resends were duplicates).

Sizes: short 16 kills per kind (64 in all); long 130 per kind (520)::

    EDGEPERSONA_CAMPAIGN=long python -m pytest tests/campaigns/test_campaign_device_kills.py -s
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from campaign_testkit import (
    APP,
    Budget,
    BundleFiles,
    CollectorFiles,
    ForkingWorker,
    KilledRun,
    matching_count,
    sized,
)

from edgepersona.sdk import (
    ClientOptions,
    EncryptedStore,
    FileKeyProvider,
    HttpTransport,
    PersonaClient,
    PersonaRuntime,
    RollbackError,
    Sealer,
    SyncAgent,
)
from edgepersona.sdk._client import _TRUSTED
from edgepersona.sdk._sync import _SEQUENCE
from edgepersona.trainer.collector import CollectorConfig, LoopbackServer, SqliteAggregateStore, create_app

AT = 1_735_776_000.0  # 2025-01-02: every event's time, after the bundles' creation
KILLS = sized(16, 130)  # per kind
SECONDS = sized(60.0, 1_800.0)  # per kind
EARLY_KILLS = 0.25  # share of kills timed from the fork, so some land while the store opens


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkingWorker]:
    forking = ForkingWorker(tmp_path_factory.mktemp("device-worker") / "worker.log")
    yield forking
    forking.close()


def open_client(store: Path, bundle: Path, files: BundleFiles) -> PersonaClient:
    return PersonaClient.open(bundle, trusted_keys=[files.trusted_key.read_bytes()], store=store,
                              key_provider=FileKeyProvider(f"{store}.key"),
                              options=ClientOptions(backend="numpy"))


def observed(client: PersonaClient) -> list[tuple[int, float]]:
    """Per subject (you, me): events folded and their value sum (spend sums, basket averages)."""
    out = []
    for subject in ("you", "me"):
        features = client.features(subject=subject, at=AT)
        spend, basket = features[1], features[2]
        out.append((round(spend / basket) if spend else 0, spend))
    return out


def kill_moment(rng: random.Random, window: float) -> tuple[float, bool]:
    """(delay, whether it counts from ``ready``): mostly within ``window`` s of work."""
    after_ready = rng.random() >= EARLY_KILLS
    return (rng.uniform(0.0, window) if after_ready else rng.uniform(0.0, 0.08)), after_ready


def job(files: BundleFiles, store: Path, rng: random.Random, **fields: Any) -> dict[str, Any]:
    return {"trusted_key": str(files.trusted_key), "store": str(store), "at": AT,
            "seed": rng.randrange(2**32), "max_ops": 100_000, "batch": 0, "start": 0, **fields}


def check_events(client: PersonaClient, run: KilledRun, done: int) -> int:
    """The folded count, between the last acknowledged and the last attempted event."""
    acked, tried = max(run.numbers("ack"), default=done), max(run.numbers("try"), default=done)
    seen = observed(client)
    count = matching_count(seen, acked, tried)
    assert count is not None, f"store holds {seen}: not events 1..n for n in {acked}..{tried}"
    return count


def report(kind: str, budget: Budget, landed: Counter[str]) -> None:
    print(f"\n[campaign] device {kind}: {budget.done} kills survived; last line before the kill:"
          f" {dict(sorted(landed.items()))}")


@pytest.mark.slow
@pytest.mark.parametrize("batch", [0, 8], ids=["track", "track_many"])
def test_killed_tracking_never_loses_or_doubles_an_acknowledged_event(
        worker: ForkingWorker, tmp_path: Path, bundle_archives: BundleFiles, batch: int) -> None:
    rng, budget, landed = random.Random(1000 + batch), Budget(KILLS, SECONDS), Counter[str]()
    store, done = tmp_path / "device.db", 0
    for _ in budget.rounds():
        delay, after_ready = kill_moment(rng, 0.03)
        work = job(bundle_archives, store, rng, kind="track", bundle=str(bundle_archives.v1), batch=batch,
                   start=done)
        run = worker.kill_during(work, delay, after_ready=after_ready)
        assert run.killed, run.lines
        with open_client(store, bundle_archives.v1, bundle_archives) as client:
            done = check_events(client, run, done)
        landed[run.last] += 1
    budget.check()
    assert done > 0
    report("track_many" if batch else "track", budget, landed)


def update_phase(run: KilledRun) -> str:
    if "updated 2" in run.lines:
        return "after update"
    if "installed 2" in run.lines:
        return "installed, update in flight"
    return "before install" if "ready" in run.lines else "opening"


def trusted_version(store: Path) -> int:
    with EncryptedStore.open(store, FileKeyProvider(f"{store}.key")) as db:
        raw = db.get(EncryptedStore.GLOBAL, _TRUSTED)
    return int(raw) if raw is not None else 0


@pytest.mark.slow
def test_killed_update_leaves_the_old_or_the_new_bundle_never_a_mix(
        worker: ForkingWorker, tmp_path: Path, bundle_archives: BundleFiles) -> None:
    rng, budget, landed = random.Random(2000), Budget(KILLS, SECONDS), Counter[str]()
    template = tmp_path / "template"
    template.mkdir()
    open_client(template / "device.db", bundle_archives.v1, bundle_archives).close()
    archives = {1: bundle_archives.v1.read_bytes(), 2: bundle_archives.v2.read_bytes()}
    fresh = {v: PersonaRuntime.open(path, trusted_keys=[bundle_archives.trusted_key.read_bytes()],
                                    backend="numpy")
             for v, path in ((1, bundle_archives.v1), (2, bundle_archives.v2))}
    for number in budget.rounds():
        device = Path(shutil.copytree(template, tmp_path / f"run-{number}"))
        store, installed = device / "device.db", device / "installed.zip"
        shutil.copyfile(bundle_archives.v1, installed)
        delay, after_ready = kill_moment(rng, 0.025)
        run = worker.kill_during(job(bundle_archives, store, rng, kind="update", installed=str(installed),
                                     v2=str(bundle_archives.v2)), delay, after_ready=after_ready)
        assert run.killed, run.lines
        trusted = trusted_version(store)
        version = next((v for v, data in archives.items() if installed.read_bytes() == data), None)
        assert version is not None, "the installed archive is neither v1 nor v2: a torn install"
        assert "installed 2" not in run.lines or version == 2
        assert "updated 2" not in run.lines or trusted == 2, "an acknowledged update was undone"
        assert trusted <= version, "the device trusts a version it has no archive of: it cannot restart"
        with open_client(store, installed, bundle_archives) as client:
            assert client.runtime.version == version
            features = client.features(subject="me", at=AT)
            mine, fresh_result = client.assign(subject="me", at=AT), fresh[version].assign(features)
            assert (mine.model_version, mine.index, mine.distances) == (
                version, fresh_result.index, fresh_result.distances)
            assert len(mine.distances) == bundle_archives.personas[version]
            check_events(client, run, 0)
        assert trusted_version(store) == version
        if version == 2:
            with pytest.raises(RollbackError):
                open_client(store, bundle_archives.v1, bundle_archives)
        landed[update_phase(run)] += 1
        shutil.rmtree(device)
    budget.check()
    report("update", budget, landed)


@pytest.mark.slow
def test_killed_flushes_deliver_every_contribution_exactly_once(
        worker: ForkingWorker, tmp_path: Path, bundle_archives: BundleFiles,
        collector_files: CollectorFiles) -> None:
    rng, budget, landed = random.Random(3000), Budget(KILLS, SECONDS), Counter[str]()
    aggregates = SqliteAggregateStore(tmp_path / "collector.db")
    # two subjects contribute many times a day here: delivery is the subject, not the daily quota
    app = create_app(CollectorConfig(app_id=APP, bundles_dir=collector_files.bundles,
                                     pseudonym_daily_quota=None),
                     collector_private_key=collector_files.private, store=aggregates)
    store, sealer = tmp_path / "device.db", Sealer(collector_files.public_path.read_bytes(), app_id=APP)
    queued: list[int] = []
    acknowledged = 0
    with LoopbackServer(app) as server:
        transport = HttpTransport(server.url)
        for _ in budget.rounds():
            delay, after_ready = kill_moment(rng, 0.08)
            work = job(bundle_archives, store, rng, kind="flush", bundle=str(bundle_archives.v1),
                       url=server.url, collector_key=str(collector_files.public_path), app_id=APP,
                       batch=rng.randint(1, 8))
            run = worker.kill_during(work, delay, after_ready=after_ready)
            assert run.killed, run.lines
            fresh = run.numbers("queued")
            assert all(seq > max(queued, default=0) for seq in fresh), "a sequence number was reused"
            queued += fresh
            flushed = [line.split()[1:] for line in run.lines if line.startswith("flushed ")]
            assert all(rejected == "0" for _, _, rejected, _ in flushed), flushed
            acknowledged += sum(int(accepted) + int(duplicates) for accepted, duplicates, _, _ in flushed)
            with open_client(store, bundle_archives.v1, bundle_archives) as client:
                counters = SyncAgent(client, sealer, transport).counters
            assert counters["dropped"] == counters["rejected"] == 0
            assert counters["acknowledged"] >= acknowledged
            landed[run.last] += 1
        with open_client(store, bundle_archives.v1, bundle_archives) as client:
            agent = SyncAgent(client, sealer, transport, batch_size=100)
            for _ in range(1_000):
                if agent.flush().remaining == 0:
                    break
            assert agent.counters["queued"] == 0
            committed = int(client._store.get(EncryptedStore.GLOBAL, _SEQUENCE) or b"0")
    counts = app.state.collector.counts()
    total = sum(cell.count for cell in aggregates.aggregates(1).values())
    assert total == aggregates.dedupe_size() == counts["accepted"] == committed >= max(queued)
    aggregates.close()
    budget.check()
    report("flush", budget, landed)
    print(f"[campaign] device flush: {committed} contributions committed, {total} counted once,"
          f" {counts['duplicate']} resends acknowledged as duplicates")
