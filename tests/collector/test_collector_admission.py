"""Admission tokens end to end: a real device (PersonaClient + SyncAgent + HttpTransport) and a
collector on loopback that requires them; and the token checks one by one."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Mapping
from pathlib import Path

import pytest
from collector_testkit import APP, T0, CollectorKeys, FakeClock
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import HttpTransport, MemoryKeyProvider, PersonaClient, Sealer, SyncAgent
from edgepersona.trainer.collector import (
    CollectorConfig,
    Ed25519Admission,
    LoopbackServer,
    SqliteAggregateStore,
    create_app,
    issue_admission_token,
)

BACKEND = Ed25519PrivateKey.generate()


def test_an_enrolled_device_syncs_with_its_token_and_an_unenrolled_one_keeps_its_queue(
        tmp_path: Path, bundle_files: Mapping[str, bytes], public_key: bytes,
        collector_keys: CollectorKeys, shared_bundles: Path) -> None:
    store = SqliteAggregateStore(tmp_path / "collector.db")
    config = CollectorConfig(app_id=APP, bundles_dir=shared_bundles,
                             admission=Ed25519Admission([BACKEND.public_key()], app_id=APP))
    app = create_app(config, collector_private_key=collector_keys.private, store=store, clock=FakeClock())
    rng = random.Random(5)
    with LoopbackServer(app) as server, PersonaClient.open(
            dict(bundle_files), trusted_keys=[public_key], store=tmp_path / "device.db",
            key_provider=MemoryKeyProvider(), clock=lambda: T0) as client:
        subjects = [f"customer-{n}" for n in range(30)]
        for subject in subjects:  # varied behaviour, so contributions land on several personas
            last_seen = rng.choice([0.0, 20.0, 120.0, 300.0])  # days ago
            for visit in range(rng.choice([1, 3, 10, 25])):
                at = T0 - 86_400.0 * (last_seen + visit * rng.uniform(0.1, 3.0))
                client.track("session", subject=subject, at=at)
                client.track("purchase", rng.uniform(1.0, 900.0), subject=subject, at=at)
                client.track("view", subject=subject, at=at, properties={"category": f"c{visit % 9}"})
        sealer = Sealer(collector_keys.public, app_id=APP)
        unenrolled = SyncAgent(client, sealer, HttpTransport(server.url))
        unenrolled.contribute(subject=subjects[0])
        refused = unenrolled.flush()
        assert refused.remaining == 1 and refused.retry_after is not None
        assert "admission token" in refused.errors[0]
        tokens = [issue_admission_token(BACKEND, app_id=APP, quota=quota, now=T0) for quota in (10, 100)]
        enrolled = SyncAgent(client, sealer, HttpTransport(server.url), token_provider=lambda: tokens[0])
        for subject in subjects[1:]:
            enrolled.contribute(subject=subject)
        spent = enrolled.flush()  # the first token's quota runs out: the rest stays queued
        assert (spent.accepted, spent.deferred, spent.rejected, spent.remaining) == (10, 20, 0, 20)
        assert spent.retry_after is not None
        tokens.pop(0)  # the app fetches a fresh token from its backend
        report = enrolled.flush()
    assert (report.accepted, report.rejected, report.remaining) == (20, 0, 0)
    personas = store.aggregates(1)
    assert sum(a.count for a in personas.values()) == 30 and len(personas) >= 2  # every one consistent
    store.close()


def tampered(token: str) -> str:
    """The token with its quota raised and the original signature kept."""
    claims, _, signature = token.partition(".")
    raw = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    raw["quota"] = 1000
    text = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).rstrip(b"=").decode() + "." + signature


@pytest.mark.parametrize("case", ["valid", "other key", "other app", "expired", "not yet valid",
                                  "too long-lived", "tampered claims", "garbage", "none"])
def test_each_token_check(case: str) -> None:
    check = Ed25519Admission([BACKEND.public_key()], app_id=APP, max_lifetime_s=86_400)
    issue = {"valid": lambda: issue_admission_token(BACKEND, app_id=APP, quota=3, now=T0),
             "other key": lambda: issue_admission_token(Ed25519PrivateKey.generate(), app_id=APP,
                                                        quota=3, now=T0),
             "other app": lambda: issue_admission_token(BACKEND, app_id="other", quota=3, now=T0),
             "expired": lambda: issue_admission_token(BACKEND, app_id=APP, quota=3, lifetime_s=10,
                                                      now=T0 - 11),
             "not yet valid": lambda: issue_admission_token(BACKEND, app_id=APP, quota=3, now=T0 + 3600),
             "too long-lived": lambda: issue_admission_token(BACKEND, app_id=APP, quota=3,
                                                             lifetime_s=2 * 86_400, now=T0),
             "tampered claims": lambda: tampered(issue_admission_token(BACKEND, app_id=APP, quota=3,
                                                                      now=T0)),
             "garbage": lambda: "a.b.c",
             "none": lambda: None}[case]
    admission = check.check(issue(), T0)
    if case == "valid":
        assert admission is not None and admission.quota == 3 and admission.expires_at == T0 + 86_400
    else:
        assert admission is None
