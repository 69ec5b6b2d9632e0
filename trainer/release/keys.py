"""Signing keys for bundles: generation, safe storage, loading."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import InputError
from edgepersona.sdk.protocol.signing import key_id

__all__ = [
    "PRIVATE_NAME",
    "PUBLIC_NAME",
    "generate_collector_key",
    "generate_signing_key",
    "load_signing_key",
]

PRIVATE_NAME = "signing_key.pem"
PUBLIC_NAME = "signing_key.pub.pem"


def _write_private(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only (0600), refusing to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def generate_signing_key(out: Path) -> tuple[Path, Path, str]:
    """Create an Ed25519 signing key pair in a folder.

    Args:
        out: the folder (created if missing); existing keys are never overwritten.

    Returns:
        (private key path, public key path, key id).

    Raises:
        InputError: a key already exists there.
    """
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / PRIVATE_NAME, out / PUBLIC_NAME
    if private_path.exists() or public_path.exists():
        raise InputError(f"{out} already holds a signing key; choose another --out folder")
    private = Ed25519PrivateKey.generate()
    _write_private(private_path, private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    public_path.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path, key_id(private.public_key())


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load a private signing key written by :func:`generate_signing_key`.

    Args:
        path: the PEM file, or the folder holding it.

    Returns:
        The key.

    Raises:
        InputError: the file is missing or not an Ed25519 private key.
    """
    if path.is_dir():
        path = path / PRIVATE_NAME
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise InputError(f"no signing key at {path}; create one with"
                         " `edgepersona keys generate --out DIR`") from None
    except (ValueError, TypeError):
        raise InputError(f"{path} is not an unencrypted Ed25519 private key in PEM") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path} is not an Ed25519 private key")
    return key


COLLECTOR_PRIVATE_NAME = "collector_key.pem"
COLLECTOR_PUBLIC_NAME = "collector_key.pub.pem"


def generate_collector_key(out: Path, *, hybrid: bool = False) -> tuple[Path, Path]:
    """Create the collector's HPKE key pair for sealed sync envelopes.

    Args:
        out: the folder (created if missing); existing keys are never overwritten.
        hybrid: use the post-quantum hybrid ML-KEM-768 + X25519 suite.

    Returns:
        (private key path, public key path).

    Raises:
        InputError: a collector key already exists there.
    """
    from edgepersona.sdk.protocol.envelope import SealSuite, generate_collector_keypair

    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / COLLECTOR_PRIVATE_NAME, out / COLLECTOR_PUBLIC_NAME
    if private_path.exists() or public_path.exists():
        raise InputError(f"{out} already holds a collector key; choose another --out folder")
    suite = SealSuite.MLKEM768_X25519 if hybrid else SealSuite.X25519
    private, public = generate_collector_keypair(suite)
    _write_private(private_path, private)
    public_path.write_bytes(public)
    return private_path, public_path
