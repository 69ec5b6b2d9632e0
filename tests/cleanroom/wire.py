"""The sync envelope and day buckets (CONFORMANCE.md section 6), batch framing (section 7)."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from .errors import InputError, InvalidEnvelope

SUITES = {1: (hpke.KEM.X25519, 32), 2: (hpke.KEM.MLKEM768_X25519, 1120)}


@dataclass(frozen=True)
class Collector:
    suite: int
    private: Any
    key_id: bytes


def load_private_key_file(text: str) -> Collector:
    lines = text.strip().splitlines()
    assert lines[0] == "-----BEGIN EDGEPERSONA COLLECTOR PRIVATE KEY-----"
    assert lines[-1] == "-----END EDGEPERSONA COLLECTOR PRIVATE KEY-----"
    body = base64.b64decode("".join(lines[1:-1]), validate=True)
    assert body[0] == 1
    suite, raw = body[1], body[2:]
    scalar = x25519.X25519PrivateKey.from_private_bytes(raw[-32:])
    point = scalar.public_key().public_bytes_raw()
    if suite == 1:
        private: Any = scalar
        public = point
    else:
        ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:64])
        private = hpke.MLKEM768X25519PrivateKey(ml, scalar)
        public = ml.public_key().public_bytes_raw() + point
    return Collector(suite, private, hashlib.sha256(bytes([suite]) + public).digest()[:4])


def open_envelope(collector: Collector, envelope: bytes, app_id: str,
                  model_versions: list[int] | None) -> tuple[dict[str, Any], bytes]:
    """(contribution, plaintext), or InvalidEnvelope."""
    kem, enc = SUITES[collector.suite]
    if not 12 + enc + 16 + 25 <= len(envelope) <= 65_536:
        raise InvalidEnvelope()
    header = envelope[:12]
    (version,) = struct.unpack(">I", header[8:])
    if header[:8] != b"EP\x01" + bytes([collector.suite]) + collector.key_id or (
            model_versions is not None and version not in model_versions):
        raise InvalidEnvelope()
    app = app_id.encode("utf-8")
    info = b"edgepersona/sync-envelope\x00" + bytes([len(app)]) + app + header
    suite = hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
    try:
        plain = suite.decrypt(envelope[12:], collector.private, info=info)
    except Exception:
        raise InvalidEnvelope() from None
    if len(plain) < 25:
        raise InvalidEnvelope()
    sequence, epoch, day, model, persona, n, length = struct.unpack_from(">QIIIHHB", plain)
    if (model != version or not 1 <= n <= 1024 or not 8 <= length <= 32
            or len(plain) != 25 + length + 8 * n):
        raise InvalidEnvelope()
    features = struct.unpack_from(f">{n}d", plain, 25 + length)
    if not all(math.isfinite(f) for f in features):
        raise InvalidEnvelope()
    return ({"pseudonym": plain[25:25 + length].hex(), "pseudonym_epoch": epoch, "sequence": sequence,
             "day_bucket": day, "model_version": model, "persona_index": persona,
             "features": list(features)}, plain)


def day_bucket(at: float) -> int:
    if not math.isfinite(at) or at < 0 or math.floor(at / 86_400) > 2**32 - 1:
        raise InputError("day bucket")
    return math.floor(at / 86_400)


def decode_batch(body: bytes) -> list[bytes]:
    if len(body) < 6 or body[:4] != b"EPB\x01":
        raise InputError("batch header")
    (n,) = struct.unpack_from(">H", body, 4)
    if n == 0:
        raise InputError("no envelope")
    out, at = [], 6
    for _ in range(n):
        if at + 4 > len(body):
            raise InputError("truncated")
        (length,) = struct.unpack_from(">I", body, at)
        at += 4
        if not 1 <= length <= 65_535 or at + length > len(body):
            raise InputError("slot length")
        out.append(body[at:at + length])
        at += length
    if at != len(body):
        raise InputError("trailing bytes")
    return out


def encode_batch(envelopes: list[bytes]) -> bytes:
    return b"EPB\x01" + struct.pack(">H", len(envelopes)) + b"".join(
        struct.pack(">I", len(e)) + e for e in envelopes)
