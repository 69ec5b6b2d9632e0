r"""Sealed sync envelopes: the device seals a contribution, the collector opens it.

A :class:`Contribution` is what one device reports in one sync (it and its
payload codec live in :mod:`edgepersona.sdk.protocol.payload` and are
importable from here too). :class:`Sealer` encrypts it to the collector's
public key with HPKE (RFC 9180, base mode, single shot); :class:`Opener` is
the collector side. Any failure to open raises the same opaque
:class:`InvalidEnvelope`.

Suites (HKDF-SHA256 and ChaCha20-Poly1305 in both)::

    id  SealSuite          KEM                    enc      envelope*
    1   X25519 (default)   DHKEM(X25519, SHA256)  32 B     245 B
    2   MLKEM768_X25519    MLKEM768-X25519 (PQ)   1120 B   1333 B

    * 16 features and a 64-hex-character pseudonym: 12 + enc + 185 + 16 bytes.

Wire format (all integers big-endian)::

    offset  size  field
    0       2     magic b"EP"
    2       1     format version, 1 (the envelope schema version)
    3       1     suite id (table above)
    4       4     collector key id: SHA-256(suite id || raw public key)[:4]
    8       4     model version, uint32
    12      E     HPKE encapsulated key (E = 32 or 1120)
    12+E    P+16  ChaCha20-Poly1305 ciphertext of the payload, then its tag

The 12-byte header is readable by anyone; it holds nothing about the user.
HPKE ``info`` binds it, the app id and the schema version, so an altered
header, another app id or another model version fails to open::

    info = b"edgepersona/sync-envelope\x00" || uint8 len(app id) || app id (UTF-8)
           || header (12 bytes)

The payload (the plaintext, P bytes) is laid out in
:mod:`edgepersona.sdk.protocol.payload`.

Key files (``generate_collector_keypair``) are PEM-style ASCII armour around
``format byte 1 || suite id || raw key`` with the labels ``EDGEPERSONA
COLLECTOR PUBLIC KEY`` and ``EDGEPERSONA COLLECTOR PRIVATE KEY``; the raw
key layouts are those of :mod:`edgepersona.sdk.protocol.hpke`. The suite travels with
the key, so a sealer and an opener can never disagree on it.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import struct
from collections.abc import Collection
from typing import Final

from edgepersona.sdk.errors import InputError, InvalidEnvelope
from edgepersona.sdk.protocol import hpke as _hpke
from edgepersona.sdk.protocol.payload import (
    MIN_PAYLOAD_BYTES,
    UINT16_MAX,
    Contribution,
    check_uint,
    day_bucket,
    decode_payload,
    encode_payload,
)

__all__ = [
    "Contribution",
    "Opener",
    "SealConfig",
    "SealSuite",
    "Sealer",
    "day_bucket",
    "decode_payload",
    "encode_payload",
    "generate_collector_keypair",
]

FORMAT_VERSION: Final = 1
MAGIC: Final = b"EP"
INFO_LABEL: Final = b"edgepersona/sync-envelope\x00"

_HEADER_PREFIX = struct.Struct(">2sBB4s")  # magic, format version, suite id, key id
_MODEL_VERSION = struct.Struct(">I")  # the header's last field
_HEADER_SIZE: Final = _HEADER_PREFIX.size + _MODEL_VERSION.size
_MAX_APP_ID_BYTES: Final = 255  # UTF-8 bytes; length is one byte inside info
_KEY_FILE_FORMAT: Final = 1
_KEY_HINT: Final = "generate one with `edgepersona keys generate --kind collector`"


class SealSuite(enum.Enum):
    """The HPKE suite an envelope is sealed with; the value is its wire id."""

    X25519 = 1
    MLKEM768_X25519 = 2

    @property
    def _kem(self) -> _hpke.Kem:
        return _hpke.Kem.X25519 if self is SealSuite.X25519 else _hpke.Kem.MLKEM768_X25519


@dataclasses.dataclass(frozen=True, kw_only=True)
class SealConfig:
    """Limits shared by the device and the collector; both must use the same."""

    max_envelope_bytes: int = 65_536  # bytes; longer envelopes are rejected unopened
    max_features: int = 1_024  # features per contribution; at most 65_535

    def __post_init__(self) -> None:
        check_uint("SealConfig.max_envelope_bytes", self.max_envelope_bytes, 2**31 - 1)
        check_uint("SealConfig.max_features", self.max_features, UINT16_MAX, minimum=1)


_DEFAULT_CONFIG: Final = SealConfig()


def generate_collector_keypair(suite: SealSuite = SealSuite.X25519) -> tuple[bytes, bytes]:
    """Generate a collector key pair from the OS CSPRNG, serialized as key files.

    Args:
        suite: The HPKE suite the collector will receive envelopes under.

    Returns:
        ``(private_key_file, public_key_file)``: ASCII PEM-style key files
        (format in the module docstring). Store the private one with mode
        0600 on the collector only; ship the public one to devices.

    Raises:
        InputError: If ``suite`` is not a :class:`SealSuite`.
    """
    if not isinstance(suite, SealSuite):
        raise InputError(f"suite must be a SealSuite, got {suite!r}")
    private_raw = _hpke.generate_private_key(suite._kem)
    public_raw = _hpke.public_key_bytes(suite._kem, private_raw)
    return _armor("PRIVATE", suite, private_raw), _armor("PUBLIC", suite, public_raw)


class Sealer:
    """Device side: seals contributions to one collector's public key for one app.

    Args:
        collector_public_key: The collector's public key file bytes.
        app_id: The app's identifier; the collector must open with the same.
        suite: If given, the suite the key must be for (a pin against
            shipping the wrong key); by default the key file's suite is used.
        config: Limits; must match the collector's.

    Raises:
        InputError: If the key file is malformed, is a private key, is for
            another suite than ``suite``, or ``app_id`` is unusable.
    """

    def __init__(
        self,
        collector_public_key: bytes,
        *,
        app_id: str,
        suite: SealSuite | None = None,
        config: SealConfig = _DEFAULT_CONFIG,
    ) -> None:
        key_suite, raw = _parse_key_file(collector_public_key, "PUBLIC")
        if suite is not None and suite is not key_suite:
            raise InputError(
                f"collector public key is for suite {key_suite.name}, expected {suite!r}; "
                "is this the key of the right collector?"
            )
        try:
            self._public_key = _hpke.load_public_key(key_suite._kem, raw)
        except ValueError:
            raise InputError(f"collector public key is not a valid key; {_KEY_HINT}") from None
        self._suite = key_suite
        self._key_id = _key_id(key_suite, raw)
        self._header_prefix = _header_prefix(key_suite, self._key_id)
        self._info_prefix = _info_prefix(app_id)
        self._config = config

    @property
    def suite(self) -> SealSuite:
        """The HPKE suite envelopes are sealed with."""
        return self._suite

    @property
    def key_id(self) -> str:
        """Hex id of the collector key, as written in every envelope header."""
        return self._key_id.hex()

    def seal(self, contribution: Contribution) -> bytes:
        """Encrypt one contribution into a self-contained envelope.

        Every call uses a fresh ephemeral key, so sealing the same
        contribution twice gives unrelated bytes.

        Args:
            contribution: The payload to seal.

        Returns:
            The envelope bytes (wire format in the module docstring).

        Raises:
            InputError: If ``contribution`` is not a :class:`Contribution`,
                has more features than ``config.max_features``, or the
                envelope would exceed ``config.max_envelope_bytes``.
        """
        if not isinstance(contribution, Contribution):
            raise InputError(f"seal() needs a Contribution, got {type(contribution).__name__}")
        count = len(contribution.features)
        if count > self._config.max_features:
            raise InputError(
                f"contribution has {count} features, at most {self._config.max_features} "
                "can be sealed (SealConfig.max_features)"
            )
        header = self._header_prefix + _MODEL_VERSION.pack(contribution.model_version)
        sealed = _hpke.seal_base(
            self._suite._kem, self._public_key, self._info_prefix + header, encode_payload(contribution)
        )
        envelope = header + sealed
        if len(envelope) > self._config.max_envelope_bytes:
            raise InputError(
                f"envelope would be {len(envelope)} bytes, over the "
                f"{self._config.max_envelope_bytes}-byte limit; send fewer features"
            )
        return envelope


class Opener:
    """Collector side: opens envelopes sealed to its key pair.

    Args:
        collector_private_key: The collector's private key file bytes.
        config: Limits; must match the devices'.

    Raises:
        InputError: If the key file is malformed or is a public key.
    """

    def __init__(self, collector_private_key: bytes, *, config: SealConfig = _DEFAULT_CONFIG) -> None:
        suite, raw = _parse_key_file(collector_private_key, "PRIVATE")
        try:
            self._private_key = _hpke.load_private_key(suite._kem, raw)
            public_raw = _hpke.public_key_bytes(suite._kem, raw)
        except ValueError:
            raise InputError(f"collector private key is not a valid key; {_KEY_HINT}") from None
        self._suite = suite
        self._key_id = _key_id(suite, public_raw)
        self._header_prefix = _header_prefix(suite, self._key_id)
        self._public_key_file = _armor("PUBLIC", suite, public_raw)
        self._config = config
        overhead = _HEADER_SIZE + suite._kem.enc_length + _hpke.TAG_LENGTH
        self._min_length = overhead + MIN_PAYLOAD_BYTES  # bytes; shortest valid envelope

    @property
    def suite(self) -> SealSuite:
        """The HPKE suite this collector key receives."""
        return self._suite

    @property
    def key_id(self) -> str:
        """Hex id of this collector key, as written in every envelope header."""
        return self._key_id.hex()

    @property
    def public_key(self) -> bytes:
        """The public key file devices need to seal to this collector."""
        return self._public_key_file

    def open(
        self,
        envelope: bytes,
        *,
        app_id: str,
        model_versions: Collection[int] | None = None,
    ) -> Contribution:
        """Authenticate, decrypt and strictly decode one envelope.

        Args:
            envelope: The envelope bytes as received.
            app_id: The app the envelope must have been sealed for.
            model_versions: If given, the model versions the collector
                accepts; an envelope for any other version is rejected.

        Returns:
            The contribution, validated like any other.

        Raises:
            InvalidEnvelope: For anything wrong with the envelope (altered,
                truncated, extended, oversized, wrong key, other app or model
                version, malformed payload). Always the same, detail-free.
            InputError: If ``envelope`` is not bytes-like or ``app_id`` is
                unusable (wrong arguments, not a bad envelope).
        """
        if not isinstance(envelope, bytes | bytearray | memoryview):
            raise InputError(f"open() needs the envelope as bytes, got {type(envelope).__name__}")
        info_prefix = _info_prefix(app_id)
        data = bytes(envelope)
        if not self._min_length <= len(data) <= self._config.max_envelope_bytes:
            raise InvalidEnvelope() from None
        (model_version,) = _MODEL_VERSION.unpack_from(data, _HEADER_PREFIX.size)
        if not data.startswith(self._header_prefix) or (
            model_versions is not None and model_version not in model_versions
        ):
            raise InvalidEnvelope() from None
        header, sealed = data[:_HEADER_SIZE], data[_HEADER_SIZE:]
        try:
            payload = _hpke.open_base(self._suite._kem, self._private_key, info_prefix + header, sealed)
        except _hpke.OpenFailedError:
            raise InvalidEnvelope() from None
        return decode_payload(payload, model_version, self._config.max_features)


def _info_prefix(app_id: object) -> bytes:
    """Build the part of HPKE ``info`` that names the app (header bytes follow)."""
    if not isinstance(app_id, str):
        raise InputError(f"app_id must be a str, got {type(app_id).__name__}")
    encoded = app_id.encode("utf-8", errors="surrogatepass")  # never raises
    if not 1 <= len(encoded) <= _MAX_APP_ID_BYTES:
        raise InputError(f"app_id must be 1..{_MAX_APP_ID_BYTES} UTF-8 bytes, got {len(encoded)}")
    return INFO_LABEL + bytes([len(encoded)]) + encoded


def _header_prefix(suite: SealSuite, key_id: bytes) -> bytes:
    """Build the fixed part of the header, which every envelope to a key shares."""
    return _HEADER_PREFIX.pack(MAGIC, FORMAT_VERSION, suite.value, key_id)


def _key_id(suite: SealSuite, public_raw: bytes) -> bytes:
    """Name a collector key in envelope headers so a collector can pick its key."""
    return hashlib.sha256(bytes([suite.value]) + public_raw).digest()[:4]


def _armor(kind: str, suite: SealSuite, raw: bytes) -> bytes:
    """Write a key file: PEM-style armour around format byte, suite id and raw key."""
    body = base64.b64encode(bytes([_KEY_FILE_FORMAT, suite.value]) + raw).decode("ascii")
    lines = [body[start : start + 64] for start in range(0, len(body), 64)]
    label = f"EDGEPERSONA COLLECTOR {kind} KEY"
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def _parse_key_file(data: object, kind: str) -> tuple[SealSuite, bytes]:
    """Read a key file written by :func:`_armor`; InputError says what is wrong."""
    what, label = f"collector {kind.lower()} key", f"EDGEPERSONA COLLECTOR {kind} KEY"
    if not isinstance(data, bytes):
        raise InputError(f"{what} must be the key file's bytes, got {type(data).__name__}")
    text = data.decode("ascii", errors="replace").strip()
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if not (text.startswith(begin) and text.endswith(end)):
        other = "private" if kind == "PUBLIC" else "public"
        hint = f"this is the {other} key file" if other.upper() in text[:40] else _KEY_HINT
        raise InputError(f"{what} is not a '{label}' file; {hint}")
    try:
        body = base64.b64decode("".join(text[len(begin) : -len(end)].split()), validate=True)
    except ValueError:  # binascii.Error is a ValueError
        raise InputError(f"{what} file has a corrupt base64 body; {_KEY_HINT}") from None
    if len(body) < 2 or body[0] != _KEY_FILE_FORMAT or body[1] not in {s.value for s in SealSuite}:
        raise InputError(f"{what} file has an unknown format or suite; {_KEY_HINT}")
    suite, raw = SealSuite(body[1]), body[2:]
    expected = suite._kem.public_length if kind == "PUBLIC" else suite._kem.private_length
    if len(raw) != expected:
        raise InputError(f"{what} for {suite.name} must hold {expected} bytes, got {len(raw)}")
    return suite, raw
