"""Sync body framing: single envelopes pass through, batches round-trip, junk is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from edgepersona.sdk import InputError
from edgepersona.trainer.collector import FramingError, Outcome, encode_batch, split_body

SLOTS = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=20)


@given(SLOTS)
def test_batches_round_trip(envelopes: list[bytes]) -> None:
    assert split_body(encode_batch(envelopes), max_envelopes=20) == (envelopes, True)


@given(st.binary(min_size=1, max_size=400))
def test_any_body_splits_or_is_refused_as_framing(body: bytes) -> None:
    try:
        envelopes, batch = split_body(body, max_envelopes=8)
    except FramingError as exc:
        assert exc.outcome in {Outcome.MALFORMED_BODY, Outcome.TOO_MANY_ENVELOPES}
    else:
        assert batch or envelopes == [body]
        assert 1 <= len(envelopes) <= 8


def test_an_envelope_is_not_a_batch() -> None:
    envelope = b"EP\x01\x01" + bytes(100)
    assert split_body(envelope, max_envelopes=1) == ([envelope], False)


@given(SLOTS, st.integers(0, 40))
def test_truncated_batches_are_malformed(envelopes: list[bytes], cut: int) -> None:
    body = encode_batch(envelopes)
    with pytest.raises(FramingError) as error:
        split_body(body[: max(0, len(body) - 1 - cut)], max_envelopes=20)
    assert error.value.outcome is Outcome.MALFORMED_BODY


def test_batch_size_limits() -> None:
    with pytest.raises(FramingError) as error:
        split_body(encode_batch([b"a"] * 3), max_envelopes=2)
    assert error.value.outcome is Outcome.TOO_MANY_ENVELOPES
    for bad in ([], [b""], [b"x" * 65_536]):
        with pytest.raises(InputError):
            encode_batch(bad)
