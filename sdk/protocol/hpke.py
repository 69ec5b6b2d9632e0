"""HAZARDOUS: raw HPKE (RFC 9180) base-mode primitives for the sync envelope.

This module is the lower, hazardous layer under :mod:`edgepersona.sdk.protocol.envelope`.
It is a thin wrapper around :mod:`cryptography.hazmat.primitives.hpke` that
does no input validation, no size limits, no header binding and no payload
parsing. Using it directly makes it easy to build an envelope that leaks, is
unbound to its context, or cannot be opened. Only ``_seal`` imports it (and
the tests, to craft envelopes ``_seal`` would refuse to build).

Two KEMs are supported, both with HKDF-SHA256 and ChaCha20-Poly1305:

========================  =========  ======  ========  ========  ===========
KEM                       IANA id    enc     public    private   note
========================  =========  ======  ========  ========  ===========
DHKEM(X25519, SHA256)     0x0020     32 B    32 B      32 B      RFC 9180
MLKEM768-X25519           0x647A     1120 B  1216 B    96 B      PQ hybrid
========================  =========  ======  ========  ========  ===========

Raw key layouts chosen here (the hybrid KEM has no standard serialization in
``cryptography``): the hybrid public key is the ML-KEM-768 encapsulation key
(1184 B) followed by the X25519 public key (32 B); the hybrid private key is
the ML-KEM-768 64-byte seed (FIPS 203 ``d || z``) followed by the X25519
private scalar (32 B). The X25519 layouts are the RFC 7748 raw encodings.
"""

from __future__ import annotations

import enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

__all__ = [
    "TAG_LENGTH",
    "Kem",
    "OpenFailedError",
    "PrivateKey",
    "PublicKey",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "open_base",
    "public_key_bytes",
    "seal_base",
]

TAG_LENGTH = 16  # bytes; ChaCha20-Poly1305 authentication tag

_MLKEM768_PUBLIC_LENGTH = 1184  # bytes; FIPS 203 encapsulation key
_MLKEM768_SEED_LENGTH = 64  # bytes; FIPS 203 seed d || z
_X25519_LENGTH = 32  # bytes; RFC 7748 public key or private scalar

PrivateKey = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey
PublicKey = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey


class Kem(enum.Enum):
    """The KEMs the envelope may use; the value is the IANA HPKE KEM id."""

    X25519 = 0x0020
    MLKEM768_X25519 = 0x647A

    @property
    def enc_length(self) -> int:
        """Size in bytes of the encapsulated key this KEM emits."""
        return _HPKE_KEM[self].enc_length()

    @property
    def public_length(self) -> int:
        """Size in bytes of a raw public key for this KEM."""
        if self is Kem.X25519:
            return _X25519_LENGTH
        return _MLKEM768_PUBLIC_LENGTH + _X25519_LENGTH

    @property
    def private_length(self) -> int:
        """Size in bytes of a raw private key for this KEM."""
        if self is Kem.X25519:
            return _X25519_LENGTH
        return _MLKEM768_SEED_LENGTH + _X25519_LENGTH


_HPKE_KEM = {Kem.X25519: hpke.KEM.X25519, Kem.MLKEM768_X25519: hpke.KEM.MLKEM768_X25519}
_SUITES = {
    kem: hpke.Suite(hpke_kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
    for kem, hpke_kem in _HPKE_KEM.items()
}


class OpenFailedError(Exception):
    """HPKE decryption failed (wrong key, wrong info, or altered bytes)."""


def generate_private_key(kem: Kem) -> bytes:
    """Generate a fresh private key from the OS CSPRNG and return its raw bytes.

    Args:
        kem: Which KEM the key is for.

    Returns:
        The raw private key in the layout documented in the module docstring.
    """
    scalar = x25519.X25519PrivateKey.generate().private_bytes_raw()
    if kem is Kem.X25519:
        return scalar
    return mlkem.MLKEM768PrivateKey.generate().private_bytes_raw() + scalar


def load_private_key(kem: Kem, raw: bytes) -> PrivateKey:
    """Build a private key object from raw bytes of exactly ``kem.private_length``.

    Args:
        kem: Which KEM the key is for.
        raw: The raw private key; the caller has checked its length.

    Returns:
        A key object ``cryptography`` accepts for ``kem``.

    Raises:
        ValueError: If ``raw`` is not a valid key for ``kem``.
    """
    if kem is Kem.X25519:
        return x25519.X25519PrivateKey.from_private_bytes(raw)
    seed, scalar = raw[:_MLKEM768_SEED_LENGTH], raw[_MLKEM768_SEED_LENGTH:]
    return hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(seed),
        x25519.X25519PrivateKey.from_private_bytes(scalar),
    )


def load_public_key(kem: Kem, raw: bytes) -> PublicKey:
    """Build a public key object from raw bytes of exactly ``kem.public_length``.

    Args:
        kem: Which KEM the key is for.
        raw: The raw public key; the caller has checked its length.

    Returns:
        A key object ``cryptography`` accepts for ``kem``.

    Raises:
        ValueError: If ``raw`` is not a valid key for ``kem``.
    """
    if kem is Kem.X25519:
        return x25519.X25519PublicKey.from_public_bytes(raw)
    encaps, point = raw[:_MLKEM768_PUBLIC_LENGTH], raw[_MLKEM768_PUBLIC_LENGTH:]
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(encaps),
        x25519.X25519PublicKey.from_public_bytes(point),
    )


def public_key_bytes(kem: Kem, private_raw: bytes) -> bytes:
    """Derive the raw public key that belongs to a raw private key.

    The hybrid key object of ``cryptography`` exposes no bytes, so the
    public key is derived from the two component keys.

    Args:
        kem: Which KEM the key is for.
        private_raw: The raw private key; the caller has checked its length.

    Returns:
        The raw public key in the layout documented in the module docstring.

    Raises:
        ValueError: If ``private_raw`` is not a valid key for ``kem``.
    """
    scalar = private_raw[-_X25519_LENGTH:]
    point = x25519.X25519PrivateKey.from_private_bytes(scalar).public_key().public_bytes_raw()
    if kem is Kem.X25519:
        return point
    seed = private_raw[:_MLKEM768_SEED_LENGTH]
    encaps = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
    return encaps + point


def seal_base(kem: Kem, public_key: PublicKey, info: bytes, plaintext: bytes) -> bytes:
    """Single-shot HPKE base-mode seal with a fresh ephemeral key.

    Args:
        kem: The KEM of ``public_key``.
        public_key: The recipient's public key object.
        info: Context the key schedule is bound to; must match at open time.
        plaintext: The bytes to encrypt; no size limit is applied here.

    Returns:
        ``enc || ciphertext || tag``; ``enc`` is ``kem.enc_length`` bytes.
    """
    return _SUITES[kem].encrypt(plaintext, public_key, info=info)


def open_base(kem: Kem, private_key: PrivateKey, info: bytes, sealed: bytes) -> bytes:
    """Single-shot HPKE base-mode open of ``enc || ciphertext || tag``.

    Args:
        kem: The KEM of ``private_key``.
        private_key: The recipient's private key object.
        info: The context the sender bound the key schedule to.
        sealed: ``enc || ciphertext || tag`` as returned by :func:`seal_base`.

    Returns:
        The authenticated plaintext (not parsed or validated in any way).

    Raises:
        OpenFailedError: On any failure: altered bytes, wrong key, wrong info.
    """
    try:
        return _SUITES[kem].decrypt(sealed, private_key, info=info)
    except (InvalidTag, ValueError):
        raise OpenFailedError() from None
