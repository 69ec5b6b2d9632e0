"""The body of ``POST /v1/sync``: one sealed envelope, or a batch of them.

Framing (all integers big-endian)::

    single envelope: the envelope bytes exactly as sealed; they start with
                     b"EP" and the envelope format version 1

    batch:           offset  size  field
                     0       3     magic b"EPB"
                     3       1     batch framing version, 1
                     4       2     envelope count n, uint16, 1..max_envelopes
                     6       ...   n times: uint32 length L (1..65_535), then L bytes

A batch ends exactly after its last envelope. An envelope's third byte is its
format version (0x01) and a batch's is ``B`` (0x42), so the two never collide.
An empty envelope slot or trailing bytes make the whole body malformed; what
is inside each slot is judged envelope by envelope.
"""

from __future__ import annotations

import struct
from typing import Final

from edgepersona.sdk import InputError
from edgepersona.sdk._sync import decode_batch, encode_batch

from ._outcomes import Outcome

__all__ = ["BATCH_MAGIC", "FramingError", "encode_batch", "split_body"]

BATCH_MAGIC: Final = b"EPB"
BATCH_VERSION: Final = 1
_BATCH_HEAD = struct.Struct(">3sBH")  # magic, framing version, envelope count


class FramingError(InputError):
    """The body cannot be split into envelopes; ``outcome`` says why."""

    def __init__(self, message: str, outcome: Outcome = Outcome.MALFORMED_BODY) -> None:
        super().__init__(message)
        self.outcome = outcome


def split_body(body: bytes, *, max_envelopes: int) -> tuple[list[bytes], bool]:
    """Split a sync body into its envelopes.

    Args:
        body: The request body.
        max_envelopes: The largest batch accepted.

    Returns:
        ``(envelopes, is_batch)``: a single envelope gives a one-item list.

    Raises:
        FramingError: The body is empty, a batch is malformed (outcome
            ``MALFORMED_BODY``) or holds more than ``max_envelopes``
            envelopes (outcome ``TOO_MANY_ENVELOPES``).
    """
    if not body:
        raise FramingError("the body is empty; send one envelope or a batch")
    if not body.startswith(BATCH_MAGIC):
        return [body], False
    if len(body) < _BATCH_HEAD.size:
        raise FramingError("the batch header is truncated")
    _, version, count = _BATCH_HEAD.unpack_from(body)
    if version != BATCH_VERSION or count == 0:
        raise FramingError(f"expected batch framing version {BATCH_VERSION} and 1+ envelopes")
    if count > max_envelopes:
        raise FramingError(f"the batch holds {count} envelopes, at most {max_envelopes} are accepted",
                           Outcome.TOO_MANY_ENVELOPES)
    try:
        return decode_batch(body), True
    except InputError as exc:
        raise FramingError(str(exc)) from None
