"""Keyed, domain-separated, epoch-rotated pseudonyms of raw ids (a safe recipe).

A pseudonym is an HMAC-SHA256 of the raw id under a secret that never leaves
the device. A plain hash of an id is never a pseudonym: anyone can hash every
plausible id (``user-0000000`` ... ``user-9999999``) and read the ids back.
Without the secret, the same dictionary attack finds nothing.

Construction (version 1; other SDKs must reproduce it byte for byte)::

    enc(f1, ..., fn)  = len(f1) || f1 || ... || len(fn) || fn
                        (each len a 4-byte big-endian unsigned int)
    key_id            = HMAC(secret, enc(LABEL, "key-id", u64(period_s)))[:8]
    epoch             = floor(at / period_s)
    K(domain, epoch)  = HMAC(secret, enc(LABEL, "derive", domain, u64(period_s), i64(epoch)))
    value             = HMAC(K(domain, epoch), enc(LABEL, "id", domain, utf8(raw_id)))

with ``HMAC = HMAC-SHA256``, ``LABEL = "edgepersona/pseudonym/v1"``, all text
UTF-8 and integers big-endian. A per-subject salt (see :meth:`Pseudonymizer.salted`)
replaces the secret by ``HMAC(secret, enc(LABEL, "subject-salt", salt))`` and
otherwise changes nothing. ``value`` and ``key_id`` are rendered as
lowercase hex (32 and 8 bytes). Length-prefixing makes every input
unambiguous: ``("ab", "c")`` and ``("a", "bc")`` encode differently.

Properties:

* **domain separation**: ``local`` (on-device storage) and ``sync`` (sent to
  the collector) pseudonyms of the same id are unlinkable without the secret;
* **rotation**: a new epoch (default every 30 days) derives a new key, so
  pseudonyms of different epochs are unlinkable too;
* **a fresh start**: a device that forgets a subject drops its salt, and the
  subject's next salt is random, so its pseudonyms before and after cannot be
  linked, by the collector or by anything left on the device;
* each :class:`Pseudonym` carries the key id, the epoch and the domain, so a
  receiver only compares pseudonyms that are comparable.

The secret is 32 bytes from :mod:`secrets`; keep it in the encrypted store or
the platform keystore (see :class:`SecretProvider`). It never appears in a
repr, a str or a pickle.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import struct
from dataclasses import dataclass
from typing import Final, Literal, NoReturn, Protocol, get_args, runtime_checkable

from edgepersona.sdk.errors import InputError

__all__ = [
    "DEFAULT_EPOCH_PERIOD_S",
    "Pseudonym",
    "PseudonymDomain",
    "Pseudonymizer",
    "SecretProvider",
]

PseudonymDomain = Literal["local", "sync"]
"""Where a pseudonym is used: ``local`` storage on the device or ``sync`` to the collector."""

DEFAULT_EPOCH_PERIOD_S: Final = 30 * 24 * 3600  # seconds (30 days)

_DOMAINS: Final = frozenset(get_args(PseudonymDomain))
_LABEL: Final = b"edgepersona/pseudonym/v1"
_SECRET_BYTES: Final = 32  # bytes
_KEY_ID_BYTES: Final = 8  # bytes
_MIN_SALT_BYTES: Final = 16  # bytes, a subject's salt
_MAX_CACHED_KEYS: Final = 16  # keyed (domain, epoch) HMAC states kept in memory


def _encode_fields(*fields: bytes) -> bytes:
    """Length-prefix each field so that no two field tuples share an encoding."""
    return b"".join(struct.pack(">I", len(field)) + field for field in fields)


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    """One-shot HMAC-SHA256 (the C fast path of :func:`hmac.digest`)."""
    return hmac.digest(key, message, hashlib.sha256)


@dataclass(frozen=True, slots=True)
class Pseudonym:
    """A pseudonym and what is needed to know which pseudonyms it is comparable with.

    Two pseudonyms name the same raw id only if all four fields are equal.

    Attributes:
        value: 64 lowercase hex characters (32 bytes of HMAC-SHA256).
        key_id: 16 lowercase hex characters naming the secret and rotation period.
        epoch: ``floor(at / period_s)`` of the time the pseudonym was made for.
        domain: the domain it belongs to (``local`` or ``sync``).
    """

    value: str
    key_id: str
    epoch: int
    domain: PseudonymDomain


@runtime_checkable
class SecretProvider(Protocol):
    """Supplies the pseudonym secret, e.g. from the platform keystore of the app."""

    def load_secret(self) -> bytes:
        """Return the device/app pseudonym secret (at least 32 random bytes).

        Returns:
            The secret bytes.
        """
        ...


class Pseudonymizer:
    """Turns raw ids into keyed pseudonyms; holds the secret and never shows it.

    Safe to share between threads: its only mutable state is a small cache of
    keyed HMAC states, which are copied, never updated, once cached.

    Args:
        secret: at least 32 secret random bytes; see :meth:`generate`.
        period_s: epoch length in seconds (default 30 days).

    Raises:
        TypeError: ``secret`` is not bytes or ``period_s`` is not an int.
        InputError: ``secret`` is shorter than 32 bytes or ``period_s`` < 1.
    """

    __slots__ = ("_key_id", "_macs", "_period_s", "_secret")

    def __init__(self, secret: bytes, *, period_s: int = DEFAULT_EPOCH_PERIOD_S) -> None:
        if not isinstance(secret, bytes):
            raise TypeError(f"secret must be bytes, got {type(secret).__name__}")
        if len(secret) < _SECRET_BYTES:
            raise InputError(
                f"pseudonym secret must be at least {_SECRET_BYTES} bytes, got {len(secret)}; "
                "make one with Pseudonymizer.generate()"
            )
        if not isinstance(period_s, int) or isinstance(period_s, bool):
            raise TypeError(f"period_s must be an int (seconds), got {type(period_s).__name__}")
        if period_s < 1:
            raise InputError(f"period_s must be at least 1 second, got {period_s}")
        self._secret = secret
        self._period_s = period_s
        tag = _encode_fields(_LABEL, b"key-id", struct.pack(">Q", period_s))
        self._key_id = _hmac_sha256(secret, tag)[:_KEY_ID_BYTES].hex()
        self._macs: dict[tuple[str, int], hmac.HMAC] = {}

    @classmethod
    def generate(cls, *, period_s: int = DEFAULT_EPOCH_PERIOD_S) -> Pseudonymizer:
        """Create a pseudonymizer with a fresh 32-byte secret from :mod:`secrets`.

        Persist it with :meth:`export_secret` (into the encrypted store), or
        every restart makes new, unlinkable pseudonyms.

        Args:
            period_s: epoch length in seconds.

        Returns:
            A new pseudonymizer.

        Raises:
            InputError: ``period_s`` < 1.
        """
        return cls(secrets.token_bytes(_SECRET_BYTES), period_s=period_s)

    @classmethod
    def from_provider(
        cls, provider: SecretProvider, *, period_s: int = DEFAULT_EPOCH_PERIOD_S
    ) -> Pseudonymizer:
        """Create a pseudonymizer from a secret held by an app keystore.

        Args:
            provider: object whose ``load_secret()`` returns the secret.
            period_s: epoch length in seconds.

        Returns:
            A pseudonymizer over the provided secret.

        Raises:
            TypeError: the provider returned something other than bytes.
            InputError: the secret is shorter than 32 bytes or ``period_s`` < 1.
        """
        return cls(provider.load_secret(), period_s=period_s)

    @property
    def key_id(self) -> str:
        """Public id of the (secret, period) pair: 16 hex characters, safe to log."""
        return self._key_id

    @property
    def period_s(self) -> int:
        """Epoch length in seconds."""
        return self._period_s

    def epoch(self, at: float) -> int:
        """Return the epoch number that contains the unix time ``at``.

        Args:
            at: unix time in seconds (finite, not negative).

        Returns:
            ``floor(at / period_s)``.

        Raises:
            InputError: ``at`` is not a finite, non-negative number.
        """
        if isinstance(at, bool) or not isinstance(at, int | float):
            raise InputError(f"at must be a unix time in seconds, got {type(at).__name__}")
        if not math.isfinite(at) or at < 0:
            raise InputError(f"at must be a finite unix time >= 0 seconds, got {at!r}")
        return int(at // self._period_s)

    def pseudonym(self, raw_id: str, *, domain: PseudonymDomain, at: float) -> Pseudonym:
        """Return the pseudonym of ``raw_id`` in ``domain`` for the epoch containing ``at``.

        Args:
            raw_id: the identifier to hide (non-empty text).
            domain: ``"local"`` for on-device use, ``"sync"`` for what leaves the device.
            at: unix time in seconds (pass the clock in; see STYLE habit 6).

        Returns:
            The pseudonym with its key id, epoch and domain.

        Raises:
            TypeError: ``raw_id`` is not a str.
            InputError: empty or non-UTF-8-encodable ``raw_id``, unknown domain,
                or an invalid time.
        """
        if not isinstance(raw_id, str):
            raise TypeError(f"raw_id must be a str, got {type(raw_id).__name__}")
        if not raw_id:
            raise InputError("raw_id must be a non-empty string")
        if domain not in _DOMAINS:
            raise InputError(f"unknown pseudonym domain {domain!r}; expected one of {sorted(_DOMAINS)}")
        try:
            id_bytes = raw_id.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("raw_id is not encodable as UTF-8 (lone surrogate?)") from None
        epoch = self.epoch(at)
        mac = self._id_mac(domain, epoch).copy()
        mac.update(struct.pack(">I", len(id_bytes)) + id_bytes)
        value = mac.hexdigest()
        return Pseudonym(value=value, key_id=self._key_id, epoch=epoch, domain=domain)

    def salted(self, salt: bytes) -> Pseudonymizer:
        """Return the pseudonymizer of one subject's generation, keyed by its own salt.

        A device keeps a random salt per subject and drops it when the subject
        is forgotten; the subject's next salt is new, so nothing links its
        pseudonyms before and after (without the old salt, not even this secret).

        Args:
            salt: at least 16 random bytes, kept with the subject's state.

        Returns:
            A pseudonymizer over ``HMAC(secret, enc(LABEL, "subject-salt", salt))``,
            with the same epoch period.

        Raises:
            TypeError: ``salt`` is not bytes.
            InputError: ``salt`` is shorter than 16 bytes.
        """
        if not isinstance(salt, bytes):
            raise TypeError(f"salt must be bytes, got {type(salt).__name__}")
        if len(salt) < _MIN_SALT_BYTES:
            raise InputError(f"a subject salt must be at least {_MIN_SALT_BYTES} bytes, got {len(salt)}")
        secret = _hmac_sha256(self._secret, _encode_fields(_LABEL, b"subject-salt", salt))
        return Pseudonymizer(secret, period_s=self._period_s)

    def export_secret(self) -> bytes:
        """Return the secret so the app can persist it (encrypted store or keystore only).

        Returns:
            The raw secret bytes. Never log, print or send them.
        """
        return self._secret

    def _id_mac(self, domain: str, epoch: int) -> hmac.HMAC:
        """HMAC keyed by K(domain, epoch) and fed the fixed prefix; copied per id (hot path)."""
        mac = self._macs.get((domain, epoch))
        if mac is None:
            domain_bytes = domain.encode("ascii")
            info = _encode_fields(
                _LABEL,
                b"derive",
                domain_bytes,
                struct.pack(">Q", self._period_s),
                struct.pack(">q", epoch),
            )
            mac = hmac.new(_hmac_sha256(self._secret, info), digestmod=hashlib.sha256)
            mac.update(_encode_fields(_LABEL, b"id", domain_bytes))
            if len(self._macs) >= _MAX_CACHED_KEYS:
                self._macs.clear()
            self._macs[(domain, epoch)] = mac
        return mac

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_id={self._key_id!r}, period_s={self._period_s})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "a Pseudonymizer holds a secret and cannot be pickled or copied; "
            "persist export_secret() in the encrypted store instead"
        )
