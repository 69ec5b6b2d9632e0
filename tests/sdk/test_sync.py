"""Device-side sync: sealed contributions, durable queue, at-least-once delivery, pull."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from edgepersona.sdk import (
    Contribution,
    InvalidEnvelope,
    MemoryKeyProvider,
    MemoryTransport,
    PersonaClient,
    Sealer,
    SealSuite,
    SyncAgent,
    TransportError,
)
from edgepersona.sdk.protocol.assign import model_space
from edgepersona.sdk.protocol.envelope import Opener, generate_collector_keypair
from edgepersona.sdk.protocol.framing import decode_batch
from edgepersona.trainer.release.export import zip_bundle
from edgepersona.trainer.release.train import TrainResult

T0 = 1_735_776_000.0
APP = "shop"


class FakeCollector:
    """Opens envelopes and counts each (pseudonym, sequence) once, like the real one."""

    def __init__(self, private: bytes) -> None:
        self.opener = Opener(private)
        self.seen: set[tuple[str, int]] = set()
        self.accepted: list[Contribution] = []
        self.bodies: list[bytes] = []
        self.fail_next = 0
        self.lose_reply_next = 0

    def post(self, body: bytes) -> bytes:
        self.bodies.append(body)
        if self.fail_next:
            self.fail_next -= 1
            raise TransportError("connection refused")
        results = []
        for envelope in decode_batch(body):
            try:
                c = self.opener.open(envelope, app_id=APP)
            except InvalidEnvelope:
                results.append({"status": "rejected"})
                continue
            key = (c.pseudonym, c.sequence)
            results.append({"status": "duplicate" if key in self.seen else "accepted"})
            if key not in self.seen:
                self.seen.add(key)
                self.accepted.append(c)
        if self.lose_reply_next:  # the server committed, then the reply was lost
            self.lose_reply_next -= 1
            raise TransportError("connection reset")
        return json.dumps({"results": results}).encode()


@pytest.fixture
def collector_keys() -> tuple[bytes, bytes]:
    return generate_collector_keypair(SealSuite.X25519)


def device(bundle: Mapping[str, bytes], public_key: bytes, tmp_path: Path,
           keys: MemoryKeyProvider) -> PersonaClient:
    return PersonaClient.open(dict(bundle), trusted_keys=[public_key], store=tmp_path / "s.db",
                              key_provider=keys, clock=lambda: T0)


def agent_for(client: PersonaClient, collector: FakeCollector, public: bytes,
              get: object = None, **options: int) -> SyncAgent:
    transport = MemoryTransport(collector.post, get or (lambda _v: b""))  # type: ignore[arg-type]
    return SyncAgent(client, Sealer(public, app_id=APP), transport, **options)  # type: ignore[arg-type]


def test_contributions_reach_the_collector_once_and_hold_no_raw_data(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path,
        collector_keys: tuple[bytes, bytes]) -> None:
    private, public = collector_keys
    collector = FakeCollector(private)
    keys = MemoryKeyProvider()
    with device(bundle_files, public_key, tmp_path, keys) as client:
        for i in range(5):
            client.track("purchase", 120.0, subject="alice@example.com", at=T0 - 3600 * i)
        agent = agent_for(client, collector, public)
        sequences = [agent.contribute(subject="alice@example.com") for _ in range(3)]
        assert sequences == [1, 2, 3]
        report = agent.flush()
        assert (report.accepted, report.remaining) == (3, 0)
        row = np.array(client.features(subject="alice@example.com"))
        expected = model_space(client.runtime.manifest.assigner, row[None, :])[0]
        sent = collector.accepted[0]
        np.testing.assert_allclose(sent.features, expected)
        assert sent.persona_index == client.assign(subject="alice@example.com").index
        assert sent.pseudonym == client.pseudonym(subject="alice@example.com").value
    wire = b"".join(collector.bodies)
    for secret in (b"alice@example.com", b"alice", b"purchase"):
        assert secret not in wire


def test_lost_replies_and_failures_retry_without_double_counting(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path,
        collector_keys: tuple[bytes, bytes]) -> None:
    private, public = collector_keys
    collector = FakeCollector(private)
    with device(bundle_files, public_key, tmp_path, MemoryKeyProvider()) as client:
        client.track("session", at=T0 - 10)
        agent = agent_for(client, collector, public)
        for _ in range(4):
            agent.contribute()
        collector.fail_next = 2
        first, second = agent.flush(), agent.flush()
        assert first.retry_after is not None and second.retry_after is not None
        assert 0.0 <= first.retry_after <= 1.0 and 0.0 <= second.retry_after <= 2.0
        assert first.remaining == 4 and not collector.accepted
        collector.lose_reply_next = 1
        lost = agent.flush()
        assert lost.retry_after is not None and lost.remaining == 4
        assert len(collector.accepted) == 4  # the server did count them
        again = agent.flush()
        assert (again.accepted, again.duplicates, again.remaining) == (0, 4, 0)
        assert len(collector.accepted) == 4
        assert agent.counters["acknowledged"] == 4


def test_queue_survives_a_restart_and_is_bounded(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path,
        collector_keys: tuple[bytes, bytes]) -> None:
    private, public = collector_keys
    collector = FakeCollector(private)
    keys = MemoryKeyProvider()
    with device(bundle_files, public_key, tmp_path, keys) as client:
        client.track("session", at=T0 - 10)
        agent = agent_for(client, collector, public, max_queue=3)
        for _ in range(5):
            agent.contribute()
        assert agent.counters == {"queued": 3, "dropped": 2, "rejected": 0, "acknowledged": 0}
    with device(bundle_files, public_key, tmp_path, keys) as client:
        agent = agent_for(client, collector, public, max_queue=3)
        assert agent.flush().accepted == 3
        assert sorted(c.sequence for c in collector.accepted) == [3, 4, 5]  # oldest dropped
        assert agent.contribute() == 6  # sequence numbers are never reused


def test_refused_envelopes_are_dropped_and_counted(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path,
        collector_keys: tuple[bytes, bytes]) -> None:
    _private, public = collector_keys
    wrong_collector = FakeCollector(generate_collector_keypair(SealSuite.X25519)[0])
    with device(bundle_files, public_key, tmp_path, MemoryKeyProvider()) as client:
        client.track("session", at=T0 - 10)
        agent = agent_for(client, wrong_collector, public)
        agent.contribute()
        report = agent.flush()
        assert (report.rejected, report.remaining) == (1, 0)
        assert agent.counters["rejected"] == 1


def test_pull_updates_to_a_newer_bundle_and_ignores_older(
        bundle_files: Mapping[str, bytes], trained_v2: TrainResult, public_key: bytes,
        tmp_path: Path, collector_keys: tuple[bytes, bytes]) -> None:
    private, public = collector_keys
    v2 = zip_bundle(trained_v2.files, tmp_path / "v2.zip").read_bytes()
    served = {"bytes": v2}
    with device(bundle_files, public_key, tmp_path, MemoryKeyProvider()) as client:
        agent = agent_for(client, FakeCollector(private), public,
                          get=lambda _v: served["bytes"])
        assert agent.pull() == 2
        served["bytes"] = zip_bundle(bundle_files, tmp_path / "v1.zip").read_bytes()
        assert agent.pull() == 2  # an older bundle from the server changes nothing
