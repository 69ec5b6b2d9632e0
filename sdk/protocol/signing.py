"""Hazardous layer: raw Ed25519 keys, key ids and detached signatures.

Only the recipes (bundle verification, the trainer's bundle writer, the
privacy ledger) should call this module. Every signature is made over a
context string plus the message, so a signature made for one purpose (a
manifest) can never be replayed as another (a ledger entry).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgepersona.sdk.errors import InputError, ModelIntegrityError

__all__ = [
    "MANIFEST_CONTEXT",
    "SignatureFile",
    "key_id",
    "load_public_key",
    "read_public_keys",
    "sign",
]

MANIFEST_CONTEXT = b"edgepersona/manifest/v1\x00"
_MAX_SIGNATURE_FILE = 4096  # bytes
_MAX_KEY_FILE = 16_384  # bytes; a PEM public key is about 113
_PUBLIC_SUFFIX = ".pub.pem"


def key_id(public: Ed25519PublicKey) -> str:
    """The id of a public key: the first 16 hex digits of SHA-256 of its raw bytes.

    Args:
        public: the public key.

    Returns:
        16 lowercase hex characters.
    """
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(data: bytes | str | Ed25519PublicKey) -> Ed25519PublicKey:
    """Load an Ed25519 public key from PEM, 32 raw bytes or 64 hex characters.

    Args:
        data: the key in one of the accepted forms.

    Returns:
        The public key.

    Raises:
        InputError: the data is not an Ed25519 public key.
    """
    if isinstance(data, Ed25519PublicKey):
        return data
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(raw)
            if not isinstance(key, Ed25519PublicKey):
                raise InputError("the PEM key is not an Ed25519 public key")
            return key
        if len(raw.strip()) == 64:
            raw = bytes.fromhex(raw.strip().decode("ascii"))
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, UnicodeDecodeError):
        raise InputError(
            "expected an Ed25519 public key as PEM, 32 raw bytes or 64 hex characters;"
            " create one with `edgepersona keys generate`") from None


def read_public_keys(path: str | os.PathLike[str]) -> list[Ed25519PublicKey]:
    """Read the public key in a PEM file, or every Ed25519 ``*.pub.pem`` key in a folder.

    A folder written by ``edgepersona keys generate`` works as it is; a collector
    key (not Ed25519) in the same folder is skipped.

    Args:
        path: a key file or a key folder.

    Returns:
        The keys (at least one).

    Raises:
        InputError: the path does not exist, or holds no Ed25519 public key.
    """
    where = Path(path)
    if where.is_dir():
        keys = []
        for file in sorted(where.glob(f"*{_PUBLIC_SUFFIX}")):
            try:
                keys.append(load_public_key(_read_key_file(file)))
            except InputError:
                continue
        if not keys:
            raise InputError(f"no Ed25519 public key (*{_PUBLIC_SUFFIX}) in the folder {where};"
                             " pass the key file or the folder `edgepersona keys generate` wrote")
        return keys
    if not where.exists():
        raise InputError(f"no public key file or key folder at {where}; pass the signing_key"
                         f"{_PUBLIC_SUFFIX} that `edgepersona keys generate` wrote, or its folder")
    data = _read_key_file(where)
    try:
        return [load_public_key(data)]
    except InputError as problem:
        raise InputError(f"{where}: {problem}") from None


def _read_key_file(file: Path) -> bytes:
    """A key file's bytes, refusing files far larger than any key (a wrong path)."""
    with file.open("rb") as handle:
        data = handle.read(_MAX_KEY_FILE + 1)
    if len(data) > _MAX_KEY_FILE:
        raise InputError(f"{file} is larger than any public key file; is it the right path?")
    return data


def sign(private: Ed25519PrivateKey, context: bytes, message: bytes) -> SignatureFile:
    """Sign ``context || message``.

    Args:
        private: the signing key.
        context: the purpose tag (e.g. :data:`MANIFEST_CONTEXT`).
        message: the bytes to sign.

    Returns:
        The detached signature with the signer's key id.
    """
    signature = private.sign(context + message)
    return SignatureFile(key_id(private.public_key()), signature)


@dataclass(frozen=True)
class SignatureFile:
    """A detached Ed25519 signature and the id of the key that made it."""

    key_id: str
    signature: bytes

    def to_bytes(self) -> bytes:
        """Serialise as the bundle's ``signature`` file (small JSON).

        Returns:
            The file content.
        """
        body = {"algorithm": "ed25519", "key_id": self.key_id,
                "signature": base64.b64encode(self.signature).decode("ascii")}
        return json.dumps(body, sort_keys=True).encode("ascii") + b"\n"

    @classmethod
    def from_bytes(cls, raw: bytes) -> SignatureFile:
        """Parse a ``signature`` file.

        Args:
            raw: the file content.

        Returns:
            The signature.

        Raises:
            ModelIntegrityError: the file is not a well-formed Ed25519 signature.
        """
        problem = ModelIntegrityError(
            "the bundle's signature file is malformed; rebuild the bundle with `edgepersona train`")
        if len(raw) > _MAX_SIGNATURE_FILE:
            raise problem
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or body.get("algorithm") != "ed25519":
                raise problem
            kid, sig = body["key_id"], base64.b64decode(body["signature"], validate=True)
        except (ValueError, KeyError, TypeError):
            raise problem from None
        if not isinstance(kid, str) or len(sig) != 64:
            raise problem
        return cls(kid, sig)
