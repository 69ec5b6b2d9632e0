"""Signing-key rotation (CONFORMANCE.md section 2)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .bundle import key_id
from .errors import BundleExpiredError, ModelIntegrityError, RollbackError, UntrustedKeyError

CONTEXT = b"edgepersona/key-rotation/v1\x00"
MEMBERS = {"type", "schema_version", "counter", "old_key_id", "new_public_key", "created_at",
           "expires_at"}


@dataclass(frozen=True)
class Trust:
    keys: dict[str, bytes]  # key id -> raw public key
    revoked: frozenset[str]
    rotation: int


def _verify(raw_public: bytes, signature: bytes, payload: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(raw_public).verify(signature, CONTEXT + payload)
    except InvalidSignature:
        raise ModelIntegrityError("signature") from None


def _envelope(statement: bytes) -> tuple[bytes, dict[str, bytes]]:
    bad = ModelIntegrityError("malformed")
    if len(statement) > 16_384:
        raise bad
    try:
        body = json.loads(statement)
        if not isinstance(body, dict) or set(body) != {"payload", "signatures"}:
            raise bad
        entries = body["signatures"]
        if not isinstance(entries, list) or not 1 <= len(entries) <= 4:
            raise bad
        payload = base64.b64decode(body["payload"], validate=True)
        signatures: dict[str, bytes] = {}
        for entry in entries:
            if not isinstance(entry, dict) or set(entry) != {"key_id", "signature"}:
                raise bad
            kid, sig = entry["key_id"], base64.b64decode(entry["signature"], validate=True)
            if not isinstance(kid, str) or len(sig) != 64 or kid in signatures:
                raise bad
            signatures[kid] = sig
    except (ValueError, TypeError, binascii.Error):
        raise bad from None
    return payload, signatures


def _payload(payload: bytes) -> dict[str, object]:
    bad = ModelIntegrityError("payload")
    try:
        p = json.loads(payload)
        if not isinstance(p, dict) or not set(p) <= MEMBERS:
            raise bad
        ok = (p.get("type", "edgepersona/key-rotation") == "edgepersona/key-rotation"
              and p.get("schema_version", 1) == 1
              and type(p["counter"]) is int and 1 <= p["counter"] <= 2**31 - 1
              and re.fullmatch(r"[0-9a-f]{16}", p["old_key_id"]) is not None
              and re.fullmatch(r"[0-9a-f]{64}", p["new_public_key"]) is not None)
        created, expires = datetime.fromisoformat(p["created_at"]), datetime.fromisoformat(p["expires_at"])
        if not ok or created.tzinfo is None or expires.tzinfo is None or expires <= created:
            raise bad
    except (ValueError, TypeError, KeyError):
        raise bad from None
    return p


def rotate(trust: Trust, statement: bytes, now: datetime) -> Trust:
    payload, signatures = _envelope(statement)
    signers = sorted(k for k in signatures if k in trust.keys)
    if not signers:
        raise UntrustedKeyError("no trusted signer")
    for kid in signers:
        _verify(trust.keys[kid], signatures[kid], payload)
    p = _payload(payload)
    if p["counter"] <= trust.rotation:  # type: ignore[operator]
        raise RollbackError("counter")
    old = str(p["old_key_id"])
    if old not in signers:
        raise UntrustedKeyError("not signed by the retired key")
    if datetime.fromisoformat(str(p["expires_at"])) <= now:
        raise BundleExpiredError("expired")
    new_raw = bytes.fromhex(str(p["new_public_key"]))
    try:
        Ed25519PublicKey.from_public_bytes(new_raw)
    except ValueError:
        raise ModelIntegrityError("new key") from None
    new_id = key_id(new_raw)
    if new_id == old or new_id in trust.revoked or set(signatures) - {old, new_id}:
        raise ModelIntegrityError("new key")
    if new_id in signatures and new_id not in trust.keys:
        _verify(new_raw, signatures[new_id], payload)
    keys = {k: v for k, v in trust.keys.items() if k != old} | {new_id: new_raw}
    return Trust(keys, trust.revoked | {old}, int(p["counter"]))  # type: ignore[call-overload]
