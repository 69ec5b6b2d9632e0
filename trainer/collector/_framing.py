"""Splitting the body of ``POST /v1/sync`` into envelopes, with the collector's outcomes.

The wire format is :mod:`edgepersona.sdk.protocol.framing` (one definition for
both sides); this module maps its errors to the collector's outcome codes.
"""

from __future__ import annotations

from edgepersona.sdk import InputError
from edgepersona.sdk.protocol.framing import (
    BATCH_MAGIC,
    decode_batch,
    encode_batch,
    is_batch,
    read_batch_head,
)
from edgepersona.trainer.collector._outcomes import Outcome

__all__ = ["BATCH_MAGIC", "FramingError", "encode_batch", "split_body"]


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
    if not is_batch(body):
        return [body], False
    try:
        count = read_batch_head(body)
    except InputError as exc:
        raise FramingError(str(exc)) from None
    if count > max_envelopes:
        raise FramingError(f"the batch holds {count} envelopes, at most {max_envelopes} are accepted",
                           Outcome.TOO_MANY_ENVELOPES)
    try:
        return decode_batch(body), True
    except InputError as exc:
        raise FramingError(str(exc)) from None
