"""The trust state: the signing keys a device accepts, and how a rotation moves them.

:class:`TrustedKeys` verifies bundle signatures against the keys a device
trusts; :func:`apply_rotation` (or :meth:`TrustedKeys.rotate`) moves the set
forward along a key rotation statement (its format and the order of the
checks are in :mod:`edgepersona.sdk.protocol.rotation`); :func:`dump_trust`
and :func:`load_trust` keep the rotated set in the device's store.

Layering: ``signing`` (raw keys and signatures) ← ``rotation`` (the statement)
← ``trust`` (this module). Nothing below imports it, so there is no circle.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgepersona.sdk.errors import (
    BundleExpiredError,
    InputError,
    ModelIntegrityError,
    RollbackError,
    StoreCorruptError,
    UntrustedKeyError,
)
from edgepersona.sdk.protocol.manifest_view import canonical_json
from edgepersona.sdk.protocol.signing import SignatureFile, key_id, load_public_key, read_public_keys

if TYPE_CHECKING:
    from edgepersona.sdk.protocol.rotation import RotationStatement

__all__ = ["KeySource", "TrustedKeys", "apply_rotation", "dump_trust", "load_trust"]

_MAX_TRUST_RECORD_BYTES: Final = 64 * 1024  # bytes
_HEX_KEY: Final = re.compile(r"\s*[0-9a-fA-F]{64}\s*")

KeySource = bytes | str | os.PathLike[str] | Ed25519PublicKey
"""One trusted-key argument: key data (PEM, raw, hex, a key object) or a key file or folder path."""


class TrustedKeys:
    """The set of public keys a device accepts bundle signatures from.

    A set that went through key rotations (see :mod:`edgepersona.sdk.protocol.rotation`)
    also remembers the ids of the keys it revoked, which it never trusts again,
    and the counter of the last rotation it applied.
    """

    def __init__(self, keys: Iterable[KeySource] | KeySource, *,
                 revoked: Iterable[str] = (), rotation: int = 0) -> None:
        """Build the set.

        Args:
            keys: public keys (PEM, raw bytes, hex or key objects), or paths (``str``
                or ``Path``) of a PEM key file or of a folder whose ``*.pub.pem``
                Ed25519 keys are all trusted (see :func:`read_public_keys`); one key
                or path alone works too.
            revoked: ids of keys that are never trusted, even when listed in ``keys``.
            rotation: the counter of the last key rotation applied (0: none).

        Raises:
            InputError: a key cannot be loaded, or no key is left to trust.
        """
        if isinstance(keys, str | bytes | os.PathLike | Ed25519PublicKey):
            keys = [keys]
        loaded = [key for source in keys for key in _keys_from(source)]
        self._revoked = frozenset(revoked)
        self._rotation = rotation
        self._keys: Mapping[str, Ed25519PublicKey] = {
            key_id(k): k for k in loaded if key_id(k) not in self._revoked}
        if not self._keys:
            raise InputError("at least one trusted public key is required (--trusted-key)"
                             + (" that a key rotation has not revoked" if loaded else ""))

    @property
    def ids(self) -> tuple[str, ...]:
        """The trusted key ids, sorted."""
        return tuple(sorted(self._keys))

    @property
    def keys(self) -> Mapping[str, Ed25519PublicKey]:
        """The trusted public keys by key id (a copy)."""
        return dict(self._keys)

    @property
    def revoked(self) -> frozenset[str]:
        """Ids of the keys revoked by key rotations."""
        return self._revoked

    @property
    def rotation(self) -> int:
        """The counter of the last key rotation applied; 0 if none was."""
        return self._rotation

    def rotate(self, statement: bytes, *, now: datetime | None = None) -> TrustedKeys:
        """Apply a key rotation statement signed by the key it retires.

        Pure: this set is not changed. See :mod:`edgepersona.sdk.protocol.rotation`
        for the statement and the order of the checks.

        Args:
            statement: the statement file written by ``edgepersona keys rotate``.
            now: the current time (timezone-aware; default: the system clock).

        Returns:
            The new set: the retired key revoked, the new key trusted.

        Raises:
            UntrustedKeyError: the statement is not signed by a currently trusted key.
            ModelIntegrityError: it is malformed, badly signed, expired
                (BundleExpiredError), not newer than the last applied rotation
                (RollbackError) or names a revoked key as the new one.
        """
        return apply_rotation(self, statement, now=now or datetime.now(UTC))

    def verify(self, context: bytes, message: bytes, signature: SignatureFile) -> None:
        """Verify a detached signature against the trusted key it names.

        Args:
            context: the purpose tag the signer used.
            message: the signed bytes.
            signature: the detached signature.

        Raises:
            UntrustedKeyError: the signing key is not trusted or was revoked.
            ModelIntegrityError: the signature does not verify.
        """
        public = self._keys.get(signature.key_id)
        if public is None and signature.key_id in self._revoked:
            raise UntrustedKeyError(
                f"bundle is signed by key {signature.key_id}, which a key rotation revoked"
                f" (trusted: {', '.join(self.ids)}); fetch a bundle signed by the current key")
        if public is None:
            raise UntrustedKeyError(
                f"bundle is signed by key {signature.key_id}, which is not trusted"
                f" (trusted: {', '.join(self.ids)}); pass its public key as a trusted key")
        try:
            public.verify(signature.signature, context + message)
        except InvalidSignature:
            raise ModelIntegrityError(
                f"bundle signature does not verify against key {signature.key_id}; the manifest"
                " was changed after signing or signed with another key") from None


def _keys_from(source: KeySource) -> list[Ed25519PublicKey]:
    """One trusted-key argument as keys: key data as it is, a path read from disk."""
    if isinstance(source, os.PathLike):
        return read_public_keys(source)
    if isinstance(source, str) and not (source.lstrip().startswith("-----BEGIN")
                                        or _HEX_KEY.fullmatch(source)):
        return read_public_keys(source)
    return [load_public_key(source)]


def apply_rotation(trusted: TrustedKeys, statement: bytes, *, now: datetime) -> TrustedKeys:
    """Verify a rotation statement against the trusted keys and return the rotated set.

    Pure: ``trusted`` is not changed (``TrustedKeys.rotate`` calls it); the order of
    the checks is in :mod:`edgepersona.sdk.protocol.rotation`.

    Args:
        trusted: the keys the device trusts now.
        statement: the statement file's bytes.
        now: the current time (timezone-aware).

    Returns:
        The rotated set.

    Raises:
        UntrustedKeyError: no currently trusted key signed the statement.
        BundleExpiredError: the statement has expired.
        RollbackError: its counter is not above the last applied rotation's.
        ModelIntegrityError: anything else is wrong with it.
        InputError: ``now`` is not timezone-aware or ``statement`` is not bytes.
    """
    if now.tzinfo is None:
        raise InputError("`now` must be timezone-aware, e.g. datetime.now(UTC)")
    # Rotation statements are rare and pydantic-backed: a device that opens a bundle never loads them.
    from edgepersona.sdk.protocol.rotation import (
        parse_statement_payload,
        read_statement,
        verify_statement_signature,
    )

    payload, signatures = read_statement(statement)
    signers = _trusted_signers(trusted, signatures)
    for signer in signers:
        verify_statement_signature(trusted.keys[signer], payload, signatures[signer])
    parsed = parse_statement_payload(payload)
    if parsed.counter <= trusted.rotation:
        raise RollbackError(f"key rotation #{parsed.counter} is not newer than the applied"
                            f" #{trusted.rotation}; nothing changed")
    if parsed.old_key_id not in signers:
        raise UntrustedKeyError(
            f"key rotation statement retires key {parsed.old_key_id} but is not signed by it"
            f" (signed by {', '.join(signers)}); a key can only retire itself")
    if parsed.expires_at <= now:
        raise BundleExpiredError(f"key rotation #{parsed.counter} expired at"
                                 f" {parsed.expires_at.isoformat()}; ask for a fresh statement")
    new_key = _new_key(trusted, parsed, payload, signatures)
    kept = [key for kid, key in trusted.keys.items() if kid != parsed.old_key_id]
    return TrustedKeys([*kept, new_key], revoked=trusted.revoked | {parsed.old_key_id},
                       rotation=parsed.counter)


def _trusted_signers(trusted: TrustedKeys, signatures: dict[str, SignatureFile]) -> list[str]:
    """The signers the device trusts now; none is an error that names revoked signers."""
    current = sorted(kid for kid in signatures if kid in trusted.ids)
    if current:
        return current
    revoked = sorted(set(signatures) & trusted.revoked)
    why = (f"by key {', '.join(revoked)}, which an earlier rotation revoked" if revoked
           else f"only by {', '.join(sorted(signatures))}, none of them trusted")
    raise UntrustedKeyError(f"key rotation statement is signed {why} (trusted:"
                            f" {', '.join(trusted.ids)}); apply rotations in counter order")


def _new_key(trusted: TrustedKeys, parsed: RotationStatement, payload: bytes,
             signatures: dict[str, SignatureFile]) -> Ed25519PublicKey:
    """Load the new key, refuse revoked or unrelated ones, check its proof of possession."""
    try:
        new_key = load_public_key(parsed.new_public_key)
    except InputError:
        raise ModelIntegrityError("key rotation statement names an invalid new key") from None
    new_id = key_id(new_key)
    if new_id == parsed.old_key_id or new_id in trusted.revoked:
        raise ModelIntegrityError(f"key rotation #{parsed.counter} names key {new_id}, which is"
                                  " the retired or a revoked key; refusing to trust it again")
    strangers = sorted(set(signatures) - {parsed.old_key_id, new_id})
    if strangers:
        raise ModelIntegrityError(f"key rotation statement is also signed by unrelated keys"
                                  f" {', '.join(strangers)}")
    if new_id in signatures and new_id not in trusted.ids:  # a trusted one was verified already
        from edgepersona.sdk.protocol.rotation import verify_statement_signature

        verify_statement_signature(new_key, payload, signatures[new_id])
    return new_key


def dump_trust(trusted: TrustedKeys) -> bytes:
    """Serialise a (rotated) trusted key set for the device's encrypted store.

    Args:
        trusted: the set.

    Returns:
        Small JSON: raw public keys, revoked ids and the rotation counter.
    """
    keys = {kid: key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
            for kid, key in trusted.keys.items()}
    return canonical_json({"format": 1, "keys": keys, "revoked": sorted(trusted.revoked),
                           "rotation": trusted.rotation})


def load_trust(app_keys: Iterable[bytes | str | Ed25519PublicKey],
               persisted: bytes | None) -> TrustedKeys:
    """Combine the app's trusted keys with the set a rotation persisted.

    The rule: with no persisted record the app's keys are the set; after a
    rotation the set is the persisted keys plus the app's keys, minus every
    key any persisted rotation revoked (an app still shipping a retired key
    does not bring it back), with the persisted rotation counter.

    Args:
        app_keys: the keys the app passes (PEM, raw or hex).
        persisted: the record :func:`dump_trust` wrote, or None.

    Returns:
        The trusted set.

    Raises:
        InputError: an app key cannot be loaded, or no key is left to trust.
        StoreCorruptError: the persisted record is unreadable.
    """
    if persisted is None:
        return TrustedKeys(app_keys)
    try:
        if len(persisted) > _MAX_TRUST_RECORD_BYTES:
            raise ValueError("size")
        body = json.loads(persisted)
        stored = [Ed25519PublicKey.from_public_bytes(bytes.fromhex(v)) for v in body["keys"].values()]
        revoked, rotation = body["revoked"], body["rotation"]
        if (body["format"] != 1 or not isinstance(revoked, list)
                or not all(isinstance(r, str) for r in revoked)
                or type(rotation) is not int or not stored):
            raise ValueError("shape")
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise StoreCorruptError("the trusted-keys record is unreadable; reset the store") from None
    return TrustedKeys([*stored, *app_keys], revoked=revoked, rotation=rotation)
