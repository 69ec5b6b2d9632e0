"""Campaign 2: SIGKILL ``edgepersona serve`` under load, restart it on the same database.

Two client threads post batches of sealed contributions to a real ``edgepersona
serve`` process on 127.0.0.1 and record, per contribution, every status the
collector answered. A contribution counts as acknowledged on HTTP 200 with
``accepted`` or ``duplicate``; anything else (refused connection, a connection
cut mid-answer, a 5xx) puts it back in the queue, and one in ten acknowledged
contributions is deliberately sent again, half of all sends resealed (other
bytes, same pseudonym and sequence). While they send, the test SIGKILLs the
server at a random moment, restarts it on the same port and database, and
goes on. At the end every contribution has been acknowledged and:

* the aggregates equal exactly the sums of the distinct contributions
  (count, sums, sums of squares per day and persona; features are multiples
  of 1/4, so float sums are exact): nothing lost, nothing counted twice;
* the ledger holds one key per contribution;
* no contribution was ``accepted`` twice, and every answer after its first
  acknowledgement is ``duplicate``.

Backends: SQLite, and PostgreSQL when ``EDGEPERSONA_TEST_POSTGRES_URL`` is set
(``eval "$(scripts/ci/start_postgres.sh)"``); without it the PostgreSQL case
skips, or fails when ``CI`` is set. Sizes: short 3 kills per backend, long 30::

    EDGEPERSONA_CAMPAIGN=long python -m pytest tests/campaigns/test_campaign_collector_kills.py -s
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from campaign_testkit import APP, Budget, CollectorFiles, dyadic_contributions, sized
from postgres_testkit import exact_cells, fresh_schema  # tests/collector: on sys.path via conftest

from benchmarks.load import ServeProcess, post_batch
from edgepersona.sdk import Contribution, Sealer, day_bucket
from edgepersona.trainer.collector import AggregateStore, SqliteAggregateStore, encode_batch
from edgepersona.trainer.collector._postgres import PostgresAggregateStore

KILLS = sized(3, 30)  # per backend
SECONDS = sized(90.0, 1_200.0)  # per backend
PER_KILL = 150  # contributions per kill, plus a tail sent after the last restart
REPLAY = 0.1  # share of acknowledged contributions sent once more
ACKED = ("accepted", "duplicate")


@dataclass(frozen=True)
class Database:
    """A collector database: its ``--db`` URL and how to open it for reading."""

    url: str
    open: Callable[[], AggregateStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        path = tmp_path / "collector.db"
        yield Database(f"sqlite:///{path}", lambda: SqliteAggregateStore(path))
        return
    with fresh_schema() as url:  # skips without a server, fails in CI
        yield Database(url, lambda: PostgresAggregateStore(url))


class AckingSender:
    """Client threads that send until every contribution was acknowledged, recording each answer.

    Args:
        base: The collector's base URL (stable across restarts).
        items: The contributions.
        sealer: Seals them for the collector.
        seed: Seeds batch sizes, reseals and replays.
    """

    def __init__(self, base: str, items: list[Contribution], sealer: Sealer, seed: int) -> None:
        self.base, self.items, self.sealer = base, items, sealer
        self.sealed = [sealer.seal(item) for item in items]
        self.statuses: dict[int, list[str]] = {i: [] for i in range(len(items))}
        self.replayed: set[int] = set()
        self.failures: list[str] = []
        self.retries = self.answers = 0
        self._pending = deque(range(len(items)))
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(seed + n,)) for n in range(2)]

    def __enter__(self) -> AckingSender:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def acknowledged(self) -> int:
        """Contributions acknowledged at least once."""
        with self._lock:
            return sum(1 for answers in self.statuses.values() if any(s in ACKED for s in answers))

    def wait_for(self, acknowledged: int, timeout: float) -> None:
        """Block until ``acknowledged`` contributions were acknowledged (or fail after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.acknowledged() < acknowledged and not self.failures:
            assert time.monotonic() < deadline, f"only {self.acknowledged()} of {acknowledged} acknowledged"
            time.sleep(0.01)
        assert not self.failures, self.failures[:5]

    def _take(self, rng: random.Random) -> list[int]:
        with self._lock:
            return [self._pending.popleft() for _ in range(min(rng.randint(5, 25), len(self._pending)))]

    def _send(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            chosen = self._take(rng)
            if not chosen:
                time.sleep(0.01)
                continue
            body = encode_batch([self.sealed[i] if rng.random() < 0.5 else self.sealer.seal(self.items[i])
                                 for i in chosen])
            try:
                answers = post_batch(self.base, body, timeout=10.0)
            except OSError:  # the server is down or died mid-answer: retry all of them
                with self._lock:
                    self._pending.extendleft(chosen)
                    self.retries += 1
                time.sleep(0.05)
                continue
            except RuntimeError as refused:
                self.failures.append(str(refused))
                return
            self._record(chosen, answers, rng)

    def _record(self, chosen: list[int], answers: list[str], rng: random.Random) -> None:
        with self._lock:
            self.answers += len(answers)
            for index, status in zip(chosen, answers, strict=True):
                if status not in ACKED:
                    self.failures.append(f"contribution {index} was {status}")
                first = not any(s in ACKED for s in self.statuses[index])
                self.statuses[index].append(status)
                if first and index not in self.replayed and rng.random() < REPLAY:
                    self.replayed.add(index)
                    self._pending.append(index)


@pytest.mark.slow
def test_killed_collector_counts_every_acknowledged_contribution_exactly_once(
        database: Database, collector_files: CollectorFiles, tmp_path: Path) -> None:
    rng, budget = random.Random(4242), Budget(KILLS, SECONDS)
    today = day_bucket(time.time())
    # three contributions per device: within the collector's default per-pseudonym daily quota
    items = dyadic_contributions((KILLS * PER_KILL + 300) // 3, 3, days=(today, today - 1),
                                 bundles=collector_files.bundles, seed=17)
    server = ServeProcess(db=database.url, collector_key=collector_files.key_folder,
                          bundles=collector_files.bundles, app_id=APP, log=tmp_path / "serve.log")
    sealer = Sealer(collector_files.public_path.read_bytes(), app_id=APP)
    with server, AckingSender(server.base, items, sealer, seed=99) as sender:
        for _ in budget.rounds():
            sender.wait_for(min(len(items) - 1, sender.acknowledged() + rng.randint(20, PER_KILL)), 60.0)
            time.sleep(rng.uniform(0.0, 0.05))
            server.kill()
            time.sleep(rng.uniform(0.0, 0.2))
            server.start()
        sender.wait_for(len(items), 120.0)
        answers = sender.statuses
    budget.check()
    store = database.open()
    try:
        stored = {(c.day_bucket, c.persona_index): (c.aggregate.count, c.aggregate.sums.tolist(),
                                                    c.aggregate.sumsq.tolist())
                  for c in store.daily_aggregates(1)}
        assert stored == exact_cells(items), "the aggregates are not the sums of the distinct contributions"
        assert store.dedupe_size() == len(items)
    finally:
        store.close()
    assert all(s.count("accepted") <= 1 and all(a == "duplicate" for a in s[1:]) for s in answers.values())
    unanswered = sum(1 for s in answers.values() if s[0] == "duplicate")
    print(f"\n[campaign] collector {database.url.split(':')[0]}: {budget.done} kills survived;"
          f" {len(items)} contributions counted exactly once; {sender.retries} requests retried;"
          f" {unanswered} committed while their answer was lost (resend: duplicate);"
          f" {len(sender.replayed)} deliberate replays acknowledged as duplicate")
