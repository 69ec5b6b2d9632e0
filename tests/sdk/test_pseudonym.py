"""Keyed pseudonyms: determinism, key/domain/epoch separation, and the dictionary attack."""

from __future__ import annotations

import copy
import hashlib
import hmac
import pickle
import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import assume, given, strategies as st

from edgepersona.sdk._pseudonym import (
    DEFAULT_EPOCH_PERIOD_S,
    Pseudonym,
    Pseudonymizer,
    SecretProvider,
    _encode_fields,
)
from edgepersona.sdk.errors import InputError

SECRET = bytes(range(32))
NOW = 1_750_000_000.0  # a fixed clock: 2025-06-15
DOMAINS = ("local", "sync")

ids = st.text(min_size=1, max_size=64)
secrets_ = st.binary(min_size=32, max_size=64)
domains = st.sampled_from(DOMAINS)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)


def _spec_value(secret: bytes, raw_id: str, domain: str, epoch: int, period_s: int) -> str:
    """The construction exactly as the module docstring states it, written out independently."""

    def enc(*fields: bytes) -> bytes:
        return b"".join(len(f).to_bytes(4, "big") + f for f in fields)

    label = b"edgepersona/pseudonym/v1"
    key = hmac.new(
        secret,
        enc(
            label,
            b"derive",
            domain.encode(),
            period_s.to_bytes(8, "big"),
            epoch.to_bytes(8, "big", signed=True),
        ),
        "sha256",
    ).digest()
    return hmac.new(key, enc(label, b"id", domain.encode(), raw_id.encode()), "sha256").hexdigest()


def test_known_answer_vector() -> None:
    p = Pseudonymizer(SECRET)
    got = p.pseudonym("a", domain="local", at=0.0)
    assert got == Pseudonym(
        value="e81ea530c79fee3806bfc9aec3a38cdcee87fcc55439d74e86cec53ae01679fa",
        key_id="b858f3fba9c34092",
        epoch=0,
        domain="local",
    )


@given(secret=secrets_, raw_id=ids, domain=domains, at=times)
def test_matches_documented_construction(secret: bytes, raw_id: str, domain: str, at: float) -> None:
    p = Pseudonymizer(secret)
    got = p.pseudonym(raw_id, domain=domain, at=at)  # type: ignore[arg-type]
    epoch = int(at // DEFAULT_EPOCH_PERIOD_S)
    assert got.epoch == epoch
    assert got.value == _spec_value(secret, raw_id, domain, epoch, DEFAULT_EPOCH_PERIOD_S)
    assert len(bytes.fromhex(got.value)) == 32


@given(secret=secrets_, raw_id=ids, domain=domains, at=times)
def test_same_inputs_give_same_pseudonym(secret: bytes, raw_id: str, domain: str, at: float) -> None:
    a = Pseudonymizer(secret).pseudonym(raw_id, domain=domain, at=at)  # type: ignore[arg-type]
    b = Pseudonymizer(secret).pseudonym(raw_id, domain=domain, at=at)  # type: ignore[arg-type]
    assert a == b


@given(raw_id=ids, other=ids, domain=domains, at=times)
def test_different_ids_differ(raw_id: str, other: str, domain: str, at: float) -> None:
    assume(raw_id != other)
    p = Pseudonymizer(SECRET)
    assert (
        p.pseudonym(raw_id, domain=domain, at=at).value  # type: ignore[arg-type]
        != p.pseudonym(other, domain=domain, at=at).value  # type: ignore[arg-type]
    )


@given(secret=secrets_, other=secrets_, raw_id=ids, domain=domains, at=times)
def test_different_secrets_differ(secret: bytes, other: bytes, raw_id: str, domain: str, at: float) -> None:
    assume(secret != other)
    a = Pseudonymizer(secret).pseudonym(raw_id, domain=domain, at=at)  # type: ignore[arg-type]
    b = Pseudonymizer(other).pseudonym(raw_id, domain=domain, at=at)  # type: ignore[arg-type]
    assert a.value != b.value
    assert a.key_id != b.key_id


@given(raw_id=ids, at=times)
def test_domains_differ(raw_id: str, at: float) -> None:
    p = Pseudonymizer(SECRET)
    assert p.pseudonym(raw_id, domain="local", at=at).value != (
        p.pseudonym(raw_id, domain="sync", at=at).value
    )


@given(raw_id=ids, domain=domains, at=times, later=times)
def test_epochs_rotate(raw_id: str, domain: str, at: float, later: float) -> None:
    p = Pseudonymizer(SECRET, period_s=86_400)
    a = p.pseudonym(raw_id, domain=domain, at=at)  # type: ignore[arg-type]
    b = p.pseudonym(raw_id, domain=domain, at=later)  # type: ignore[arg-type]
    assert (a.value == b.value) == (a.epoch == b.epoch)
    assert a.epoch == int(at // 86_400)


def test_epoch_boundaries_and_period() -> None:
    p = Pseudonymizer(SECRET, period_s=100)
    assert [p.epoch(t) for t in (0, 99.999, 100, 250)] == [0, 0, 1, 2]
    assert p.period_s == 100
    # The period is part of the key: epoch 3 of a 100 s period is not epoch 3 of 30 days.
    other = Pseudonymizer(SECRET, period_s=101)
    assert other.key_id != p.key_id
    assert p.pseudonym("x", domain="sync", at=300).value != (
        other.pseudonym("x", domain="sync", at=303).value
    )


def test_no_equality_across_domains_or_epochs_in_bulk() -> None:
    p = Pseudonymizer(SECRET, period_s=3600)
    users = [f"user-{i}" for i in range(2000)]
    local = {p.pseudonym(u, domain="local", at=NOW).value for u in users}
    sync = {p.pseudonym(u, domain="sync", at=NOW).value for u in users}
    sync_next = {p.pseudonym(u, domain="sync", at=NOW + 3600).value for u in users}
    assert len(local) == len(sync) == len(sync_next) == len(users)
    assert not local & sync
    assert not sync & sync_next
    assert not local & sync_next


@given(a=st.lists(st.binary(max_size=8), max_size=4), b=st.lists(st.binary(max_size=8), max_size=4))
def test_field_encoding_is_unambiguous(a: list[bytes], b: list[bytes]) -> None:
    assert (_encode_fields(*a) == _encode_fields(*b)) == (a == b)


def test_concatenation_ambiguity_is_avoided() -> None:
    assert _encode_fields(b"ab", b"c") != _encode_fields(b"a", b"bc")
    assert _encode_fields(b"ab") != _encode_fields(b"a", b"b")


@pytest.mark.parametrize("domain", ["", "Local", "server", "sync "])
def test_unknown_domain_is_refused(domain: str) -> None:
    with pytest.raises(InputError, match="unknown pseudonym domain"):
        Pseudonymizer(SECRET).pseudonym("u", domain=domain, at=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"raw_id": ""}, InputError, "non-empty"),
        ({"raw_id": "\ud800"}, InputError, "UTF-8"),
        ({"raw_id": b"u"}, TypeError, "must be a str"),
        ({"at": float("nan")}, InputError, "finite"),
        ({"at": float("inf")}, InputError, "finite"),
        ({"at": -1.0}, InputError, ">= 0"),
        ({"at": "now"}, InputError, "unix time"),
        ({"at": True}, InputError, "unix time"),
    ],
)
def test_bad_arguments_say_what_was_expected(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    args: dict[str, object] = {"raw_id": "u", "domain": "sync", "at": NOW, **kwargs}
    with pytest.raises(error, match=match):
        Pseudonymizer(SECRET).pseudonym(**args)  # type: ignore[arg-type]


def test_bad_secrets_and_periods() -> None:
    with pytest.raises(InputError, match="at least 32 bytes"):
        Pseudonymizer(b"short")
    with pytest.raises(TypeError, match="bytes"):
        Pseudonymizer(SECRET.hex())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="at least 1 second"):
        Pseudonymizer(SECRET, period_s=0)
    with pytest.raises(TypeError, match="int"):
        Pseudonymizer(SECRET, period_s=1.5)  # type: ignore[arg-type]


def test_secret_never_shown_or_pickled() -> None:
    p = Pseudonymizer(SECRET)
    for text in (repr(p), str(p), f"{p}"):
        assert SECRET.hex() not in text
        assert repr(SECRET)[2:-1] not in text
        assert p.key_id in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(p)
    with pytest.raises(TypeError, match="cannot be pickled"):
        copy.copy(p)


def test_generate_and_provider() -> None:
    a, b = Pseudonymizer.generate(), Pseudonymizer.generate()
    assert a.key_id != b.key_id
    assert Pseudonymizer(a.export_secret()).key_id == a.key_id

    class Keystore:
        def load_secret(self) -> bytes:
            return SECRET

    keystore = Keystore()
    assert isinstance(keystore, SecretProvider)
    from_store = Pseudonymizer.from_provider(keystore, period_s=3600)
    assert from_store.pseudonym("u", domain="sync", at=NOW) == Pseudonymizer(SECRET, period_s=3600).pseudonym(
        "u", domain="sync", at=NOW
    )


def _fast_hmac_sha256(key: bytes) -> Callable[[bytes], bytes]:
    """HMAC-SHA256 from precomputed pads: how an attacker would grind a dictionary quickly."""
    block = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def mac(message: bytes) -> bytes:
        i = inner.copy()
        i.update(message)
        o = outer.copy()
        o.update(i.digest())
        return o.digest()

    return mac


def test_dictionary_attack_recovers_nothing_without_the_key() -> None:
    candidates = [f"user-{i:07d}".encode() for i in range(1_000_000)]
    victims = [c.decode() for c in random.Random(7).sample(candidates, 1000)]
    p = Pseudonymizer.generate()
    published = {bytes.fromhex(p.pseudonym(v, domain="sync", at=NOW).value) for v in victims}
    assert len(published) == 1000

    # Attacker without the secret: hash every candidate, and HMAC it under a guessed key.
    plain = {hashlib.sha256(c).digest(): c for c in candidates}
    guessed_key = random.Random(8).randbytes(32)
    guessed_mac = _fast_hmac_sha256(guessed_key)
    assert guessed_mac(b"probe") == hmac.digest(guessed_key, b"probe", "sha256")
    guessed = {guessed_mac(c) for c in candidates}
    assert len(published & plain.keys()) == 0
    assert len(published & guessed) == 0
    # Even knowing the exact construction, a wrong secret matches none of the victims'
    # own pseudonyms (so no candidate can match either).
    wrong = Pseudonymizer.generate()
    assert not published & {bytes.fromhex(wrong.pseudonym(v, domain="sync", at=NOW).value) for v in victims}

    # The same attack against plain SHA-256 "pseudonyms" recovers every victim.
    naive = {hashlib.sha256(v.encode()).digest() for v in victims}
    recovered = {plain[h].decode() for h in naive & plain.keys()}
    assert recovered == set(victims)


def test_struct_prefix_matches_spec_width() -> None:
    # 4-byte big-endian lengths, as the docstring promises other SDKs.
    assert _encode_fields(b"xy") == struct.pack(">I", 2) + b"xy"
