"""The body of ``POST /v1/sync``: one sealed envelope, or a batch of them.

Framing (all integers big-endian)::

    single envelope: the envelope bytes exactly as sealed; they start with
                     b"EP" and the envelope format version 1

    batch:           offset  size  field
                     0       3     magic b"EPB"
                     3       1     batch framing version, 1
                     4       2     envelope count n, uint16, 1..65_535
                     6       ...   n times: uint32 length L (1..65_535), then L bytes

A batch ends exactly after its last envelope. An envelope's third byte is its
format version (0x01) and a batch's is ``B`` (0x42), so the two never collide.
An empty envelope slot or trailing bytes make the whole body malformed; what
is inside each slot is judged envelope by envelope. The device writes bodies
with :func:`encode_batch`; the collector reads them with :func:`read_batch_head`
and :func:`decode_batch`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from edgepersona.sdk.errors import InputError

__all__ = [
    "BATCH_MAGIC",
    "BATCH_VERSION",
    "MAX_SLOT_BYTES",
    "decode_batch",
    "encode_batch",
    "is_batch",
    "read_batch_head",
]

BATCH_MAGIC: Final = b"EPB"
BATCH_VERSION: Final = 1
MAX_SLOT_BYTES: Final = 65_535  # bytes; far above any envelope the SDK seals
_BATCH_HEAD = struct.Struct(">3sBH")  # magic, framing version, envelope count
_LENGTH = struct.Struct(">I")


def is_batch(body: bytes) -> bool:
    """Tell a batch body from a single envelope (by its magic).

    Args:
        body: A ``POST /v1/sync`` body.

    Returns:
        True when the body starts with the batch magic.
    """
    return body.startswith(BATCH_MAGIC)


def encode_batch(envelopes: Sequence[bytes]) -> bytes:
    """Frame envelopes as one ``POST /v1/sync`` body.

    Args:
        envelopes: 1..65,535 sealed envelopes.

    Returns:
        The body.

    Raises:
        InputError: no envelopes, too many, or an empty one.
    """
    if not 1 <= len(envelopes) <= 0xFFFF:
        raise InputError(f"a batch holds 1..65535 envelopes, got {len(envelopes)}")
    if any(not 1 <= len(e) <= MAX_SLOT_BYTES for e in envelopes):
        raise InputError(f"every envelope in a batch must be 1..{MAX_SLOT_BYTES} bytes")
    parts = [_BATCH_HEAD.pack(BATCH_MAGIC, BATCH_VERSION, len(envelopes))]
    for envelope in envelopes:
        parts += [_LENGTH.pack(len(envelope)), envelope]
    return b"".join(parts)


def read_batch_head(body: bytes) -> int:
    """Check a batch's header and return how many envelopes it declares.

    Args:
        body: A batch body (see :func:`is_batch`).

    Returns:
        The declared envelope count (1..65,535).

    Raises:
        InputError: the header is truncated, of another version, or declares no envelope.
    """
    if len(body) < _BATCH_HEAD.size:
        raise InputError("the batch header is truncated")
    magic, version, count = _BATCH_HEAD.unpack_from(body)
    if magic != BATCH_MAGIC or version != BATCH_VERSION or count == 0:
        raise InputError(f"expected batch framing version {BATCH_VERSION} and 1+ envelopes")
    return int(count)


def decode_batch(body: bytes) -> list[bytes]:
    """Split a body written by :func:`encode_batch` (strict: no trailing bytes).

    Args:
        body: the batch body.

    Returns:
        The envelopes.

    Raises:
        InputError: the body is not a well-formed batch.
    """
    count = read_batch_head(body)
    envelopes, offset = [], _BATCH_HEAD.size
    for index in range(count):
        if offset + _LENGTH.size > len(body):
            raise InputError(f"batch ends before envelope {index}'s length")
        (length,) = _LENGTH.unpack_from(body, offset)
        offset += _LENGTH.size
        if not 1 <= length <= MAX_SLOT_BYTES or offset + length > len(body):
            raise InputError(f"envelope {index} declares an impossible length")
        envelopes.append(body[offset:offset + length])
        offset += length
    if offset != len(body):
        raise InputError(f"{len(body) - offset} bytes follow the last envelope of the batch")
    return envelopes
