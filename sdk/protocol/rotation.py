"""Rolling the bundle signing key: a statement signed by the old key names the new one.

A device trusts a new signing key only through a *key rotation statement*
signed by the key it retires (in the spirit of TUF's root rotation: trust
moves forward only along signatures the device can already check). The
trainer writes one with ``edgepersona keys rotate``; the device applies it
with :meth:`TrustedKeys.rotate <edgepersona.sdk.protocol.trust.TrustedKeys.rotate>`
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
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgepersona.sdk.errors import (
    InputError,
    ModelIntegrityError,
)
from edgepersona.sdk.protocol.manifest_view import canonical_json
from edgepersona.sdk.protocol.signing import SignatureFile, key_id, sign

__all__ = [
    "MAX_STATEMENT_BYTES",
    "ROTATION_CONTEXT",
    "RotationStatement",
    "build_rotation_statement",
    "parse_statement_payload",
    "read_statement",
    "verify_statement_signature",
]

ROTATION_CONTEXT = b"edgepersona/key-rotation/v1\x00"
ROTATION_TYPE: Final = "edgepersona/key-rotation"
MAX_STATEMENT_BYTES = 16 * 1024  # bytes
_MAX_SIGNATURES = 4
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


def _malformed(what: str) -> ModelIntegrityError:
    """The one error for a statement that is not a well-formed envelope."""
    return ModelIntegrityError(f"key rotation statement is malformed ({what}); use the file"
                               " `edgepersona keys rotate` wrote, unmodified")


def read_statement(raw: bytes) -> tuple[bytes, dict[str, SignatureFile]]:
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


def parse_statement_payload(payload: bytes) -> RotationStatement:
    """Parse the verified payload; a signed but malformed one is still an integrity error."""
    try:
        return RotationStatement.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "statement"
        raise ModelIntegrityError(f"key rotation statement is signed but invalid: {where}:"
                                  f" {first['msg']}") from None


def verify_statement_signature(public: Ed25519PublicKey, payload: bytes, signature: SignatureFile) -> None:
    """Check one statement signature; the error names the key, never what differed."""
    try:
        public.verify(signature.signature, ROTATION_CONTEXT + payload)
    except InvalidSignature:
        raise ModelIntegrityError(
            f"key rotation statement signature by key {signature.key_id} does not verify; the"
            " statement was changed after signing") from None
