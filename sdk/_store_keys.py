"""Hazardous: the encrypted store's key schedule and associated data.

Bytes in, bytes out, no IO. Only :mod:`edgepersona.sdk._store` (the recipe)
should use it: every function here is safe only in the combination the recipe
makes of them. The layout (format version 1) is fixed: a file written by one
SDK version must open with the next, so nothing here may change its bytes.

A 32-byte *master key* lives outside the store file (a key provider). Each
subject has its own random data key, stored *wrapped* (encrypted) under a key
derived from the master key. Every record is sealed with ChaCha20-Poly1305
(fast in software on ARM) under its subject's data key, with a fresh random
96-bit nonce per write (safe for about 2**32 writes per subject key). A
subject's row key is a keyed hash of its name, and its name is kept sealed
(for listing); a record's row key is a keyed hash of the record name.

Schedule::

    enc(f1, ..., fn)    = len(f1) || f1 || ... || len(fn) || fn   (u32 big-endian lengths)
    H(key, f...)        = HMAC-SHA256(key, enc(LABEL, f...))
    key_id              = H(master, "key-id", store_id, u32(FORMAT_VERSION))   (stored in clear)
    index               = H(master, "index", store_id)
    wrap                = H(master, "wrap", store_id)        (ChaCha20-Poly1305 key)
    sid(subject)        = H(index, "subject", subject)       (a subject's row key)
    record key          = H(data_key, "record")              (ChaCha20-Poly1305 key)
    rid(name)           = H(H(data_key, "record-id"), "name", name)

Sealed values are ``nonce (12 bytes) || ciphertext || tag``; associated data
is ``enc(context, kind, ...)`` with ``context = enc(LABEL, store_id,
u32(FORMAT_VERSION))``, so a value moved to another store, subject, record
or kind fails to open.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from edgepersona.sdk._keystore import KEY_BYTES

__all__ = [
    "FORMAT_VERSION",
    "LABEL",
    "STORE_ID_BYTES",
    "AssociatedData",
    "MasterKeys",
    "SubjectKeys",
    "WrappedSubject",
    "encode_fields",
    "matching_master",
    "new_master_key",
    "new_store_id",
    "open_subject_name",
    "seal",
    "unseal",
    "unwrap_data_key",
    "wrap_subject",
]

FORMAT_VERSION: Final = 1
LABEL: Final = b"edgepersona/store/v1"
NONCE_BYTES: Final = 12  # bytes, ChaCha20-Poly1305 nonce
TAG_BYTES: Final = 16  # bytes, Poly1305 tag
STORE_ID_BYTES: Final = 16  # bytes
REF_BYTES: Final = 16  # bytes, a subject's random row reference


def encode_fields(*fields: bytes) -> bytes:
    """Length-prefix each field so that no two field tuples share an encoding.

    Args:
        fields: the byte strings to join.

    Returns:
        The unambiguous encoding.
    """
    return b"".join(struct.pack(">I", len(field)) + field for field in fields)


def _derive(key: bytes, *fields: bytes) -> bytes:
    """HMAC-SHA256 over the label and the fields: every key and row id of the store."""
    return hmac.digest(key, encode_fields(LABEL, *fields), hashlib.sha256)


def seal(aead: ChaCha20Poly1305, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt with a fresh random nonce.

    Args:
        aead: the key.
        plaintext: what to seal.
        aad: the associated data it is bound to.

    Returns:
        ``nonce || ciphertext || tag``.
    """
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, plaintext, aad)


def unseal(aead: ChaCha20Poly1305, sealed: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`seal`.

    Args:
        aead: the key.
        sealed: ``nonce || ciphertext || tag``.
        aad: the associated data it must be bound to.

    Returns:
        The plaintext.

    Raises:
        InvalidTag: on any tampering, wrong key or wrong associated data.
    """
    if not isinstance(sealed, bytes) or len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise InvalidTag
    return aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)


def new_store_id() -> bytes:
    """Return a fresh random store id (16 bytes)."""
    return secrets.token_bytes(STORE_ID_BYTES)


def new_master_key() -> bytes:
    """Return a fresh random master key (32 bytes)."""
    return secrets.token_bytes(KEY_BYTES)


@dataclass(frozen=True, slots=True)
class MasterKeys:
    """Everything derived from one master key for one store."""

    raw: bytes
    key_id: bytes  # stored in clear; only the right master key reproduces it
    index: bytes  # HMAC key of subject row keys
    wrap: ChaCha20Poly1305  # seals subject keys and subject names

    @classmethod
    def derive(cls, raw: bytes, store_id: bytes) -> MasterKeys:
        """Derive the store's keys from a master key.

        Args:
            raw: the 32-byte master key.
            store_id: the store's random id.

        Returns:
            The derived keys.
        """
        return cls(
            raw=raw,
            key_id=_derive(raw, b"key-id", store_id, struct.pack(">I", FORMAT_VERSION)),
            index=_derive(raw, b"index", store_id),
            wrap=ChaCha20Poly1305(_derive(raw, b"wrap", store_id)),
        )

    def subject_id(self, subject: bytes) -> bytes:
        """Return the row key of ``subject`` (a keyed hash; the name never reaches the disk)."""
        return _derive(self.index, b"subject", subject)


@dataclass(frozen=True, slots=True)
class SubjectKeys:
    """A subject's stable row reference and the keys derived from its data key."""

    ref: bytes
    aead: ChaCha20Poly1305
    rid_key: bytes

    @classmethod
    def derive(cls, ref: bytes, data_key: bytes) -> SubjectKeys:
        """Derive a subject's record keys from its data key.

        Args:
            ref: the subject's random row reference.
            data_key: the subject's 32-byte data key.

        Returns:
            The derived keys.
        """
        aead = ChaCha20Poly1305(_derive(data_key, b"record"))
        return cls(ref=ref, aead=aead, rid_key=_derive(data_key, b"record-id"))

    def record_id(self, name: bytes) -> bytes:
        """Return the row key of the record ``name`` of this subject."""
        return _derive(self.rid_key, b"name", name)


@dataclass(frozen=True, slots=True)
class AssociatedData:
    """The associated data that binds each sealed value to its store, place and kind."""

    context: bytes

    @classmethod
    def for_store(cls, store_id: bytes) -> AssociatedData:
        """Bind to one store and the format version.

        Args:
            store_id: the store's random id.

        Returns:
            The associated-data builder of that store.
        """
        return cls(encode_fields(LABEL, store_id, struct.pack(">I", FORMAT_VERSION)))

    def record(self, subject: bytes, name: bytes) -> bytes:
        """Return the associated data of a record value."""
        return encode_fields(self.context, b"record", subject, name)

    def data_key(self, ref: bytes, subject: bytes) -> bytes:
        """Return the associated data of a wrapped subject data key."""
        return encode_fields(self.context, b"data-key", ref, subject)

    def subject_name(self, ref: bytes, sid: bytes) -> bytes:
        """Return the associated data of a sealed subject name."""
        return encode_fields(self.context, b"subject-name", ref, sid)


@dataclass(frozen=True, slots=True)
class WrappedSubject:
    """A subject row as stored: row key, wrapped data key and sealed name."""

    sid: bytes
    wrapped: bytes
    sealed_name: bytes


def wrap_subject(
    master: MasterKeys, ad: AssociatedData, ref: bytes, subject: bytes, data_key: bytes
) -> WrappedSubject:
    """Seal a subject's data key and name under the master key.

    Args:
        master: the current master keys.
        ad: the store's associated data.
        ref: the subject's row reference.
        subject: the subject's name (UTF-8).
        data_key: the subject's data key.

    Returns:
        The row values.
    """
    sid = master.subject_id(subject)
    return WrappedSubject(
        sid=sid,
        wrapped=seal(master.wrap, data_key, ad.data_key(ref, subject)),
        sealed_name=seal(master.wrap, subject, ad.subject_name(ref, sid)),
    )


def unwrap_data_key(
    master: MasterKeys, ad: AssociatedData, ref: bytes, subject: bytes, wrapped: bytes
) -> bytes:
    """Unseal a subject's data key.

    Args:
        master: the master keys it was wrapped under.
        ad: the store's associated data.
        ref: the subject's row reference.
        subject: the subject's name (UTF-8).
        wrapped: the wrapped data key.

    Returns:
        The data key.

    Raises:
        InvalidTag: the row was tampered with or belongs to another subject.
    """
    return unseal(master.wrap, wrapped, ad.data_key(ref, subject))


def open_subject_name(
    master: MasterKeys, ad: AssociatedData, ref: bytes, sid: bytes, sealed: bytes
) -> bytes:
    """Unseal a subject's name and check that it hashes to its row key.

    Args:
        master: the master keys it was sealed under.
        ad: the store's associated data.
        ref: the subject's row reference.
        sid: the subject's row key.
        sealed: the sealed name.

    Returns:
        The name (UTF-8 bytes).

    Raises:
        InvalidTag: the row was tampered with.
    """
    name = unseal(master.wrap, sealed, ad.subject_name(ref, sid))
    if not hmac.compare_digest(master.subject_id(name), sid):
        raise InvalidTag
    return name


def matching_master(keys: list[bytes], store_id: bytes, key_id: bytes) -> MasterKeys | None:
    """Return the held master key whose key id the store file names, if any.

    Args:
        keys: the master keys a key provider holds.
        store_id: the store's random id.
        key_id: the key id recorded in the store.

    Returns:
        The matching master keys, or None.
    """
    for raw in keys:
        master = MasterKeys.derive(raw, store_id)
        if hmac.compare_digest(master.key_id, key_id):
            return master
    return None
