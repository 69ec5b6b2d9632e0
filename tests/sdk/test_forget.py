"""PersonaClient.forget: the subject's state is gone and, if it comes back, it is a stranger.

The store's side (no page of the subject left in any file) is tested in
``test_store.py``; here the client's: a forgotten subject gets a fresh
pseudonym salt, so its local and sync pseudonyms before and after cannot be
linked, while every other subject keeps its pseudonyms and its state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from edgepersona.sdk import FileKeyProvider, MemoryTransport, PersonaClient, Pseudonymizer, Sealer, SyncAgent
from edgepersona.sdk.protocol.envelope import Opener, generate_collector_keypair
from edgepersona.sdk.protocol.framing import decode_batch

T0 = 1_735_776_000.0  # 2025-01-02, after the test bundles were created
DOMAINS = ("local", "sync")


def open_client(bundle: Mapping[str, bytes], public_key: bytes, folder: Path) -> PersonaClient:
    return PersonaClient.open(dict(bundle), trusted_keys=[public_key], store=folder / "state.db",
                              key_provider=FileKeyProvider(folder / "state.key"), clock=lambda: T0)


def pseudonyms(client: PersonaClient, subject: str) -> dict[tuple[str, float], str]:
    """The subject's pseudonyms in both domains, in this epoch and the next."""
    return {(domain, at): client.pseudonym(subject=subject, domain=domain, at=at).value  # type: ignore[arg-type]
            for domain in DOMAINS for at in (T0, T0 + 40 * 86_400)}


def track(client: PersonaClient, subject: str) -> None:
    for hour in range(5):
        client.track("purchase", 80.0 + hour, subject=subject, at=T0 - 3600 * hour)


def test_a_forgotten_subject_comes_back_with_new_pseudonyms(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path) -> None:
    with open_client(bundle_files, public_key, tmp_path) as client:
        track(client, "bob")
        track(client, "alice")
        bob_before, alice_before = pseudonyms(client, "bob"), pseudonyms(client, "alice")
        alice_features = client.features(subject="alice")
        assert client.forget("bob") is True
        track(client, "bob")
        bob_after = pseudonyms(client, "bob")
        assert set(bob_after.values()).isdisjoint(bob_before.values())
        assert pseudonyms(client, "alice") == alice_before
        assert client.features(subject="alice") == alice_features
    with open_client(bundle_files, public_key, tmp_path) as client:  # stable across restarts
        assert pseudonyms(client, "bob") == bob_after
        assert pseudonyms(client, "alice") == alice_before


def test_a_pseudonym_asked_before_the_first_event_stays_after_it(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path) -> None:
    with open_client(bundle_files, public_key, tmp_path) as client:
        first = pseudonyms(client, "newcomer")
        track(client, "newcomer")
        assert pseudonyms(client, "newcomer") == first
        client.forget("newcomer")
        assert set(pseudonyms(client, "newcomer").values()).isdisjoint(first.values())


def test_state_written_before_subject_salts_keeps_its_pseudonyms(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path) -> None:
    with open_client(bundle_files, public_key, tmp_path) as client:
        track(client, "veteran")
        store = client._store
        assert store.delete("veteran", "pseudonym_salt")  # as an older SDK left it
        secret = store.get(store.GLOBAL, "pseudonym_secret")
        assert secret is not None
        period = round(client._options.pseudonym_period_days * 86_400)
        legacy = Pseudonymizer(secret, period_s=period)
        assert client.pseudonym(subject="veteran", domain="sync", at=T0) == legacy.pseudonym(
            "veteran", domain="sync", at=T0)
        track(client, "veteran")  # more events do not change them
        assert client.pseudonym(subject="veteran", domain="local", at=T0) == legacy.pseudonym(
            "veteran", domain="local", at=T0)
        client.forget("veteran")
        track(client, "veteran")
        assert client.pseudonym(subject="veteran", domain="sync", at=T0) != legacy.pseudonym(
            "veteran", domain="sync", at=T0)


def test_the_queued_envelopes_of_a_forgotten_subject_are_never_sent(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path) -> None:
    private, public = generate_collector_keypair()
    bodies: list[bytes] = []

    def post(body: bytes) -> bytes:
        bodies.append(body)
        return json.dumps({"results": [{"status": "accepted"}] * len(decode_batch(body))}).encode()

    with open_client(bundle_files, public_key, tmp_path) as client:
        agent = SyncAgent(client, Sealer(public, app_id="app"), MemoryTransport(post, lambda _v: b""))
        for subject in ("bob", "alice", "bob", "carol", "bob"):
            track(client, subject)
            agent.contribute(subject=subject)
        kept = {client.pseudonym(subject=s, domain="sync").value for s in ("alice", "carol")}
        bob = client.pseudonym(subject="bob", domain="sync").value
        queued = decode_batch(client._store.get(client._store.GLOBAL, "sync_queue") or b"")
        bobs = [e for e in queued if Opener(private).open(e, app_id="app").pseudonym == bob]
        assert len(bobs) == 3
        assert client.forget("bob") is True
        assert agent.counters["queued"] == 2 and agent.counters["dropped"] == 3
        left = decode_batch(client._store.get(client._store.GLOBAL, "sync_queue") or b"")
        assert not set(bobs) & set(left)
        track(client, "bob")  # back as a stranger: queued and sent like anyone else
        agent.contribute(subject="bob")
        newcomer = client.pseudonym(subject="bob", domain="sync").value
        assert agent.flush().accepted == 3
    opener = Opener(private)
    sent = [opener.open(e, app_id="app").pseudonym for body in bodies for e in decode_batch(body)]
    assert sorted(sent) == sorted([*kept, newcomer])


def test_envelopes_queued_before_tags_existed_are_kept(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path) -> None:
    _, public = generate_collector_keypair()
    with open_client(bundle_files, public_key, tmp_path) as client:
        agent = SyncAgent(client, Sealer(public, app_id="app"), MemoryTransport(
            lambda body: b"", lambda _v: b""))
        for subject in ("bob", "alice"):
            track(client, subject)
            agent.contribute(subject=subject)
        assert client._store.delete(client._store.GLOBAL, "sync_queue_tags")  # an older SDK's queue
        client.forget("bob")
        assert agent.counters["queued"] == 2 and agent.counters["dropped"] == 0
        agent.contribute(subject="alice")  # the queue goes on, tagged from now on
        assert agent.counters["queued"] == 3
