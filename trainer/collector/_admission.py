"""Admission: only enrolled installs may contribute.

The collector's public key ships on every device, so anyone can seal a
well-formed envelope and mint as many pseudonyms as they like. An admission
check lets an operator require, with every ``POST /v1/sync``, a token that the
app's own backend handed to an install it knows (after sign-in, device
attestation, a paid account: the app decides).

:class:`AdmissionCheck` is the pluggable interface; :class:`Ed25519Admission`
is the implementation shipped: short-lived, quota-bearing tokens signed by the
app backend with Ed25519 (:func:`issue_admission_token`), verified against the
backend's configured public keys. A token is ``base64url(claims) "."
base64url(signature)``, the claims canonical JSON::

    {"aud": app id, "exp": POSIX s, "iat": POSIX s, "jti": 32 hex, "kid": key id,
     "quota": contributions allowed under this token, "v": 1}

and the signature is Ed25519 over ``"edgepersona/admission/v1"``, a NUL byte and
the claims
(a context no other signature of the project uses). The collector counts a
token's uses under a keyed hash of its ``jti`` and drops the count once the
token has expired.

What it stops: unenrolled installs and scripts holding only the collector's
public key (every request is refused), and mass minting of pseudonyms (each
token carries a quota, each install gets few tokens). What it does not stop:
an enrolled but malicious install within its quota; and the issuer, which sees
whom it hands each token to, could link tokens (and so requests) to installs
if it colluded with the collector. Anonymous rate-limited tokens in the style
of Privacy Pass (RFC 9576), blind-signed so issuance and redemption cannot be
linked, are the direction.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgepersona.sdk import InputError
from edgepersona.sdk.protocol.signing import key_id, load_public_key

__all__ = [
    "ADMISSION_CONTEXT",
    "Admission",
    "AdmissionCheck",
    "Ed25519Admission",
    "issue_admission_token",
]

ADMISSION_CONTEXT: Final = b"edgepersona/admission/v1\x00"
_MAX_TOKEN_CHARS: Final = 1024
_MAX_QUOTA: Final = 1_000_000
_SKEW: Final = 300.0  # seconds of clock difference tolerated between issuer and collector


@dataclass(frozen=True)
class Admission:
    """A request the admission check let in.

    Attributes:
        token_id: Opaque bytes naming the token; the collector stores only a
            keyed hash of them, to count the token's uses.
        quota: Contributions allowed under the token in all (None: no limit).
        expires_at: POSIX seconds after which the token is refused.
    """

    token_id: bytes
    quota: int | None
    expires_at: float


class AdmissionCheck(Protocol):
    """Decides whether a sync request may contribute at all."""

    def check(self, token: str | None, now: float) -> Admission | None:
        """Judge a request's token.

        Args:
            token: The bearer token of the request, None if it carried none.
            now: POSIX seconds now.

        Returns:
            The admission, or None to refuse the whole request.
        """
        ...


def issue_admission_token(private_key: Ed25519PrivateKey, *, app_id: str, quota: int,
                          lifetime_s: float = 86_400.0, now: float) -> str:
    """Issue a token for one enrolled install (run by the app's backend, never on a device).

    Args:
        private_key: The backend's Ed25519 admission key.
        app_id: The app id the collector serves (the token's audience).
        quota: Contributions the install may send under this token.
        lifetime_s: Seconds the token is valid (keep it short: a day).
        now: POSIX seconds now.

    Returns:
        The token, to send as ``Authorization: Bearer <token>``.

    Raises:
        InputError: The quota or lifetime is out of range.
    """
    if type(quota) is not int or not 1 <= quota <= _MAX_QUOTA:
        raise InputError(f"quota must be an int in 1..{_MAX_QUOTA}, got {quota!r}")
    if not 0 < lifetime_s <= 7 * 86_400:
        raise InputError(f"lifetime_s must be in (0, 604800] seconds, got {lifetime_s!r}")
    claims = {"aud": app_id, "exp": int(now + lifetime_s), "iat": int(now),
              "jti": secrets.token_hex(16), "kid": key_id(private_key.public_key()),
              "quota": quota, "v": 1}
    payload = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    signature = private_key.sign(ADMISSION_CONTEXT + payload)
    return f"{_b64(payload)}.{_b64(signature)}"


class Ed25519Admission:
    """Admits requests carrying a valid token signed by one of the app backend's keys.

    Args:
        public_keys: The backend's Ed25519 public keys (PEM, raw or hex; several
            during a key rotation).
        app_id: The collector's app id: a token for another audience is refused.
        max_lifetime_s: Tokens valid for longer than this are refused (seconds).

    Raises:
        InputError: No key, or a key that is not an Ed25519 public key.
    """

    def __init__(self, public_keys: Iterable[bytes | str | Ed25519PublicKey], *, app_id: str,
                 max_lifetime_s: float = 7 * 86_400.0) -> None:
        loaded = [load_public_key(key) for key in public_keys]
        if not loaded:
            raise InputError("admission needs at least one public key of the app backend")
        self._keys = {key_id(key): key for key in loaded}
        self._app_id = app_id
        self._max_lifetime = max_lifetime_s

    def check(self, token: str | None, now: float) -> Admission | None:
        """Verify a token: signature by a configured key, audience, lifetime, quota.

        Args:
            token: The bearer token, None if the request carried none.
            now: POSIX seconds now.

        Returns:
            The admission, or None (every failure looks the same to the caller).
        """
        claims = self._verified_claims(token)
        if claims is None or claims.get("v") != 1 or claims.get("aud") != self._app_id:
            return None
        issued, expires, quota, jti = (claims.get(k) for k in ("iat", "exp", "quota", "jti"))
        if not (type(issued) is int and type(expires) is int and type(quota) is int
                and isinstance(jti, str) and 0 < len(jti) <= 64):
            return None
        if not (issued - _SKEW <= now < expires and expires - issued <= self._max_lifetime
                and 1 <= quota <= _MAX_QUOTA):
            return None
        return Admission(jti.encode(), quota, float(expires))

    def _verified_claims(self, token: str | None) -> dict[str, object] | None:
        """The token's claims if its signature verifies under the key it names, else None."""
        if token is None or len(token) > _MAX_TOKEN_CHARS or token.count(".") != 1:
            return None
        encoded, _, signature = token.partition(".")
        try:
            payload = _unb64(encoded)
            claims = json.loads(payload)
            if not isinstance(claims, dict):
                return None
            key = self._keys.get(str(claims.get("kid")))
            if key is None:
                return None
            key.verify(_unb64(signature), ADMISSION_CONTEXT + payload)
        except (ValueError, TypeError, binascii.Error, InvalidSignature):
            return None
        return {str(name): value for name, value in claims.items()}


def _b64(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Decode unpadded base64url strictly (ValueError on anything else)."""
    if not text or any(c not in _ALPHABET for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_ALPHABET: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
