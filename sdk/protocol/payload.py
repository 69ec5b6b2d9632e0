"""The plaintext of a sync envelope: one contribution, its byte layout and its strict decoder.

A :class:`Contribution` is what one device reports in one sync: its
sync-domain pseudonym, a per-device sequence number, a coarse day bucket, the
model version and persona it was assigned under, and its clipped feature
contribution. :mod:`edgepersona.sdk.protocol.envelope` seals it (HPKE) and
opens it; this module only packs and unpacks the plaintext, so a port can
test its payload codec on its own.

Payload (plaintext, P = 25 + L + 8n bytes; 185 B for L = 32, n = 16)::

    offset  size  field
    0       8     sequence number, uint64, per device
    8       4     pseudonym epoch, uint32
    12      4     day bucket, uint32, whole days since 1970-01-01 UTC
    16      4     model version, uint32, equal to the header's
    20      2     persona index, uint16
    22      2     feature count n, uint16, 1..max_features
    24      1     pseudonym length L in bytes, 8..32
    25      L     pseudonym: the bytes its lowercase hex string spells
    25+L    8n    clipped features, IEEE 754 binary64, all finite

Decoding is strict: any length, count or field out of range raises the one
opaque :class:`InvalidEnvelope` (the payload was authenticated, so a bad one
means a broken or hostile sender).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import struct
from typing import Final

from edgepersona.sdk.errors import InputError, InvalidEnvelope

__all__ = [
    "MIN_PAYLOAD_BYTES",
    "SECONDS_PER_DAY",
    "UINT16_MAX",
    "Contribution",
    "check_uint",
    "day_bucket",
    "decode_payload",
    "encode_payload",
]

SECONDS_PER_DAY: Final = 86_400  # seconds
UINT16_MAX: Final = 2**16 - 1
_UINT32_MAX: Final = 2**32 - 1
_PAYLOAD_HEAD = struct.Struct(">QIIIHHB")  # seq, epoch, day, model, persona, n, L
_FEATURE = struct.Struct(">d")
MIN_PAYLOAD_BYTES: Final = _PAYLOAD_HEAD.size  # bytes; before the pseudonym and the features
_PSEUDONYM_HEX_CHARS: Final = frozenset("0123456789abcdef")
_PSEUDONYM_MIN_BYTES: Final = 8  # 64-bit pseudonym, 16 hex characters
_PSEUDONYM_MAX_BYTES: Final = 32  # 256-bit pseudonym, 64 hex characters


def check_uint(name: str, value: object, maximum: int, *, minimum: int = 0) -> int:
    """Check an int-like (not bool) within ``minimum..maximum``.

    Args:
        name: the field's name in the message.
        value: the value to check.
        maximum: the largest value allowed.
        minimum: the smallest value allowed.

    Returns:
        The value as an ``int``.

    Raises:
        InputError: it is not an integer (bools are not) or out of range.
    """
    if type(value) is int:  # fast path: the ABC check below costs ~1 us
        number = value
    elif not isinstance(value, bool) and isinstance(value, numbers.Integral):
        number = int(value)
    else:
        raise InputError(f"{name} must be an integer, got {type(value).__name__}")
    if not minimum <= number <= maximum:
        raise InputError(f"{name} must be in {minimum}..{maximum}, got {number}")
    return number


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Contribution:
    """One device's sync contribution: the exact, complete envelope payload.

    Every field is validated on construction, so a ``Contribution`` that
    exists can be sealed. Integer fields accept any ``int``-like (not
    ``bool``); ``features`` accepts any iterable of finite real numbers and is
    stored as a tuple of ``float``. The pseudonym is left out of ``repr`` so
    that logging a contribution does not log a linkable identifier.

    Attributes:
        pseudonym: Sync-domain pseudonym, 16 to 64 lowercase hex characters.
        pseudonym_epoch: Rotation epoch of the pseudonym, uint32.
        sequence: Per-device sequence number, uint64, for replay detection.
        day_bucket: Whole days since the Unix epoch (see :func:`day_bucket`).
        model_version: Version of the model bundle that assigned the persona.
        persona_index: Index of the assigned persona, uint16.
        features: Clipped feature contribution, one finite float per feature.
    """

    pseudonym: str = dataclasses.field(repr=False)
    pseudonym_epoch: int
    sequence: int
    day_bucket: int
    model_version: int
    persona_index: int
    features: tuple[float, ...]

    def __post_init__(self) -> None:
        _check_pseudonym(self.pseudonym)
        for name, label, maximum in _INT_FIELDS:
            object.__setattr__(self, name, check_uint(label, getattr(self, name), maximum))
        object.__setattr__(self, "features", _check_features(self.features))


_INT_FIELDS: Final = tuple(  # (attribute, name in messages, largest value)
    (name, f"Contribution.{name}", 2**bits - 1)
    for name, bits in [
        ("pseudonym_epoch", 32),
        ("sequence", 64),
        ("day_bucket", 32),
        ("model_version", 32),
        ("persona_index", 16),
    ]
)


def day_bucket(at: float) -> int:
    """Return the day bucket of a POSIX timestamp: whole UTC days since 1970-01-01.

    The envelope carries this coarse bucket, never an exact time. The caller
    passes the clock reading; nothing here reads a clock.

    Args:
        at: Seconds since the Unix epoch, e.g. ``time.time()``.

    Returns:
        ``floor(at / 86400)``, a uint32.

    Raises:
        InputError: If ``at`` is not a finite, non-negative number of seconds
            within the uint32 day range.
    """
    seconds = _finite_float(at)
    if seconds is None or seconds < 0:
        raise InputError(f"day_bucket(at) needs finite POSIX seconds after 1970, got {at!r}")
    return check_uint("day bucket", int(seconds // SECONDS_PER_DAY), _UINT32_MAX)


def _check_pseudonym(value: object) -> None:
    """Check the pseudonym's shape; the value is never echoed (it may be an identifier)."""
    if not isinstance(value, str):
        raise InputError(f"Contribution.pseudonym must be a str, got {type(value).__name__}")
    if not (
        2 * _PSEUDONYM_MIN_BYTES <= len(value) <= 2 * _PSEUDONYM_MAX_BYTES
        and len(value) % 2 == 0
        and _PSEUDONYM_HEX_CHARS.issuperset(value)
    ):
        raise InputError(
            "Contribution.pseudonym must be an even number (16 to 64) of lowercase hex "
            f"characters, as the sync-domain pseudonymizer emits; got {len(value)} characters "
            "that do not fit (value not shown: it may be an identifier)"
        )


def _check_features(values: object) -> tuple[float, ...]:
    """Check the feature contribution is 1..65535 finite reals; return floats."""
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise InputError(f"Contribution.features must be a sequence of floats, got {type(values).__name__}")
    features = tuple(values)
    if not 1 <= len(features) <= UINT16_MAX:
        raise InputError(f"Contribution.features needs 1..{UINT16_MAX} values, got {len(features)}")
    checked = []
    for index, value in enumerate(features):
        number = _finite_float(value)
        if number is None:
            raise InputError(
                f"Contribution.features[{index}] must be a finite number, got {value!r}; "
                "clip features to their bounds before sealing"
            )
        checked.append(number)
    return tuple(checked)


def _finite_float(value: object) -> float | None:
    """Convert a real number (not a bool) to a finite float; None if it is not one."""
    if type(value) is float:  # fast path: ABC checks below cost ~1 us per value
        return value if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def encode_payload(contribution: Contribution) -> bytes:
    """Pack a (validated) contribution into the payload layout of the module docstring."""
    pseudonym = bytes.fromhex(contribution.pseudonym)
    head = _PAYLOAD_HEAD.pack(
        contribution.sequence,
        contribution.pseudonym_epoch,
        contribution.day_bucket,
        contribution.model_version,
        contribution.persona_index,
        len(contribution.features),
        len(pseudonym),
    )
    features = struct.pack(f">{len(contribution.features)}d", *contribution.features)
    return head + pseudonym + features


def decode_payload(payload: bytes, header_model_version: int, max_features: int) -> Contribution:
    """Strictly unpack an authenticated payload; anything off raises InvalidEnvelope."""
    if len(payload) < _PAYLOAD_HEAD.size:
        raise InvalidEnvelope() from None
    sequence, epoch, day, model_version, persona, count, pseudonym_length = _PAYLOAD_HEAD.unpack_from(payload)
    expected_length = _PAYLOAD_HEAD.size + pseudonym_length + count * _FEATURE.size
    if (
        model_version != header_model_version
        or not 1 <= count <= max_features
        or not _PSEUDONYM_MIN_BYTES <= pseudonym_length <= _PSEUDONYM_MAX_BYTES
        or len(payload) != expected_length
    ):
        raise InvalidEnvelope() from None
    offset = _PAYLOAD_HEAD.size + pseudonym_length
    features = struct.unpack_from(f">{count}d", payload, offset)
    try:
        return Contribution(
            pseudonym=payload[_PAYLOAD_HEAD.size : offset].hex(),
            pseudonym_epoch=epoch,
            sequence=sequence,
            day_bucket=day,
            model_version=model_version,
            persona_index=persona,
            features=features,
        )
    except InputError:
        raise InvalidEnvelope() from None
