"""No pseudonym reaches the collector's database files, its logs or its responses."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from collector_testkit import (
    APP,
    TODAY,
    CollectorKeys,
    FakeClock,
    TestClient,
    contribution,
    post,
    pseudonym_of,
)

from edgepersona.sdk import Sealer
from edgepersona.trainer.collector import CollectorConfig, SqliteAggregateStore, create_app, encode_batch

DEVICES = 40


def leaks(data: bytes, pseudonyms: list[str]) -> list[str]:
    """Pseudonyms found as hex text (either case) or as their raw bytes."""
    lowered = data.lower()
    return [p for p in pseudonyms if p.encode() in lowered or bytes.fromhex(p) in data]


def test_database_files_and_logs_hold_no_pseudonym(tmp_path: Path, sealer: Sealer,
                                                   collector_keys: CollectorKeys, shared_bundles: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pseudonyms = [pseudonym_of(device) for device in range(DEVICES)]
    store = SqliteAggregateStore(tmp_path / "collector.db")
    client = TestClient(create_app(CollectorConfig(app_id=APP, bundles_dir=shared_bundles),
                                   collector_private_key=collector_keys.private, store=store,
                                   clock=FakeClock()))
    bodies = []
    for device, pseudonym in enumerate(pseudonyms):
        items = [contribution(pseudonym=pseudonym, sequence=n, persona_index=device % 4,
                              day_bucket=TODAY - (n % 3)) for n in range(3)]
        envelopes = [sealer.seal(item) for item in items]
        stale = sealer.seal(contribution(pseudonym=pseudonym, sequence=9, day_bucket=TODAY - 30))
        bodies += [encode_batch([*envelopes, envelopes[0], stale]), envelopes[1]]
    responses = [post(client, body) for body in bodies]
    assert sum(r.json()["accepted"] for r in responses) == 3 * DEVICES
    assert sum(r.json()["duplicate"] for r in responses) == 2 * DEVICES
    files = sorted(tmp_path.glob("collector.db*"))
    assert {f.name for f in files} >= {"collector.db", "collector.db-wal"}  # WAL still holds pages
    for path in files:
        assert leaks(path.read_bytes(), pseudonyms) == [], path.name
    text = caplog.text.encode()
    assert b"sync: batch of 5: accepted=3 duplicate=1 rejected=1 stale_day_bucket=1" in text
    assert leaks(text, pseudonyms) == []
    assert leaks(b"".join(r.content for r in responses), pseudonyms) == []
    store.close()
    for path in sorted(tmp_path.glob("collector.db*")):
        assert leaks(path.read_bytes(), pseudonyms) == [], path.name
