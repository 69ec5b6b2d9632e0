"""Conformance cases for the wire: sync envelopes, day buckets and batch framing.

Each builder returns JSON-ready cases: the bytes a port is given and what the
Python SDK makes of them (``"ok"`` with the decoded value, or the name of the
error class of ``edgepersona.sdk.errors``). HPKE sealing is randomised (a fresh
ephemeral key per envelope), so :func:`envelope_cases` reuses the envelopes of
the committed kit when they still decrypt to the same plaintext: regenerating
an unchanged kit changes nothing.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping
from typing import Any

from edgepersona.sdk.protocol import (
    Contribution,
    Opener,
    Sealer,
    SealSuite,
    day_bucket,
    decode_batch,
    encode_batch,
    encode_payload,
    hpke as hpke_primitives,
)
from edgepersona.trainer.release.conformance_cases import outcome_of

__all__ = [
    "APP_ID",
    "collector_key_file",
    "day_bucket_cases",
    "envelope_cases",
    "framing_cases",
]

APP_ID = "com.example.shop"


def _flip(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


def _kem(suite: SealSuite) -> hpke_primitives.Kem:
    return hpke_primitives.Kem.X25519 if suite is SealSuite.X25519 else \
        hpke_primitives.Kem.MLKEM768_X25519


def collector_key_file(kind: str, suite: SealSuite, raw: bytes) -> bytes:
    """A collector key file from raw key bytes (the armour of ``models/CONFORMANCE.md``).

    Args:
        kind: ``PRIVATE`` or ``PUBLIC``.
        suite: the suite the key is for.
        raw: the raw key bytes.

    Returns:
        The key file.
    """
    body = base64.b64encode(bytes([1, suite.value]) + raw).decode("ascii")
    label = f"EDGEPERSONA COLLECTOR {kind} KEY"
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def _contribution_json(c: Contribution) -> dict[str, Any]:
    return {"pseudonym": c.pseudonym, "pseudonym_epoch": c.pseudonym_epoch, "sequence": c.sequence,
            "day_bucket": c.day_bucket, "model_version": c.model_version,
            "persona_index": c.persona_index, "features": list(c.features)}


def _header(opener: Opener, model_version: int) -> bytes:
    return (b"EP" + bytes([1, opener.suite.value]) + bytes.fromhex(opener.key_id)
            + struct.pack(">I", model_version))


def _info(app_id: str, header: bytes) -> bytes:
    app = app_id.encode()
    return b"edgepersona/sync-envelope\x00" + bytes([len(app)]) + app + header


def _malformed_payloads(c: Contribution) -> dict[str, bytes]:
    """Authenticated payloads the opener must still refuse (strict decoding)."""
    good = encode_payload(c)
    short = struct.pack(">QIIIHHB", c.sequence, c.pseudonym_epoch, c.day_bucket, c.model_version,
                        c.persona_index, len(c.features), 7) + bytes(7) + good[25 + 32:]
    return {
        "malformed-model-version-differs-from-header": good[:16] + struct.pack(">I", c.model_version + 1)
        + good[20:],
        "malformed-trailing-byte": good + b"\0",
        "malformed-nan-feature": good[:-8] + struct.pack(">d", math.nan),
        "malformed-pseudonym-of-7-bytes": short,
        "malformed-no-feature": good[:22] + struct.pack(">H", 0) + good[24:25 + 32],
    }


def envelope_cases(keys: Mapping[str, tuple[SealSuite, bytes]], contributions: list[Contribution],
                   previous: Mapping[str, str]) -> list[dict[str, Any]]:
    """Sealed envelopes (good, tampered, authenticated-but-malformed) and what opening gives.

    Args:
        keys: collector (suite, raw private key) by suite name (``x25519``, ``mlkem768_x25519``).
        contributions: the contributions to seal (the first one goes to every suite).
        previous: envelope hex of the committed kit by case name, reused when it
            still decrypts to the same plaintext.

    Returns:
        One case per envelope.
    """
    cases, good = [], b""
    for suite_name, (suite, raw) in keys.items():
        opener = Opener(collector_key_file("PRIVATE", suite, raw))
        batch = contributions if suite is SealSuite.X25519 else contributions[:1]
        for index, c in enumerate(batch):
            plain = {f"{suite_name}-{index}": encode_payload(c)}
            if suite is SealSuite.X25519 and index == 0:
                plain |= _malformed_payloads(c)
            for name, payload in plain.items():
                envelope = _seal(opener, suite, raw, c, payload, previous.get(name))
                cases.append(_open_case(name, suite_name, opener, envelope, payload, [c.model_version]))
                good = good or envelope
        if suite is SealSuite.X25519:
            for variant, envelope, accepted, app in _tampered(good, contributions[0].model_version):
                cases.append(_open_case(variant, suite_name, opener, envelope, None, accepted, app))
    return cases


def _seal(opener: Opener, suite: SealSuite, raw_private: bytes, c: Contribution, payload: bytes,
          previous_hex: str | None) -> bytes:
    """Reuse the committed envelope that holds ``payload``, or seal it anew.

    Well-formed payloads go through the SDK's :class:`Sealer`; malformed ones
    (which it refuses to build) through the raw HPKE layer with the same header.
    """
    header = _header(opener, c.model_version)
    kem = _kem(suite)
    if previous_hex is not None:
        old = bytes.fromhex(previous_hex)
        private = hpke_primitives.load_private_key(kem, raw_private)
        try:
            if old[:12] == header and hpke_primitives.open_base(
                    kem, private, _info(APP_ID, header), old[12:]) == payload:
                return old
        except hpke_primitives.OpenFailedError:
            pass
    if payload == encode_payload(c):
        return Sealer(opener.public_key, app_id=APP_ID).seal(c)
    public = hpke_primitives.load_public_key(kem, hpke_primitives.public_key_bytes(kem, raw_private))
    return header + hpke_primitives.seal_base(kem, public, _info(APP_ID, header), payload)


def _tampered(good: bytes, version: int) -> list[tuple[str, bytes, list[int] | None, str]]:
    """What an attacker or a bad network makes of one good envelope."""
    return [
        ("other-app-id", good, [version], "com.example.other"),
        ("model-version-not-accepted", good, [version + 1], APP_ID),
        ("header-key-id-changed", _flip(good, 4), None, APP_ID),
        ("header-model-version-changed", _flip(good, 11), None, APP_ID),
        ("encapsulated-key-changed", _flip(good, 12), None, APP_ID),
        ("ciphertext-changed", _flip(good, len(good) - 20), None, APP_ID),
        ("tag-changed", _flip(good, len(good) - 1), None, APP_ID),
        ("truncated", good[:-1], None, APP_ID),
        ("extended", good + b"\0", None, APP_ID),
    ]


def _open_case(name: str, suite: str, opener: Opener, envelope: bytes, payload: bytes | None,
               accepted: list[int] | None, app_id: str = APP_ID) -> dict[str, Any]:
    outcome, contribution = outcome_of(opener.open, envelope, app_id=app_id, model_versions=accepted)
    case: dict[str, Any] = {"name": name, "suite": suite, "app_id": app_id,
                            "model_versions": accepted, "envelope_hex": envelope.hex(), "outcome": outcome}
    if contribution is not None:
        case |= {"contribution": _contribution_json(contribution), "plaintext_hex": (payload or b"").hex()}
    return case


def day_bucket_cases() -> list[dict[str, Any]]:
    """Times and their day buckets (or InputError).

    Returns:
        The cases.
    """
    cases = []
    for at in (0.0, 86_399.999, 86_400.0, 1_767_225_600.5, 4_294_967_295 * 86_400 + 86_399.0,
               4_294_967_296 * 86_400.0, -1.0):
        outcome, day = outcome_of(day_bucket, at)
        cases.append({"at": at, "outcome": outcome, **({"day": day} if day is not None else {})})
    return cases


def framing_cases(envelopes: list[bytes]) -> list[dict[str, Any]]:
    """Batch bodies: the encoding of envelopes, and bodies a collector must refuse.

    Args:
        envelopes: a few sealed envelopes.

    Returns:
        One case per body: ``envelopes_hex`` it splits into, or ``InputError``.
    """
    body = encode_batch(envelopes)
    one = encode_batch(envelopes[:1])
    bodies = {
        "batch": body,
        "batch-of-one": one,
        "truncated-header": body[:5],
        "other-version": body[:3] + b"\x02" + body[4:],
        "no-envelope": b"EPB\x01\x00\x00",
        "empty-slot": b"EPB\x01\x00\x01\x00\x00\x00\x00",
        "slot-longer-than-body": one[:6] + struct.pack(">I", len(envelopes[0]) + 1) + one[10:],
        "slot-over-65535": b"EPB\x01\x00\x01" + struct.pack(">I", 65_536) + bytes(16),
        "fewer-slots-than-declared": body[:4] + struct.pack(">H", len(envelopes) + 1) + body[6:],
        "trailing-byte": body + b"\0",
    }
    cases = []
    for name, data in bodies.items():
        outcome, parts = outcome_of(decode_batch, data)
        case: dict[str, Any] = {"name": name, "body_hex": data.hex(), "outcome": outcome}
        if parts is not None:
            case["envelopes_hex"] = [p.hex() for p in parts]
        cases.append(case)
    return cases
