"""Rolling the bundle signing key: a statement signed by the old key names the new one.

A device trusts a new signing key only through a *key rotation statement*
signed by the key it retires (in the spirit of TUF's root rotation: trust
moves forward only along signatures the device can already check). The
trainer writes one with ``edgepersona keys rotate``; the device applies it
with :meth:`TrustedKeys.rotate <edgepersona.sdk.protocol.signing.TrustedKeys.rotate>`
(pure) or ``PersonaClient.rotate_key`` (which persists the result).

Statement file (small JSON, a DSSE-like envelope; the payload is signed byte
for byte, so nothing is parsed or re-encoded before a signature verifies)::

    {"payload": base64(canonical JSON),
     "signatures": [{"key_id": "<16 hex>", "signature": base64(64 bytes)}, ...]}

    payload = {"type": "edgepersona/key-rotation", "schema_version": 1,
               "counter": 3,                        # > every earlier rotation's
               "old_key_id": "<16 hex>",            # the key retired
               "new_public_key": "<64 hex>",        # raw Ed25519 key taking over
               "created_at": "...", "expires_at": "..."}   # timezone-aware ISO 8601

Each signature is Ed25519 over :data:`ROTATION_CONTEXT` ``|| payload``, so a
manifest signature can never pass as a rotation and the reverse. Checks, in
order (every failure is a :class:`ModelIntegrityError` or a subclass):

1. the envelope is well formed, at most 16 KiB, every signer named once;
2. at least one signer is a currently trusted key (none: UntrustedKeyError, a
   revoked signer named as such) and every trusted signer's signature
   verifies; only then is the payload parsed;
3. its counter is above the last applied one (RollbackError: a replayed
   statement changes nothing);
4. the retired ``old_key_id`` is among the trusted signers: a key retires only
   itself, so a statement signed by the new key alone is refused;
5. the statement has not expired (BundleExpiredError);
6. the new key is valid, not the old one and never a revoked one; if the new
   key signed too (proof of possession, written by the CLI), that signature
   must verify; no other signer is allowed.

The result trusts every key the device trusted except the retired one, plus
the new key, and remembers the retired id as revoked forever. Apply several
statements in counter order. Rules for operators: issue the statement, then
publish the next bundle signed by the new key; a device that restarts after
the rotation verifies the bundle it opens against the rotated keys.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgepersona.sdk.errors import (
    BundleExpiredError,
    InputError,
    ModelIntegrityError,
    RollbackError,
    StoreCorruptError,
    UntrustedKeyError,
)
from edgepersona.sdk.protocol.manifest import canonical_json
from edgepersona.sdk.protocol.signing import SignatureFile, TrustedKeys, key_id, load_public_key, sign

__all__ = [
    "MAX_STATEMENT_BYTES",
    "ROTATION_CONTEXT",
    "RotationStatement",
    "apply_rotation",
    "build_rotation_statement",
    "dump_trust",
    "load_trust",
]

ROTATION_CONTEXT = b"edgepersona/key-rotation/v1\x00"
ROTATION_TYPE: Final = "edgepersona/key-rotation"
MAX_STATEMENT_BYTES = 16 * 1024  # bytes
_MAX_SIGNATURES = 4
_MAX_TRUST_RECORD_BYTES = 64 * 1024  # bytes
KeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
RawKeyHex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class RotationStatement(BaseModel):
    """The signed payload of a key rotation statement (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["edgepersona/key-rotation"] = ROTATION_TYPE
    schema_version: Literal[1] = 1
    counter: int = Field(ge=1, le=2**31 - 1)
    old_key_id: KeyId
    new_public_key: RawKeyHex
    created_at: AwareDatetime
    expires_at: AwareDatetime

    @model_validator(mode="after")
    def _ordered_times(self) -> RotationStatement:
        """A statement is valid for a positive time span."""
        if self.expires_at <= self.created_at:
            raise ValueError("expires_at must be after created_at")
        return self


def build_rotation_statement(old: Ed25519PrivateKey, new: Ed25519PrivateKey, *, counter: int,
                             now: datetime, valid_for: timedelta) -> bytes:
    """Write a statement retiring ``old`` in favour of ``new``, signed by both.

    Args:
        old: the signing key devices trust today (it signs the statement).
        new: the signing key taking over (it signs too, proving possession).
        counter: the rotation number; greater than every earlier rotation's.
        now: the creation time (timezone-aware).
        valid_for: how long devices accept the statement.

    Returns:
        The statement file's bytes.

    Raises:
        InputError: the keys are the same, or a field is out of range.
    """
    new_public = new.public_key()
    if key_id(new_public) == key_id(old.public_key()):
        raise InputError("the new signing key is the old one; generate a new key first")
    raw = new_public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        statement = RotationStatement(counter=counter, old_key_id=key_id(old.public_key()),
                                      new_public_key=raw.hex(), created_at=now,
                                      expires_at=now + valid_for)
    except (ValidationError, OverflowError):
        raise InputError("cannot write the key rotation statement: the counter must be"
                         " 1..2**31-1, `now` timezone-aware and the validity positive") from None
    payload = canonical_json(statement.model_dump(mode="json"))
    signatures = [sign(key, ROTATION_CONTEXT, payload) for key in (old, new)]
    body = {"payload": base64.b64encode(payload).decode("ascii"),
            "signatures": [{"key_id": s.key_id,
                            "signature": base64.b64encode(s.signature).decode("ascii")}
                           for s in signatures]}
    return json.dumps(body, indent=2, sort_keys=True).encode("ascii") + b"\n"


def apply_rotation(trusted: TrustedKeys, statement: bytes, *, now: datetime) -> TrustedKeys:
    """Verify a rotation statement against the trusted keys and return the rotated set.

    Pure: ``trusted`` is not changed. Use ``TrustedKeys.rotate``; the order of
    checks is in the module docstring.

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
    payload, signatures = _parse_envelope(statement)
    signers = _trusted_signers(trusted, signatures)
    for signer in signers:
        _verify(trusted.keys[signer], payload, signatures[signer])
    parsed = _parse_payload(payload)
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


def _malformed(what: str) -> ModelIntegrityError:
    """The one error for a statement that is not a well-formed envelope."""
    return ModelIntegrityError(f"key rotation statement is malformed ({what}); use the file"
                               " `edgepersona keys rotate` wrote, unmodified")


def _parse_envelope(raw: bytes) -> tuple[bytes, dict[str, SignatureFile]]:
    """The signed payload bytes and the signatures by key id; nothing inside is parsed."""
    if not isinstance(raw, bytes | bytearray):
        raise InputError(f"a key rotation statement must be bytes, got {type(raw).__name__}")
    if len(raw) > MAX_STATEMENT_BYTES:
        raise _malformed(f"larger than {MAX_STATEMENT_BYTES} bytes")
    try:
        body = json.loads(raw)
        if not isinstance(body, dict) or set(body) != {"payload", "signatures"}:
            raise _malformed("expected the keys payload and signatures")
        entries = body["signatures"]
        if not isinstance(entries, list) or not 1 <= len(entries) <= _MAX_SIGNATURES:
            raise _malformed(f"expected 1..{_MAX_SIGNATURES} signatures")
        payload = base64.b64decode(body["payload"], validate=True)
        signatures = [_signature(entry) for entry in entries]
    except (ValueError, TypeError, RecursionError):
        raise _malformed("not the statement JSON") from None
    by_key = {s.key_id: s for s in signatures}
    if len(by_key) != len(signatures):
        raise _malformed("a key signed twice")
    return payload, by_key


def _signature(entry: object) -> SignatureFile:
    """One ``{"key_id", "signature"}`` entry; ValueError/TypeError if malformed."""
    if not isinstance(entry, dict) or set(entry) != {"key_id", "signature"}:
        raise ValueError("signature entry")
    kid, signature = entry["key_id"], base64.b64decode(entry["signature"], validate=True)
    if not isinstance(kid, str) or len(signature) != 64:
        raise ValueError("signature entry")
    return SignatureFile(kid, signature)


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


def _parse_payload(payload: bytes) -> RotationStatement:
    """Parse the verified payload; a signed but malformed one is still an integrity error."""
    try:
        return RotationStatement.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "statement"
        raise ModelIntegrityError(f"key rotation statement is signed but invalid: {where}:"
                                  f" {first['msg']}") from None


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
        _verify(new_key, payload, signatures[new_id])
    return new_key


def _verify(public: Ed25519PublicKey, payload: bytes, signature: SignatureFile) -> None:
    """Check one statement signature; the error names the key, never what differed."""
    try:
        public.verify(signature.signature, ROTATION_CONTEXT + payload)
    except InvalidSignature:
        raise ModelIntegrityError(
            f"key rotation statement signature by key {signature.key_id} does not verify; the"
            " statement was changed after signing") from None


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
