"""Conformance cases for trust: bundle verification and key rotation.

Each builder returns JSON-ready cases: the input a port is given and the
outcome the Python SDK produces (``"ok"`` with what it decoded, or the name of
the error class of ``edgepersona.sdk.errors``). The kit generator
(:mod:`edgepersona.trainer.release.conformance`) writes them into
``models/vectors.json``; ``models/CONFORMANCE.md`` explains every field.

Everything here is deterministic (Ed25519 signatures, stored zip entries with
fixed times), so regenerating an unchanged kit changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import stat
import warnings
import zipfile
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import PersonaError, PersonaRuntime
from edgepersona.sdk.protocol import (
    MANIFEST_CONTEXT,
    ROTATION_CONTEXT,
    FileEntry,
    Manifest,
    TrustedKeys,
    build_rotation_statement,
    canonical_json,
    key_id,
    sign,
)

__all__ = [
    "canonical_zip",
    "outcome_of",
    "raw_public_hex",
    "rotation_cases",
    "verification_cases",
]

Files = Mapping[str, bytes]
ZIP_TIME = (2026, 1, 1, 0, 0, 0)


def outcome_of(action: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """Run one SDK call: ``("ok", result)`` or ``(error class name, None)``.

    Args:
        action: the call.
        *args: its positional arguments.
        **kwargs: its keyword arguments.

    Returns:
        The outcome and the result (None on an error).
    """
    try:
        return "ok", action(*args, **kwargs)
    except PersonaError as exc:
        return type(exc).__name__, None


def raw_public_hex(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte Ed25519 public key as hex (how the kit lists trusted keys)."""
    return key.public_key().public_bytes_raw().hex()


def canonical_zip(entries: list[tuple[str, bytes]], **attributes: int | bytes) -> bytes:
    """A zip of the entries in order, stored, with fixed times: byte-identical on every run.

    Args:
        entries: (name, content) pairs; duplicates are written as given.
        **attributes: ZipInfo attributes set on the last entry (the odd one).

    Returns:
        The archive bytes.
    """
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as archive:
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are the point of some cases
        for position, (name, data) in enumerate(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.create_system, info.external_attr = 3, (stat.S_IFREG | 0o644) << 16
            if position == len(entries) - 1:
                for key, value in attributes.items():
                    setattr(info, key, value)
            archive.writestr(info, data)
    return out.getvalue()


def _with_flags(archive: bytes, name: bytes, bits: int) -> bytes:
    """Set general-purpose flag bits on one entry (zipfile resets them when writing)."""
    data = bytearray(archive)
    for magic, flags_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = data.find(magic)
        while start >= 0:
            if data[start + name_at:start + name_at + len(name)] == name:
                data[start + flags_at] |= bits
            start = data.find(magic, start + 1)
    return bytes(data)


def _zip(files: Files) -> bytes:
    return canonical_zip(sorted(files.items()))


def _fields(files: Files) -> dict[str, Any]:
    fields: dict[str, Any] = json.loads(files["manifest.json"])
    fields.pop("files")
    return fields


def _payload(files: Files) -> dict[str, bytes]:
    return {n: d for n, d in files.items() if n not in ("manifest.json", "signature")}


def _resigned(files: Files, key: Ed25519PrivateKey, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The bundle with an edited manifest, validated, made canonical and signed again."""
    fields = _fields(files)
    edit(fields)
    payload = _payload(files)
    fields["files"] = {name: FileEntry(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
                       for name, data in payload.items()}
    raw = canonical_json(Manifest.model_validate(fields).model_dump(mode="json"))
    return _zip({**payload, "manifest.json": raw,
                 "signature": sign(key, MANIFEST_CONTEXT, raw).to_bytes()})


def _unvalidated(files: Files, key: Ed25519PrivateKey) -> bytes:
    """A correctly signed manifest that is not a valid manifest (version 0)."""
    fields = json.loads(files["manifest.json"])
    fields["version"] = 0
    raw = canonical_json(fields)
    return _zip({**files, "manifest.json": raw, "signature": sign(key, MANIFEST_CONTEXT, raw).to_bytes()})


def _flip(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


def _extra_feature(fields: dict[str, Any]) -> None:
    """A signed manifest that declares one more feature than the graph takes."""
    fields["spec"]["features"].append({"name": "extra", "event": "x", "aggregate": "count",
                                       "bounds": [0, 1]})
    assigner = fields["assigner"]
    for name, value in (("lower", 0.0), ("upper", 1.0), ("log1p", False), ("center", 0.0),
                        ("scale", 1.0)):
        assigner[name] = [*assigner[name], value]
    assigner["centroids"] = [[*c, 0.0] for c in assigner["centroids"]]


def _bundles(files: Files, key: Ed25519PrivateKey, stranger: Ed25519PrivateKey) -> dict[str, bytes]:
    """Every verification case's archive, by case name."""
    honest = sorted(files.items())
    manifest = files["manifest.json"]
    bad_signature = json.dumps({**json.loads(files["signature"]), "algorithm": "rsa"}).encode()
    return {
        "good": _zip(files),
        "untrusted-key": _resigned(files, stranger, lambda f: None),
        "signature-does-not-verify": _zip({**files, "manifest.json": _flip(manifest, len(manifest) // 2)}),
        "signature-file-malformed": _zip({**files, "signature": bad_signature}),
        "manifest-signed-but-invalid": _unvalidated(files, key),
        "file-missing": _zip({n: d for n, d in files.items() if n != "cards.md"}),
        "file-not-in-manifest": _zip({**files, "notes.txt": b"hello"}),
        "file-larger-than-declared": _zip({**files, "model.onnx": files["model.onnx"] + b"\0"}),
        "file-digest-differs": _zip({**files, "cards.md": _flip(files["cards.md"], 0)}),
        "zip-duplicate-entry-unsigned-first": canonical_zip(
            [(n, d) for n, d in honest if n != "model.onnx"]
            + [("model.onnx", b"unsigned graph"), ("model.onnx", files["model.onnx"])]),
        "zip-entry-with-path": canonical_zip([*honest, ("sub/model.onnx", b"x")]),
        "zip-directory-entry": canonical_zip([*honest, ("cards/", b"")]),
        "zip-symlink-entry": canonical_zip(
            [(n, d) for n, d in honest if n != "cards.md"] + [("cards.md", files["cards.md"])],
            external_attr=(stat.S_IFLNK | 0o777) << 16),
        "zip-encrypted-entry": _with_flags(_zip(files), b"cards.md", 0x0001),
        "zip-bytes-before-archive": b"MZ" + bytes(30) + _zip(files),
        "not-a-zip": b"PK\x03\x04 this is not an archive",
        "graph-does-not-match-manifest": _resigned(files, key, _extra_feature),
    }


def verification_cases(files: Files, key: Ed25519PrivateKey, stranger: Ed25519PrivateKey,
                        now: datetime) -> list[dict[str, Any]]:
    """A good bundle and one archive per failure class, with the SDK's outcome.

    Args:
        files: the reference bundle's files.
        key: the signing key devices trust.
        stranger: a key no device trusts.
        now: the verification time of the kit.

    Returns:
        One case per archive and clock (expiry and rollback reuse the good archive).
    """
    version = json.loads(files["manifest.json"])["version"]
    expires = datetime.fromisoformat(json.loads(files["manifest.json"])["expires_at"])
    runs = [(name, data, now, 0) for name, data in _bundles(files, key, stranger).items()]
    good, archives = runs[0][1], dict((name, data) for name, data, _, _ in runs)
    runs += [("good-at-trusted-version", good, now, version),
             ("expired", good, expires, 0),
             ("rollback", good, now, version + 1),
             # two faults: the files are checked before freshness (section 1.2)
             ("expired-and-file-digest-differs", archives["file-digest-differs"], expires, 0),
             ("rollback-and-file-missing", archives["file-missing"], now, version + 1)]
    cases = []
    for name, data, at, min_version in runs:
        outcome, runtime = outcome_of(PersonaRuntime.open, data, trusted_keys=[key.public_key()],
                                      now=at, min_version=min_version, backend="onnxruntime")
        case: dict[str, Any] = {
            "name": name, "zip_base64": base64.b64encode(data).decode("ascii"), "now": at.isoformat(),
            "min_version": min_version, "trusted_keys": [raw_public_hex(key)], "outcome": outcome}
        if runtime is not None:
            case |= {"model_id": runtime.manifest.model_id, "version": runtime.version}
        cases.append(case)
    return cases


def _trust(keys: list[Ed25519PrivateKey], revoked: list[str], rotation: int) -> dict[str, Any]:
    return {"keys": [raw_public_hex(k) for k in keys], "revoked": revoked, "rotation": rotation}


def _statement(old: Ed25519PrivateKey, new: Ed25519PrivateKey, counter: int, now: datetime, *,
               signers: tuple[Ed25519PrivateKey, ...] | None = None,
               edit: Callable[[dict[str, Any]], None] | None = None,
               edit_after_signing: bool = False) -> bytes:
    """A rotation statement, its payload edited before (or after) ``signers`` sign it."""
    raw = build_rotation_statement(old, new, counter=counter, now=now, valid_for=timedelta(days=30))
    body = json.loads(raw)
    payload = base64.b64decode(body["payload"])
    if edit is not None and not edit_after_signing:
        fields = json.loads(payload)
        edit(fields)
        payload = canonical_json(fields)
    if signers is not None or edit is not None:
        body["signatures"] = [{"key_id": key_id(k.public_key()), "signature": base64.b64encode(
            k.sign(ROTATION_CONTEXT + payload)).decode("ascii")} for k in signers or (old, new)]
    if edit is not None and edit_after_signing:
        fields = json.loads(payload)
        edit(fields)
        payload = canonical_json(fields)
    body["payload"] = base64.b64encode(payload).decode("ascii")
    return json.dumps(body, indent=2, sort_keys=True).encode("ascii") + b"\n"


def rotation_cases(old: Ed25519PrivateKey, new: Ed25519PrivateKey, stranger: Ed25519PrivateKey,
                   now: datetime) -> list[dict[str, Any]]:
    """Key rotation statements applied to a trusted set, with the SDK's outcome.

    Args:
        old: the key devices trust (retired by the statements).
        new: the key taking over.
        stranger: a key nobody trusts.
        now: when the statements are written.

    Returns:
        One case per statement and trusted set.
    """
    later = now + timedelta(days=1)
    base = _trust([old], [], 0)
    stranger_id = key_id(stranger.public_key())
    runs = [
        ("rotate", base, _statement(old, new, 1, now), later),
        ("rotate-signed-by-old-key-only", base, _statement(old, new, 1, now, signers=(old,)), later),
        ("signed-by-new-key-only", base, _statement(old, new, 1, now, signers=(new,)), later),
        ("counter-not-newer", _trust([old], [], 5), _statement(old, new, 1, now), later),
        ("replayed-after-rotation", _trust([new], [key_id(old.public_key())], 1),
         _statement(old, new, 1, now), later),
        ("signed-by-revoked-key-only", _trust([new], [key_id(old.public_key())], 1),
         _statement(old, stranger, 2, now, signers=(old,)), later),
        ("expired", base, _statement(old, new, 1, now), now + timedelta(days=30)),
        ("payload-changed-after-signing", base,
         _statement(old, new, 1, now, edit=lambda f: f.update(counter=2), edit_after_signing=True),
         later),
        ("malformed", base, b'{"payload": "not base64!", "signatures": []}', later),
        ("unrelated-co-signer", base, _statement(old, new, 1, now, signers=(old, new, stranger)),
         later),
        ("new-key-was-revoked", _trust([old], [stranger_id], 0), _statement(old, stranger, 1, now),
         later),
        ("retires-another-key", base,
         _statement(old, new, 1, now, signers=(old,), edit=lambda f: f.update(old_key_id=stranger_id)),
         later),
    ]
    cases = []
    for name, trust, statement, at in runs:
        keys = TrustedKeys(trust["keys"], revoked=trust["revoked"], rotation=trust["rotation"])
        outcome, rotated = outcome_of(keys.rotate, statement, now=at)
        case: dict[str, Any] = {"name": name, "trusted": trust, "statement": statement.decode("ascii"),
                                "now": at.isoformat(), "outcome": outcome}
        if rotated is not None:
            case["result"] = {"key_ids": list(rotated.ids), "revoked": sorted(rotated.revoked),
                              "rotation": rotated.rotation}
        cases.append(case)
    return cases
