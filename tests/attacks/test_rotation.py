"""Key rotation: a device trusts a new signing key only through a statement the old key signed.

The pure core (``TrustedKeys.rotate``) is tested against forged, replayed,
expired and malformed statements; the client (``PersonaClient.rotate_key``)
for persistence across restarts and the rule that a revoked key passed by
the app is not trusted again.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import (
    BundleExpiredError,
    EncryptedStore,
    InputError,
    ModelIntegrityError,
    RollbackError,
    StoreCorruptError,
    UntrustedKeyError,
)
from edgepersona.sdk.protocol.bundle import bundle_source, verify_bundle
from edgepersona.sdk.protocol.manifest import canonical_json
from edgepersona.sdk.protocol.rotation import (
    MAX_STATEMENT_BYTES,
    ROTATION_CONTEXT,
    build_rotation_statement,
)
from edgepersona.sdk.protocol.signing import MANIFEST_CONTEXT, key_id, sign
from edgepersona.sdk.protocol.trust import TrustedKeys, dump_trust, load_trust

from .conftest import Device, public_pem
from .repository import BundleRepository

DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def a() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def b() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def c() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def kid(key: Ed25519PrivateKey) -> str:
    return key_id(key.public_key())


def rotation(old: Ed25519PrivateKey, new: Ed25519PrivateKey, now: datetime, counter: int = 1,
             valid_for: timedelta = 30 * DAY) -> bytes:
    return build_rotation_statement(old, new, counter=counter, now=now, valid_for=valid_for)


def forged(payload: Mapping[str, Any] | bytes, *signers: tuple[Ed25519PrivateKey, bytes]) -> bytes:
    """A statement with any payload, signed by any keys under any context."""
    raw = payload if isinstance(payload, bytes) else canonical_json(payload)
    signatures = [sign(key, context, raw) for key, context in signers]
    return json.dumps({"payload": base64.b64encode(raw).decode(),
                       "signatures": [{"key_id": s.key_id,
                                       "signature": base64.b64encode(s.signature).decode()}
                                      for s in signatures]}).encode()


def payload_of(statement: bytes) -> dict[str, Any]:
    data = json.loads(base64.b64decode(json.loads(statement)["payload"]))
    assert isinstance(data, dict)
    return data


def without_signature_by(statement: bytes, key: Ed25519PrivateKey) -> bytes:
    body = json.loads(statement)
    body["signatures"] = [s for s in body["signatures"] if s["key_id"] != kid(key)]
    return json.dumps(body).encode()


def assert_unchanged(trusted: TrustedKeys, ids: tuple[str, ...], revoked: frozenset[str],
                     counter: int) -> None:
    assert (trusted.ids, trusted.revoked, trusted.rotation) == (ids, revoked, counter)


# ------------------------------------------------------------------ the pure core


def test_rotation_signed_by_the_trusted_old_key_moves_trust_to_the_new_key(
        a: Ed25519PrivateKey, b: Ed25519PrivateKey, bundle_now: datetime) -> None:
    trusted = TrustedKeys([a.public_key()])
    rotated = trusted.rotate(rotation(a, b, bundle_now), now=bundle_now)
    assert rotated.ids == (kid(b),)
    assert rotated.revoked == {kid(a)}
    assert rotated.rotation == 1
    assert_unchanged(trusted, (kid(a),), frozenset(), 0)  # pure: the old set is untouched


def test_other_trusted_keys_stay_trusted(a: Ed25519PrivateKey, b: Ed25519PrivateKey,
                                         c: Ed25519PrivateKey, bundle_now: datetime) -> None:
    rotated = TrustedKeys([a.public_key(), c.public_key()]).rotate(rotation(a, b, bundle_now),
                                                                   now=bundle_now)
    assert set(rotated.ids) == {kid(b), kid(c)}
    assert rotated.revoked == {kid(a)}


def test_rotation_to_a_key_the_app_already_trusts(a: Ed25519PrivateKey, b: Ed25519PrivateKey,
                                                  bundle_now: datetime) -> None:
    # Both signatures come from trusted keys; the old key's is the one that counts.
    rotated = TrustedKeys([a.public_key(), b.public_key()]).rotate(rotation(a, b, bundle_now),
                                                                   now=bundle_now)
    assert_unchanged(rotated, (kid(b),), frozenset({kid(a)}), 1)


def test_rotations_chain_in_counter_order(a: Ed25519PrivateKey, b: Ed25519PrivateKey,
                                          c: Ed25519PrivateKey, bundle_now: datetime) -> None:
    first, second = rotation(a, b, bundle_now, 1), rotation(b, c, bundle_now, 2)
    trusted = TrustedKeys([a.public_key()])
    with pytest.raises(UntrustedKeyError, match="counter order"):
        trusted.rotate(second, now=bundle_now)  # B is not trusted yet
    rotated = trusted.rotate(first, now=bundle_now).rotate(second, now=bundle_now)
    assert_unchanged(rotated, (kid(c),), frozenset({kid(a), kid(b)}), 2)


def test_rotation_signed_by_the_new_key_alone_is_refused(a: Ed25519PrivateKey, b: Ed25519PrivateKey,
                                                         bundle_now: datetime) -> None:
    only_new = without_signature_by(rotation(a, b, bundle_now), a)
    with pytest.raises(UntrustedKeyError, match="none of them trusted"):
        TrustedKeys([a.public_key()]).rotate(only_new, now=bundle_now)


def test_rotation_signed_by_an_untrusted_key_claiming_the_old_key_is_refused(
        a: Ed25519PrivateKey, b: Ed25519PrivateKey, c: Ed25519PrivateKey,
        bundle_now: datetime) -> None:
    claim = payload_of(rotation(a, c, bundle_now))  # retires A, hands over to C ...
    statement = forged(claim, (c, ROTATION_CONTEXT), (b, ROTATION_CONTEXT))  # ... signed by others
    with pytest.raises(UntrustedKeyError):
        TrustedKeys([a.public_key()]).rotate(statement, now=bundle_now)


def test_a_trusted_key_cannot_retire_another_trusted_key(a: Ed25519PrivateKey, b: Ed25519PrivateKey,
                                                         c: Ed25519PrivateKey,
                                                         bundle_now: datetime) -> None:
    claim = payload_of(rotation(a, c, bundle_now))  # retires A ...
    statement = forged(claim, (b, ROTATION_CONTEXT))  # ... signed by B, also trusted
    with pytest.raises(UntrustedKeyError, match="can only retire itself"):
        TrustedKeys([a.public_key(), b.public_key()]).rotate(statement, now=bundle_now)


def test_a_changed_payload_or_proof_of_possession_is_refused(
        a: Ed25519PrivateKey, b: Ed25519PrivateKey, c: Ed25519PrivateKey,
        bundle_now: datetime) -> None:
    trusted = TrustedKeys([a.public_key()])
    good = rotation(a, b, bundle_now)
    body = json.loads(good)
    swapped = payload_of(good)
    swapped["new_public_key"] = c.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    body["payload"] = base64.b64encode(canonical_json(swapped)).decode()
    with pytest.raises(ModelIntegrityError, match="does not verify"):
        trusted.rotate(json.dumps(body).encode(), now=bundle_now)
    # The old key's signature is fine but the new key's proof is by someone else.
    payload = base64.b64decode(json.loads(good)["payload"])
    proof = sign(c, ROTATION_CONTEXT, payload)
    body = json.loads(good)
    body["signatures"][1]["signature"] = base64.b64encode(proof.signature).decode()
    with pytest.raises(ModelIntegrityError, match=f"key {kid(b)} does not verify"):
        trusted.rotate(json.dumps(body).encode(), now=bundle_now)


def test_a_signature_made_for_another_purpose_is_refused(a: Ed25519PrivateKey, b: Ed25519PrivateKey,
                                                         bundle_now: datetime) -> None:
    claim = payload_of(rotation(a, b, bundle_now))
    with pytest.raises(ModelIntegrityError, match="does not verify"):
        TrustedKeys([a.public_key()]).rotate(forged(claim, (a, MANIFEST_CONTEXT)), now=bundle_now)


def test_an_unrelated_extra_signature_is_refused(a: Ed25519PrivateKey, b: Ed25519PrivateKey,
                                                 c: Ed25519PrivateKey, bundle_now: datetime) -> None:
    claim = payload_of(rotation(a, b, bundle_now))
    statement = forged(claim, (a, ROTATION_CONTEXT), (c, ROTATION_CONTEXT))
    with pytest.raises(ModelIntegrityError, match="unrelated"):
        TrustedKeys([a.public_key()]).rotate(statement, now=bundle_now)


def test_proof_of_possession_is_optional(a: Ed25519PrivateKey, b: Ed25519PrivateKey,
                                         bundle_now: datetime) -> None:
    only_old = without_signature_by(rotation(a, b, bundle_now), b)
    assert TrustedKeys([a.public_key()]).rotate(only_old, now=bundle_now).ids == (kid(b),)


def test_an_expired_rotation_is_refused(a: Ed25519PrivateKey, b: Ed25519PrivateKey,
                                        bundle_now: datetime) -> None:
    statement = rotation(a, b, bundle_now, valid_for=DAY)
    trusted = TrustedKeys([a.public_key()])
    assert trusted.rotate(statement, now=bundle_now + DAY - timedelta(seconds=1)).rotation == 1
    with pytest.raises(BundleExpiredError, match="expired"):
        trusted.rotate(statement, now=bundle_now + DAY)


def test_replaying_an_applied_rotation_changes_nothing(a: Ed25519PrivateKey, b: Ed25519PrivateKey,
                                                       bundle_now: datetime) -> None:
    statement = rotation(a, b, bundle_now)
    rotated = TrustedKeys([a.public_key()]).rotate(statement, now=bundle_now)
    with pytest.raises(RollbackError, match="not newer"):
        rotated.rotate(statement, now=bundle_now)  # B's proof of possession is trusted now
    with pytest.raises(UntrustedKeyError, match="revoked"):
        rotated.rotate(without_signature_by(statement, b), now=bundle_now)
    assert_unchanged(rotated, (kid(b),), frozenset({kid(a)}), 1)


def test_replaying_an_older_rotation_by_a_still_trusted_key_changes_nothing(
        a: Ed25519PrivateKey, b: Ed25519PrivateKey, c: Ed25519PrivateKey,
        bundle_now: datetime) -> None:
    older = rotation(b, c, bundle_now, counter=1)  # B -> C, never applied
    trusted = TrustedKeys([a.public_key(), b.public_key()]).rotate(
        rotation(a, c, bundle_now, counter=2), now=bundle_now)
    with pytest.raises(RollbackError, match="not newer"):
        trusted.rotate(older, now=bundle_now)
    assert_unchanged(trusted, tuple(sorted((kid(b), kid(c)))), frozenset({kid(a)}), 2)


def test_a_revoked_key_can_never_be_trusted_again(a: Ed25519PrivateKey, b: Ed25519PrivateKey,
                                                  bundle_now: datetime) -> None:
    rotated = TrustedKeys([a.public_key()]).rotate(rotation(a, b, bundle_now), now=bundle_now)
    with pytest.raises(ModelIntegrityError, match="revoked key"):
        rotated.rotate(rotation(b, a, bundle_now, counter=2), now=bundle_now)
    assert TrustedKeys([a.public_key(), b.public_key()], revoked=rotated.revoked).ids == (kid(b),)
    with pytest.raises(InputError, match="revoked"):
        TrustedKeys([a.public_key()], revoked=rotated.revoked)


def test_rotating_a_key_to_itself_is_refused(a: Ed25519PrivateKey, bundle_now: datetime) -> None:
    with pytest.raises(InputError, match="new signing key is the old one"):
        rotation(a, a, bundle_now)
    claim = {"type": "edgepersona/key-rotation", "schema_version": 1, "counter": 1,
             "old_key_id": kid(a), "new_public_key": a.public_key().public_bytes(
                 serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex(),
             "created_at": bundle_now.isoformat(), "expires_at": (bundle_now + DAY).isoformat()}
    with pytest.raises(ModelIntegrityError, match="retired or a revoked key"):
        TrustedKeys([a.public_key()]).rotate(forged(claim, (a, ROTATION_CONTEXT)), now=bundle_now)


@pytest.mark.parametrize("statement", [
    b"", b"null", b"[]", b"{}", b'{"payload": "", "signatures": []}',
    b'{"payload": "!!", "signatures": [{"key_id": "x", "signature": "AA=="}]}',
    b'{"payload": "e30=", "signatures": [{"key_id": 1, "signature": "' + b"A" * 88 + b'"}]}',
    b"[" * 10_000, b"\xff\xfe", b" " * (MAX_STATEMENT_BYTES + 1),
], ids=["empty", "null", "list", "no-keys", "no-signatures", "bad-base64", "bad-key-id",
        "deep-nesting", "not-utf8", "oversized"])
def test_malformed_statements_are_integrity_errors(statement: bytes, a: Ed25519PrivateKey,
                                                   bundle_now: datetime) -> None:
    with pytest.raises(ModelIntegrityError, match="malformed"):
        TrustedKeys([a.public_key()]).rotate(statement, now=bundle_now)


@pytest.mark.parametrize("field", ["counter", "old_key_id", "new_public_key", "expires_at", "type"])
def test_a_signed_but_invalid_payload_is_an_integrity_error(field: str, a: Ed25519PrivateKey,
                                                            b: Ed25519PrivateKey,
                                                            bundle_now: datetime) -> None:
    claim = payload_of(rotation(a, b, bundle_now))
    claim[field] = {"counter": 0, "old_key_id": "ZZ", "new_public_key": "00",
                    "expires_at": claim["created_at"], "type": "other"}[field]
    with pytest.raises(ModelIntegrityError, match="signed but invalid"):
        TrustedKeys([a.public_key()]).rotate(forged(claim, (a, ROTATION_CONTEXT)), now=bundle_now)


def test_after_rotation_bundles_by_the_old_key_are_refused_and_by_the_new_key_accepted(
        bundle_files: Mapping[str, bytes], signing_key: Ed25519PrivateKey,
        new_signing_key: Ed25519PrivateKey, rotation_statement: bytes,
        repository: BundleRepository, bundle_now: datetime) -> None:
    before = TrustedKeys([signing_key.public_key()])
    assert verify_bundle(bundle_source(bundle_files), before, now=bundle_now).key_id == kid(signing_key)
    with pytest.raises(UntrustedKeyError):
        verify_bundle(bundle_source(repository.release(2)), before, now=bundle_now)
    after = before.rotate(rotation_statement, now=bundle_now)
    with pytest.raises(UntrustedKeyError, match="revoked"):
        verify_bundle(bundle_source(bundle_files), after, now=bundle_now)
    assert verify_bundle(bundle_source(repository.release(2)), after,
                         now=bundle_now).key_id == kid(new_signing_key)


# ------------------------------------------------------------ persisted trust


def test_trust_record_round_trips_and_corruption_is_reported(
        a: Ed25519PrivateKey, b: Ed25519PrivateKey, c: Ed25519PrivateKey,
        bundle_now: datetime) -> None:
    rotated = TrustedKeys([a.public_key(), c.public_key()]).rotate(rotation(a, b, bundle_now),
                                                                   now=bundle_now)
    loaded = load_trust([], dump_trust(rotated))
    assert (loaded.ids, loaded.revoked, loaded.rotation) == (rotated.ids, rotated.revoked, 1)
    assert load_trust([public_pem(a)], dump_trust(rotated)).ids == rotated.ids  # A stays revoked
    record = json.loads(dump_trust(rotated))
    for damaged in (b"", b"{}", b"[1]", dump_trust(rotated)[:-2],
                    canonical_json({**record, "revoked": "abc"}),
                    canonical_json({**record, "rotation": True}),
                    canonical_json({**record, "keys": {}}),
                    canonical_json({**record, "keys": {"x": "00"}})):
        with pytest.raises(StoreCorruptError, match="trusted-keys record"):
            load_trust([public_pem(a)], damaged)


def test_client_rotation_persists_across_a_restart(
        device: Device, bundle_files: Mapping[str, bytes], repository: BundleRepository,
        new_signing_key: Ed25519PrivateKey, signing_key: Ed25519PrivateKey) -> None:
    # The template already rotated; the app still ships only the original key.
    with device.open(repository.release(3)) as client:
        assert client.runtime._trusted.ids == (kid(new_signing_key),)
    for app_keys in ([public_pem(signing_key)], [public_pem(signing_key),
                                                  public_pem(new_signing_key)], []):
        with pytest.raises(UntrustedKeyError):
            device.open(bundle_files, app_keys=app_keys)  # v1 signed by the revoked key
        with device.open(repository.release(3), app_keys=app_keys) as client:
            assert client.runtime.version == 3
            assert client.runtime._trusted.ids == (kid(new_signing_key),)
            assert client.runtime._trusted.revoked == {kid(signing_key)}


def test_client_rotate_key_then_update_then_restart(
        tmp_path: Path, bundle_files: Mapping[str, bytes], public_key: bytes,
        rotation_statement: bytes, repository: BundleRepository, signing_key: Ed25519PrivateKey,
        new_signing_key: Ed25519PrivateKey, bundle_now: datetime) -> None:
    device = Device(tmp_path, bytes(32), [public_key], bundle_now.timestamp())
    with device.open(dict(bundle_files)) as client:
        with pytest.raises(UntrustedKeyError):
            client.update(repository.release(2))  # the new key is not trusted yet
        assert device_record(client) is None
        assert client.rotate_key(rotation_statement) == (kid(new_signing_key),)
        assert client.runtime.version == 1  # the active bundle stays active
        with pytest.raises(UntrustedKeyError, match="revoked"):
            client.update(repository.release(2, key=signing_key))
        assert client.update(repository.release(2)) == 2
        with pytest.raises(RollbackError, match="not newer"):
            client.rotate_key(rotation_statement)  # a replay changes nothing
    version, keys_record = device.persisted()
    assert version == b"2" and keys_record is not None
    assert load_trust([], keys_record).ids == (kid(new_signing_key),)
    with device.open(repository.release(2)) as client:
        assert client.runtime.version == 2


def test_a_refused_rotation_persists_nothing(device: Device, repository: BundleRepository,
                                            signing_key: Ed25519PrivateKey,
                                            other_signing_key: Ed25519PrivateKey,
                                            bundle_now: datetime) -> None:
    before = device.persisted()
    with device.open(repository.release(3)) as client:
        for statement, error in ((rotation(other_signing_key, signing_key, bundle_now, 5),
                                  UntrustedKeyError), (b"garbage", ModelIntegrityError)):
            with pytest.raises(error):
                client.rotate_key(statement)
    assert device.persisted() == before


def device_record(client: Any) -> bytes | None:
    store: EncryptedStore = client._store
    return store.get(EncryptedStore.GLOBAL, "trusted_keys")
