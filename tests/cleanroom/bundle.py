"""Bundle verification (CONFORMANCE.md section 1): the archive rule, the order of checks, the graph."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import onnxruntime
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import (
    BundleExpiredError,
    ModelIntegrityError,
    RollbackError,
    SchemaError,
    UntrustedKeyError,
)

NAME = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HARMLESS_EXTRAS = {0x000A, 0x5455, 0x7875}


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


def _extra_ok(extra: bytes) -> bool:
    at = 0
    while at < len(extra):
        if at + 4 > len(extra):
            return False
        kind, size = struct.unpack_from("<HH", extra, at)
        if kind not in HARMLESS_EXTRAS or at + 4 + size > len(extra):
            return False
        at += 4 + size
    return True


def read_archive(data: bytes) -> Mapping[str, bytes]:
    """Section 1.1: the entries of an archive with one reading only (stored or deflated)."""
    bad = ModelIntegrityError("archive")
    if len(data) < 22 or data[-22:-18] != b"PK\x05\x06":
        raise bad
    disk, cd_disk, on_disk, total, cd_size, cd_offset, comment = struct.unpack("<4H2LH", data[-18:])
    if disk or cd_disk or comment or on_disk != total or cd_offset + cd_size != len(data) - 22:
        raise bad
    entries: list[tuple[int, bytes, int, int, int, int, int]] = []
    at = cd_offset
    for _ in range(total):
        if data[at:at + 4] != b"PK\x01\x02" or at + 46 > cd_offset + cd_size:
            raise bad
        (needed, flags, method, crc, packed, size, n_len, e_len, c_len, attributes, offset) = (
            struct.unpack_from("<6xBxHH4xLLLHHH4xLL", data, at))
        name, extra = data[at + 46:at + 46 + n_len], data[at + 46 + n_len:at + 46 + n_len + e_len]
        at += 46 + n_len + e_len + c_len
        mode_type = (attributes >> 16) & 0o170000
        if (needed > 63 or NAME.fullmatch(name) is None or flags & ~0x0806 or method not in (0, 8)
                or mode_type not in (0, 0o100000) or attributes & 0x18 or not _extra_ok(extra)):
            raise bad
        entries.append((offset, name, flags, method, crc, packed, size))
    if at != cd_offset + cd_size:
        raise bad
    folded = [e[1].decode("ascii").casefold() for e in entries]
    if len(set(folded)) != len(folded):
        raise bad
    files: dict[str, tuple[int, bytes, int, int]] = {}
    end = 0
    for offset, name, flags, method, crc, packed, size in sorted(entries):
        if offset != end or data[offset:offset + 4] != b"PK\x03\x04":
            raise bad
        l_flags, l_method, l_crc, l_packed, l_size, n_len, e_len = struct.unpack_from(
            "<6xHH4xLLLHH", data, offset)
        extra = data[offset + 30 + n_len:offset + 30 + n_len + e_len]
        if ((l_flags, l_method, l_crc, l_packed, l_size) != (flags, method, crc, packed, size)
                or data[offset + 30:offset + 30 + n_len] != name or not _extra_ok(extra)):
            raise bad
        start = offset + 30 + n_len + e_len
        files[name.decode("ascii")] = (method, data[start:start + packed], crc, size)
        end = start + packed
    if end != cd_offset:
        raise bad
    return Archive(files)


class Archive(Mapping[str, bytes]):
    """Entries inflated and CRC-checked only when read (section 1.1, last paragraph)."""

    def __init__(self, entries: dict[str, tuple[int, bytes, int, int]]) -> None:
        self._entries = entries

    def __getitem__(self, name: str) -> bytes:
        method, body, crc, size = self._entries[name]
        try:
            content = body if method == 0 else zlib.decompress(body, -15)
        except zlib.error:
            raise ModelIntegrityError("damaged entry") from None
        if len(content) != size or zlib.crc32(content) != crc:
            raise ModelIntegrityError("damaged entry")
        return content

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class Verified:
    manifest: dict[str, Any]
    files: Mapping[str, bytes]


def verify(files: Mapping[str, bytes], trusted: dict[str, bytes], *, now: datetime,
           min_version: int) -> Verified:
    """Section 1.2: steps 1 to 8 (the graph is step 9, :func:`load_graph`)."""
    signature = files.get("signature")
    if signature is None or len(signature) > 4096:
        raise ModelIntegrityError("signature file")
    try:
        body = json.loads(signature)
        if not isinstance(body, dict) or body.get("algorithm") != "ed25519":
            raise ValueError("algorithm")
        kid, sig = body["key_id"], base64.b64decode(body["signature"], validate=True)
        if not isinstance(kid, str) or len(sig) != 64:
            raise ValueError("shape")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ModelIntegrityError("signature file") from None
    raw = files.get("manifest.json")
    if raw is None or len(raw) > 4 * 1024 * 1024:
        raise ModelIntegrityError("manifest")
    if kid not in trusted:
        raise UntrustedKeyError(kid)
    try:
        Ed25519PublicKey.from_public_bytes(trusted[kid]).verify(sig, b"edgepersona/manifest/v1\x00" + raw)
    except InvalidSignature:
        raise ModelIntegrityError("signature") from None
    manifest = parse_manifest(raw)
    declared = manifest["files"]
    if "model.onnx" not in declared or set(files) != set(declared) | {"manifest.json", "signature"}:
        raise ModelIntegrityError("file set")
    for name, entry in declared.items():
        data = files[name][:entry["size"] + 1]
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ModelIntegrityError(name)
    if datetime.fromisoformat(manifest["expires_at"]) <= now:
        raise BundleExpiredError("expired")
    if manifest["version"] < min_version:
        raise RollbackError("rollback")
    return Verified(manifest, files)


def _require(condition: bool) -> None:
    if not condition:
        raise SchemaError("manifest")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_manifest(raw: bytes) -> dict[str, Any]:
    """Section 1.3, the rules the vectors exercise and the ones a device relies on."""
    try:
        m = json.loads(raw)
    except ValueError:
        raise SchemaError("json") from None
    _require(isinstance(m, dict))
    required = {"model_id", "version", "created_at", "expires_at", "spec", "personas", "assigner",
                "privacy", "metrics", "files"}
    optional = {"schema_version", "lineage", "id_map"}
    _require(required <= set(m) <= required | optional and m.get("schema_version", 1) == 1)
    _require(isinstance(m["model_id"], str)
             and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", m["model_id"]) is not None)
    _require(_is_int(m["version"]) and m["version"] >= 1)
    try:
        created, expires = (datetime.fromisoformat(m[k]) for k in ("created_at", "expires_at"))
    except (TypeError, ValueError):
        raise SchemaError("time") from None
    _require(created.tzinfo is not None and expires.tzinfo is not None and expires > created)
    files = m["files"]
    _require(isinstance(files, dict) and all(
        isinstance(e, dict) and set(e) == {"sha256", "size"} and NAME.fullmatch(n.encode()) is not None
        and re.fullmatch(r"[0-9a-f]{64}", e["sha256"]) is not None and _is_int(e["size"])
        and 0 <= e["size"] <= 64 * 1024 * 1024 for n, e in files.items()))
    a, personas = m["assigner"], m["personas"]
    width = len(m["spec"]["features"])
    _require(all(len(a[k]) == width for k in ("lower", "upper", "log1p", "center", "scale")))
    _require(len(a["centroids"]) >= 2 and all(len(c) == width for c in a["centroids"]))
    _require(len(personas) == len(a["centroids"])
             and [p["index"] for p in personas] == list(range(len(personas))))
    return m


def load_graph(verified: Verified) -> Any:
    """Section 1.2 step 9: refuse external data, load, check the graph's signature."""
    model, manifest = verified.files["model.onnx"], verified.manifest
    if has_external_data(model):
        raise ModelIntegrityError("external data")
    try:
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    except Exception:
        raise ModelIntegrityError("graph") from None
    width, k = len(manifest["spec"]["features"]), len(manifest["personas"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if (len(inputs) != 1 or inputs[0].name != "features" or inputs[0].type != "tensor(float)"
            or len(inputs[0].shape) != 2 or inputs[0].shape[1] != width
            or [o.name for o in outputs] != ["persona", "distances", "confidence"]
            or outputs[1].shape[1] != k):
        raise ModelIntegrityError("graph signature")
    return session


# Protobuf messages that can hold a TensorProto (field number -> message kind), from the
# public onnx.proto schema; in a tensor, field 13 is external_data and 14 data_location.
_CHILDREN = {"model": {7: "graph", 20: "training", 25: "function"},
             "graph": {1: "node", 5: "tensor", 15: "sparse"},
             "training": {1: "graph", 2: "graph"}, "function": {7: "node", 11: "attribute"},
             "node": {5: "attribute"},
             "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse",
                           23: "sparse"},
             "sparse": {1: "tensor", 2: "tensor"}}


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def has_external_data(model: bytes) -> bool:
    """True when any tensor of the graph keeps its data outside it."""
    stack = [("model", 0, len(model))]
    try:
        while stack:
            kind, at, end = stack.pop()
            while at < end:
                tag, at = _varint(model, at)
                field, wire = tag >> 3, tag & 7
                if kind == "tensor" and field == 13:
                    return True
                if wire == 0:
                    value, at = _varint(model, at)
                    if kind == "tensor" and field == 14 and value != 0:
                        return True
                elif wire == 2:
                    size, at = _varint(model, at)
                    child = _CHILDREN.get(kind, {}).get(field)
                    if child:
                        stack.append((child, at, at + size))
                    at += size
                elif wire in (1, 5):
                    at += 8 if wire == 1 else 4
                else:
                    return False
    except IndexError:
        return False
    return False


def run_graph(session: Any, rows: np.ndarray[Any, Any]) -> tuple[Any, Any, Any]:
    index, distances, confidence = session.run(None, {"features": rows.astype(np.float32)})
    return index, distances, confidence
