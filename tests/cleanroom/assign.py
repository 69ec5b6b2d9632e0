"""Assignment (CONFORMANCE.md section 4) and pseudonyms (section 5)."""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from typing import Any

import numpy as np


def model_space(assigner: dict[str, Any], x: list[float]) -> np.ndarray[Any, Any]:
    v = np.minimum(np.maximum(np.asarray(x, dtype=np.float64), assigner["lower"]), assigner["upper"])
    return np.where(assigner["log1p"], np.log1p(v), v)


def assign(manifest: dict[str, Any], x: list[float]) -> tuple[int, str, float, list[float]]:
    """(index, persona id, confidence, distances) in float64."""
    a = manifest["assigner"]
    z = (model_space(a, x) - np.asarray(a["center"])) * np.asarray(a["scale"])
    d = np.sqrt(((z[None, :] - np.asarray(a["centroids"])) ** 2).sum(axis=1))
    order = np.argsort(d, kind="stable")
    index = int(order[0])
    confidence = 1.0 - d[order[0]] / max(d[order[1]], 1e-12)
    return index, manifest["personas"][index]["id"], float(confidence), d.tolist()


def _enc(*fields: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in fields)


def _hmac(k: bytes, m: bytes) -> bytes:
    return hmac.new(k, m, hashlib.sha256).digest()


def pseudonym(secret: bytes, raw_id: str, domain: str, at: float, period_s: int) -> tuple[str, str, int]:
    """(value, key id, epoch)."""
    label = b"edgepersona/pseudonym/v1"
    key_id = _hmac(secret, _enc(label, b"key-id", struct.pack(">Q", period_s)))[:8].hex()
    epoch = math.floor(at / period_s)
    k = _hmac(secret, _enc(label, b"derive", domain.encode("ascii"), struct.pack(">Q", period_s),
                           struct.pack(">q", epoch)))
    value = _hmac(k, _enc(label, b"id", domain.encode("ascii"), raw_id.encode("utf-8"))).hex()
    return value, key_id, epoch
