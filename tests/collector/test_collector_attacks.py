"""Forging contributions at scale, as one table: each attack against the real server on loopback.

The collector's public key ships on every device, so an attacker can seal as
many well-formed envelopes as they like. Each row runs against uvicorn on a
loopback port (:class:`LoopbackServer`) over HTTP, once with SQLite and once
with PostgreSQL (``EDGEPERSONA_TEST_POSTGRES_URL``), and checks the answers,
the metrics and the aggregates left behind:

1. one pseudonym sends 1,001 sequence numbers for one day: the per-pseudonym
   quota accepts 4 (the default) and refuses 997 as ``quota_exceeded``;
2. 1,000 freshly minted pseudonyms, no admission token, when admission is
   required: every request is refused with 401, nothing is stored; with a
   forged, expired or other-app token likewise; with one valid token of quota
   10, only 10 of the 1,000 are accepted;
3. 100 contributions claiming a persona with all-zero features (nowhere near
   it): every one refused as ``inconsistent_persona``, nothing stored.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from collector_testkit import APP, ASSIGNER, OCTETS, T0, TODAY, CollectorKeys, FakeClock, contribution
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from postgres_testkit import fresh_schema

from edgepersona.sdk import Sealer
from edgepersona.trainer.collector import (
    AggregateStore,
    CollectorConfig,
    Ed25519Admission,
    LoopbackServer,
    SqliteAggregateStore,
    create_app,
    encode_batch,
    issue_admission_token,
    nearest_personas,
)
from edgepersona.trainer.collector._postgres import PostgresAggregateStore

BATCH = 200  # envelopes per request


@pytest.fixture(params=["sqlite", "postgresql"])
def attacked_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AggregateStore]:
    if request.param == "sqlite":
        store: AggregateStore = SqliteAggregateStore(tmp_path / "collector.db")
        yield store
        store.close()
    else:
        with fresh_schema() as url:
            store = PostgresAggregateStore(url)
            yield store
            store.close()


def serve(store: AggregateStore, keys: CollectorKeys, bundles: Path, **options: Any) -> LoopbackServer:
    config = CollectorConfig(app_id=APP, bundles_dir=bundles, **options)
    return LoopbackServer(create_app(config, collector_private_key=keys.private, store=store,
                                     clock=FakeClock()))


def send(base: str, body: bytes, token: str | None = None) -> tuple[int, Any]:
    """POST a sync body over HTTP; the status and the JSON answer."""
    headers = dict(OCTETS) | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(f"{base}/v1/sync", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as reply:
        return reply.code, json.loads(reply.read())


def send_all(base: str, envelopes: list[bytes], token: str | None = None, batch: int = BATCH
             ) -> tuple[list[int], list[str]]:
    """Send envelopes in batches; every HTTP status and every per-envelope reason or status."""
    statuses, outcomes = [], []
    for start in range(0, len(envelopes), batch):
        status, answer = send(base, encode_batch(envelopes[start:start + batch]), token)
        statuses.append(status)
        outcomes += [r["reason"] or r["status"] for r in answer.get("results", [])]
    return statuses, outcomes


def bad_signature(token: str) -> str:
    """The token with one character in the middle of its signature changed."""
    at = len(token) - 20
    return token[:at] + ("B" if token[at] == "A" else "A") + token[at + 1:]


def metrics(base: str) -> Any:
    with urllib.request.urlopen(f"{base}/v1/metrics", timeout=30) as reply:
        return json.loads(reply.read())


def stored_count(store: AggregateStore) -> int:
    return sum(cell.count for version in (1, 2) for cell in store.aggregates(version).values())


def test_one_pseudonym_with_1001_sequences_is_held_to_its_daily_quota(
        attacked_store: AggregateStore, sealer: Sealer, collector_keys: CollectorKeys,
        shared_bundles: Path) -> None:
    envelopes = [sealer.seal(contribution(sequence=n)) for n in range(1, 1002)]
    with serve(attacked_store, collector_keys, shared_bundles) as server:
        statuses, outcomes = send_all(server.url, envelopes)
        counts = metrics(server.url)
    assert statuses == [200] * 6
    assert outcomes == ["accepted"] * 4 + ["quota_exceeded"] * 997
    assert (counts["accepted"], counts["rejected"]["quota_exceeded"]) == (4, 997)
    assert stored_count(attacked_store) == 4 and attacked_store.dedupe_size() == 4


def test_one_pseudonym_from_many_concurrent_clients_is_held_to_its_quota(
        attacked_store: AggregateStore, sealer: Sealer, collector_keys: CollectorKeys,
        shared_bundles: Path) -> None:
    envelopes = [sealer.seal(contribution(sequence=n)) for n in range(1, 161)]
    with serve(attacked_store, collector_keys, shared_bundles) as server, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: send_all(server.url, envelopes[n::8], batch=4)[1], range(8)))
    outcomes = Counter(outcome for answer in answers for outcome in answer)
    assert outcomes == {"accepted": 4, "quota_exceeded": 156}
    assert stored_count(attacked_store) == 4 and attacked_store.dedupe_size() == 4


def test_the_quota_is_per_day_and_model_version_and_replays_stay_duplicates(
        attacked_store: AggregateStore, sealer: Sealer, collector_keys: CollectorKeys,
        shared_bundles: Path) -> None:
    first = [sealer.seal(contribution(sequence=n)) for n in range(1, 6)]
    other_days = [sealer.seal(contribution(sequence=10 + n, day_bucket=TODAY - 1)) for n in range(5)]
    other_version = [sealer.seal(contribution(sequence=20 + n, model_version=2)) for n in range(5)]
    with serve(attacked_store, collector_keys, shared_bundles) as server:
        _, outcomes = send_all(server.url, first + other_days + other_version + first[:4])
    assert outcomes == (["accepted"] * 4 + ["quota_exceeded"]) * 3 + ["duplicate"] * 4
    assert stored_count(attacked_store) == 12


def test_minted_pseudonyms_without_an_admission_token_are_refused(
        attacked_store: AggregateStore, sealer: Sealer, collector_keys: CollectorKeys,
        shared_bundles: Path) -> None:
    backend = Ed25519PrivateKey.generate()
    admission = Ed25519Admission([backend.public_key()], app_id=APP)
    minted = [sealer.seal(contribution(pseudonym=f"{n:064x}")) for n in range(1000)]
    forged = issue_admission_token(Ed25519PrivateKey.generate(), app_id=APP, quota=1000, now=T0)
    expired = issue_admission_token(backend, app_id=APP, quota=1000, lifetime_s=60, now=T0 - 120)
    elsewhere = issue_admission_token(backend, app_id="com.example.other", quota=1000, now=T0)
    valid = issue_admission_token(backend, app_id=APP, quota=10, now=T0)
    with serve(attacked_store, collector_keys, shared_bundles, admission=admission) as server:
        refused = {token: send_all(server.url, minted, token)
                   for token in (None, "not-a-token", forged, expired, elsewhere, bad_signature(valid))}
        _, outcomes = send_all(server.url, minted, valid)
        counts = metrics(server.url)
    for statuses, per_envelope in refused.values():
        assert statuses == [401] * 5 and per_envelope == []
    assert counts["rejected"]["admission_required"] == 6 * 5
    assert outcomes == ["accepted"] * 10 + ["admission_quota_exceeded"] * 990
    assert stored_count(attacked_store) == 10 and attacked_store.dedupe_size() == 10


def test_persona_claims_inconsistent_with_the_features_are_refused(
        attacked_store: AggregateStore, sealer: Sealer, collector_keys: CollectorKeys,
        shared_bundles: Path) -> None:
    zeros = (0.0,) * 6
    centroids = np.asarray(ASSIGNER[0].centroids)
    claimed = next(p for p in range(len(centroids)) if p not in nearest_personas(ASSIGNER[0], zeros))
    forged = [sealer.seal(contribution(pseudonym=f"{n:064x}", persona_index=claimed, features=zeros))
              for n in range(100)]
    honest = sealer.seal(contribution(pseudonym="ab" * 32, features=zeros))
    with serve(attacked_store, collector_keys, shared_bundles) as server:
        _, outcomes = send_all(server.url, [*forged, honest])
        counts = metrics(server.url)
    assert outcomes == ["inconsistent_persona"] * 100 + ["accepted"]
    assert counts["rejected"]["inconsistent_persona"] == 100
    assert claimed not in attacked_store.aggregates(1)
    assert stored_count(attacked_store) == 1
