"""Sealed sync envelopes: round trips, opaque rejection, strict decoding, sizes, key files.

The wire helpers below rebuild headers, ``info`` and payloads from the layout
documented in ``sdk/_seal.py`` (not from its private helpers), so these tests
also check that the documentation and the code agree.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import pathlib
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings, strategies as st

from edgepersona.sdk.errors import InputError, InvalidEnvelope
from edgepersona.sdk.protocol import hpke as _hpke
from edgepersona.sdk.protocol.envelope import (
    Contribution,
    Opener,
    SealConfig,
    Sealer,
    SealSuite,
    day_bucket,
    generate_collector_keypair,
)

APP = "com.example.care"
MODEL_VERSION = 7
SUITES = list(SealSuite)
KEMS = {SealSuite.X25519: _hpke.Kem.X25519, SealSuite.MLKEM768_X25519: _hpke.Kem.MLKEM768_X25519}
PSEUDONYM = "a3" * 32  # 64 lowercase hex characters, as the sync pseudonymizer emits


@functools.cache
def keypair(suite: SealSuite, which: int = 0) -> tuple[bytes, bytes]:
    return generate_collector_keypair(suite)


@functools.cache
def sealer(suite: SealSuite, app_id: str = APP) -> Sealer:
    return Sealer(keypair(suite)[1], app_id=app_id)


@functools.cache
def opener(suite: SealSuite) -> Opener:
    return Opener(keypair(suite)[0])


def contribution(**changes: object) -> Contribution:
    fields: dict[str, object] = {
        "pseudonym": PSEUDONYM,
        "pseudonym_epoch": 677,
        "sequence": 0x0123_4567_89AB_CDEF,
        "day_bucket": 20_314,
        "model_version": MODEL_VERSION,
        "persona_index": 3,
        "features": tuple(0.5 + i / 7 for i in range(16)),
    }
    fields.update(changes)
    return Contribution(**fields)  # type: ignore[arg-type]


def assert_rejected(suite: SealSuite, envelope: bytes, **kwargs: object) -> None:
    """The one way every bad envelope must fail: same type, same text, no chained cause."""
    kwargs.setdefault("app_id", APP)
    with pytest.raises(InvalidEnvelope) as caught:
        opener(suite).open(envelope, **kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == "envelope rejected"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


# --- wire helpers written from the module docstring -------------------------------------


def raw_public_key(key_file: bytes) -> bytes:
    lines = key_file.decode("ascii").strip().splitlines()
    body = base64.b64decode("".join(lines[1:-1]))
    assert body[0] == 1  # key file format
    return body[2:]


def header(suite: SealSuite, model_version: int = MODEL_VERSION) -> bytes:
    public_raw = raw_public_key(keypair(suite)[1])
    key_id = hashlib.sha256(bytes([suite.value]) + public_raw).digest()[:4]
    return b"EP" + bytes([1, suite.value]) + key_id + struct.pack(">I", model_version)


def info(app_id: str, header_bytes: bytes) -> bytes:
    app = app_id.encode()
    return b"edgepersona/sync-envelope\x00" + bytes([len(app)]) + app + header_bytes


def payload(
    *,
    pseudonym: bytes = bytes.fromhex(PSEUDONYM),
    features: tuple[float, ...] = (1.0, -2.5, 3.25),
    model_version: int = MODEL_VERSION,
    count: int | None = None,
    pseudonym_length: int | None = None,
) -> bytes:
    n = len(features) if count is None else count
    length = len(pseudonym) if pseudonym_length is None else pseudonym_length
    head = struct.pack(">QIIIHHB", 9, 677, 20_314, model_version, 3, n, length)
    return head + pseudonym + struct.pack(f">{len(features)}d", *features)


def seal_raw(suite: SealSuite, plaintext: bytes, *, model_version: int = MODEL_VERSION) -> bytes:
    """Seal arbitrary bytes exactly as a sealer would, through the hazardous layer."""
    head = header(suite, model_version)
    kem = KEMS[suite]
    public_key = _hpke.load_public_key(kem, raw_public_key(keypair(suite)[1]))
    return head + _hpke.seal_base(kem, public_key, info(APP, head), plaintext)


# --- strategies ---------------------------------------------------------------------------

pseudonyms = st.integers(8, 32).flatmap(lambda n: st.binary(min_size=n, max_size=n)).map(bytes.hex)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
contributions = st.builds(
    Contribution,
    pseudonym=pseudonyms,
    pseudonym_epoch=st.integers(0, 2**32 - 1),
    sequence=st.integers(0, 2**64 - 1),
    day_bucket=st.integers(0, 2**32 - 1),
    model_version=st.integers(0, 2**32 - 1),
    persona_index=st.integers(0, 2**16 - 1),
    features=st.lists(finite_floats, min_size=1, max_size=64).map(tuple),
)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
@given(item=contributions)
@settings(max_examples=60, deadline=None)
def test_seal_then_open_returns_the_same_contribution(suite: SealSuite, item: Contribution) -> None:
    envelope = sealer(suite).seal(item)
    assert opener(suite).open(envelope, app_id=APP) == item
    assert opener(suite).open(envelope, app_id=APP, model_versions={item.model_version}) == item


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_the_most_features_the_config_allows_round_trip(suite: SealSuite) -> None:
    item = contribution(features=tuple(float(i) for i in range(SealConfig().max_features)))
    assert opener(suite).open(sealer(suite).seal(item), app_id=APP) == item


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_sealing_twice_gives_unrelated_bytes(suite: SealSuite) -> None:
    first, second = sealer(suite).seal(contribution()), sealer(suite).seal(contribution())
    assert first[:12] == second[:12]  # the public header
    assert first[12:] != second[12:]  # fresh ephemeral key every time


def test_negative_zero_and_extreme_floats_survive() -> None:
    features = (-0.0, 5e-324, -1.7976931348623157e308, 1.7976931348623157e308)
    opened = opener(SealSuite.X25519).open(
        sealer(SealSuite.X25519).seal(contribution(features=features)), app_id=APP
    )
    assert [struct.pack(">d", x) for x in opened.features] == [struct.pack(">d", x) for x in features]


def test_documented_layout_opens_to_the_expected_contribution() -> None:
    opened = opener(SealSuite.X25519).open(seal_raw(SealSuite.X25519, payload()), app_id=APP)
    assert opened == Contribution(
        pseudonym=PSEUDONYM,
        pseudonym_epoch=677,
        sequence=9,
        day_bucket=20_314,
        model_version=MODEL_VERSION,
        persona_index=3,
        features=(1.0, -2.5, 3.25),
    )


# --- tampering, truncation, extension, size ----------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_flipping_any_single_bit_is_rejected(suite: SealSuite) -> None:
    envelope = sealer(suite).seal(contribution())
    for index in range(len(envelope)):
        for mask in (0x01, 0x80):
            altered = bytearray(envelope)
            altered[index] ^= mask
            assert_rejected(suite, bytes(altered))


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_any_single_byte_change_is_rejected(suite: SealSuite, data: st.DataObject) -> None:
    envelope = sealer(suite).seal(contribution())
    index = data.draw(st.integers(0, len(envelope) - 1))
    altered = bytearray(envelope)
    altered[index] ^= data.draw(st.integers(1, 255))
    assert_rejected(suite, bytes(altered))


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_every_truncation_is_rejected(suite: SealSuite) -> None:
    envelope = sealer(suite).seal(contribution())
    for length in range(len(envelope)):
        assert_rejected(suite, envelope[:length])
        assert_rejected(suite, envelope[len(envelope) - length :])


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
@given(extra=st.binary(min_size=1, max_size=64), at_front=st.booleans())
@settings(max_examples=50, deadline=None)
def test_any_extension_is_rejected(suite: SealSuite, extra: bytes, at_front: bool) -> None:
    envelope = sealer(suite).seal(contribution())
    assert_rejected(suite, extra + envelope if at_front else envelope + extra)


def test_oversized_envelopes_are_rejected_unopened() -> None:
    envelope = sealer(SealSuite.X25519).seal(contribution())
    assert_rejected(SealSuite.X25519, envelope + bytes(SealConfig().max_envelope_bytes))
    strict = Opener(keypair(SealSuite.X25519)[0], config=SealConfig(max_envelope_bytes=200))
    with pytest.raises(InvalidEnvelope):
        strict.open(envelope, app_id=APP)


@pytest.mark.parametrize("garbage", [b"", b"EP", bytes(100), b"EP\x01\x01" + bytes(300)])
def test_garbage_is_rejected(garbage: bytes) -> None:
    assert_rejected(SealSuite.X25519, garbage)
    assert_rejected(SealSuite.MLKEM768_X25519, garbage)


# --- wrong key, app, model version ---------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_a_different_collector_key_cannot_open(suite: SealSuite) -> None:
    envelope = sealer(suite).seal(contribution())
    other = Opener(keypair(suite, which=1)[0])
    with pytest.raises(InvalidEnvelope, match=r"^envelope rejected$"):
        other.open(envelope, app_id=APP)
    for other_suite in SUITES:
        if other_suite is not suite:
            assert_rejected(other_suite, envelope)


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_an_envelope_naming_another_key_is_rejected(suite: SealSuite) -> None:
    envelope = sealer(suite).seal(contribution())
    other_key_id = bytes.fromhex(Opener(keypair(suite, which=1)[0]).key_id)
    assert_rejected(suite, envelope[:4] + other_key_id + envelope[8:])


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_an_envelope_for_another_app_is_rejected(suite: SealSuite) -> None:
    envelope = sealer(suite, "com.example.other").seal(contribution())
    assert_rejected(suite, envelope)
    assert opener(suite).open(envelope, app_id="com.example.other") == contribution()


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_model_version_is_bound_and_can_be_restricted(suite: SealSuite) -> None:
    envelope = sealer(suite).seal(contribution(model_version=MODEL_VERSION))
    assert_rejected(suite, envelope, model_versions={MODEL_VERSION + 1})
    relabelled = envelope[:8] + struct.pack(">I", MODEL_VERSION + 1) + envelope[12:]
    assert_rejected(suite, relabelled)
    assert_rejected(suite, relabelled, model_versions={MODEL_VERSION + 1})


# --- validly sealed but malformed payloads --------------------------------------------------

MALFORMED_PAYLOADS = {
    "empty": b"",
    "head only, short": payload()[:24],
    "one byte short": payload()[:-1],
    "one byte extra": payload() + b"\x00",
    "nan feature": payload(features=(1.0, math.nan, 2.0)),
    "inf feature": payload(features=(math.inf,)),
    "-inf feature": payload(features=(0.0, -math.inf)),
    "nan with payload bits": payload()[:-8] + b"\x7f\xf8\x00\x00\x00\x00\x00\x01",
    "zero features": payload(features=()),
    "more features than allowed": payload(features=(0.0,) * 1025),
    "count larger than body": payload(count=4),
    "count smaller than body": payload(count=2),
    "pseudonym too short": payload(pseudonym=bytes(7)),
    "pseudonym too long": payload(pseudonym=bytes(33)),
    "pseudonym length lies": payload(pseudonym_length=31),
    "model version differs from header": payload(model_version=MODEL_VERSION + 1),
}


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
@pytest.mark.parametrize("name", list(MALFORMED_PAYLOADS))
def test_validly_sealed_malformed_payloads_are_rejected(suite: SealSuite, name: str) -> None:
    envelope = seal_raw(suite, MALFORMED_PAYLOADS[name])
    assert len(envelope) <= SealConfig().max_envelope_bytes
    assert_rejected(suite, envelope)


@given(plaintext=st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_random_sealed_payloads_open_or_are_rejected_opaquely(plaintext: bytes) -> None:
    try:
        opened = opener(SealSuite.X25519).open(seal_raw(SealSuite.X25519, plaintext), app_id=APP)
    except InvalidEnvelope as rejected:
        assert str(rejected) == "envelope rejected"
    else:
        assert sealer(SealSuite.X25519).seal(opened)  # anything accepted is a valid contribution


# --- argument shapes -----------------------------------------------------------------------

BAD_FIELDS: dict[str, dict[str, object]] = {
    "nan feature": {"features": (1.0, math.nan)},
    "inf feature": {"features": (math.inf,)},
    "huge int feature": {"features": (10**400,)},
    "str feature": {"features": ("1.0",)},
    "bool feature": {"features": (True,)},
    "no features": {"features": ()},
    "features as str": {"features": "1.0"},
    "features not iterable": {"features": 3.0},
    "too many features for the wire": {"features": (0.0,) * 65_536},
    "negative sequence": {"sequence": -1},
    "sequence over uint64": {"sequence": 2**64},
    "float sequence": {"sequence": 1.0},
    "bool persona": {"persona_index": True},
    "persona over uint16": {"persona_index": 65_536},
    "negative day": {"day_bucket": -1},
    "epoch over uint32": {"pseudonym_epoch": 2**32},
    "model version over uint32": {"model_version": 2**32},
    "uppercase pseudonym": {"pseudonym": PSEUDONYM.upper()},
    "short pseudonym": {"pseudonym": "ab" * 7},
    "long pseudonym": {"pseudonym": "ab" * 33},
    "odd pseudonym": {"pseudonym": "a" * 33},
    "raw id as pseudonym": {"pseudonym": "alice@example.com"},
    "bytes pseudonym": {"pseudonym": bytes.fromhex(PSEUDONYM)},
}


@pytest.mark.parametrize("name", list(BAD_FIELDS))
def test_wrongly_shaped_contributions_are_input_errors(name: str) -> None:
    with pytest.raises(InputError):
        contribution(**BAD_FIELDS[name])


def test_a_bad_pseudonym_is_never_echoed() -> None:
    with pytest.raises(InputError) as caught:
        contribution(pseudonym="alice@example.com")
    assert "alice" not in str(caught.value)
    assert "alice" not in repr(contribution())  # and a good one stays out of repr
    assert PSEUDONYM not in repr(contribution())


def test_sealing_more_features_than_configured_is_an_input_error() -> None:
    small = Sealer(keypair(SealSuite.X25519)[1], app_id=APP, config=SealConfig(max_features=4))
    small.seal(contribution(features=(1.0,) * 4))
    with pytest.raises(InputError, match="max_features"):
        small.seal(contribution(features=(1.0,) * 5))


def test_an_envelope_over_the_configured_size_is_an_input_error_at_seal_time() -> None:
    tiny = Sealer(
        keypair(SealSuite.MLKEM768_X25519)[1],
        app_id=APP,
        config=SealConfig(max_envelope_bytes=1024),
    )
    with pytest.raises(InputError, match="1024-byte limit"):
        tiny.seal(contribution())


def test_numpy_like_numbers_are_accepted_and_normalised() -> None:
    np = pytest.importorskip("numpy")
    item = contribution(
        sequence=np.uint64(5), features=np.arange(4, dtype=np.float32), persona_index=np.int16(2)
    )
    assert item.sequence == 5 and type(item.sequence) is int
    assert item.features == (0.0, 1.0, 2.0, 3.0) and type(item.features[0]) is float


@pytest.mark.parametrize(
    "call",
    [
        lambda: sealer(SealSuite.X25519).seal({"pseudonym": PSEUDONYM}),  # type: ignore[arg-type]
        lambda: opener(SealSuite.X25519).open("EP...", app_id=APP),  # type: ignore[arg-type]
        lambda: opener(SealSuite.X25519).open(b"EP", app_id=""),
        lambda: opener(SealSuite.X25519).open(b"EP", app_id="x" * 256),
        lambda: opener(SealSuite.X25519).open(b"EP", app_id=b"app"),  # type: ignore[arg-type]
        lambda: Sealer(keypair(SealSuite.X25519)[1], app_id=""),
        lambda: SealConfig(max_features=0),
        lambda: SealConfig(max_features=70_000),
        lambda: SealConfig(max_envelope_bytes=-1),
        lambda: generate_collector_keypair("x25519"),  # type: ignore[arg-type]
    ],
)
def test_wrong_arguments_are_input_errors(call: object) -> None:
    with pytest.raises(InputError):
        call()  # type: ignore[operator]


# --- sizes and confidentiality -------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_sixteen_feature_envelope_size(
    suite: SealSuite, record_property: Callable[[str, object], None]
) -> None:
    envelope = sealer(suite).seal(contribution())
    record_property(f"envelope_bytes_{suite.name}", len(envelope))
    print(f"{suite.name}: 16-feature envelope is {len(envelope)} bytes")
    payload_size = 25 + 32 + 16 * 8
    enc = {SealSuite.X25519: 32, SealSuite.MLKEM768_X25519: 1120}[suite]
    assert len(envelope) == 12 + enc + payload_size + 16
    if suite is SealSuite.X25519:
        assert len(envelope) <= 1024


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_no_field_is_visible_in_the_envelope(suite: SealSuite) -> None:
    features = tuple(1234.5678 + i for i in range(16))
    item = contribution(features=features, day_bucket=20_314, pseudonym_epoch=0x5EA1_ED01)
    envelope = sealer(suite).seal(item)
    assert envelope[:12] == header(suite)  # the only clear part: nothing about the user
    secrets_in_clear = [
        PSEUDONYM.encode(),
        PSEUDONYM.upper().encode(),
        bytes.fromhex(PSEUDONYM),
        bytes.fromhex(PSEUDONYM)[:8],
        struct.pack(">Q", item.sequence),
        struct.pack("<Q", item.sequence),
        struct.pack(">I", item.pseudonym_epoch),
        struct.pack(">d", features[0]),
        struct.pack("<d", features[0]),
        struct.pack(">f", features[0]),
        struct.pack(f">{len(features)}d", *features),
        b"1234.5678",
    ]
    for needle in secrets_in_clear:
        assert needle not in envelope


# --- key files -----------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_key_files_are_labelled_pem_and_carry_their_suite(suite: SealSuite) -> None:
    private_file, public_file = keypair(suite)
    assert private_file.startswith(b"-----BEGIN EDGEPERSONA COLLECTOR PRIVATE KEY-----\n")
    assert public_file.startswith(b"-----BEGIN EDGEPERSONA COLLECTOR PUBLIC KEY-----\n")
    assert all(len(line) <= 64 for line in public_file.splitlines())
    assert Sealer(public_file, app_id=APP).suite is suite
    assert Sealer(public_file, app_id=APP, suite=suite).key_id == Opener(private_file).key_id
    assert Opener(private_file).public_key == public_file
    assert Opener(private_file).suite is suite
    assert keypair(suite, which=1) != keypair(suite)


def test_key_files_round_trip_through_disk_with_crlf(tmp_path: pathlib.Path) -> None:
    private_file, public_file = generate_collector_keypair()
    (tmp_path / "collector.pub").write_bytes(public_file.replace(b"\n", b"\r\n"))
    loaded = Sealer((tmp_path / "collector.pub").read_bytes(), app_id=APP)
    assert Opener(private_file).open(loaded.seal(contribution()), app_id=APP) == contribution()


def test_mixed_up_key_files_say_so() -> None:
    private_file, public_file = keypair(SealSuite.X25519)
    with pytest.raises(InputError, match="private key file"):
        Sealer(private_file, app_id=APP)
    with pytest.raises(InputError, match="public key file"):
        Opener(public_file)
    with pytest.raises(InputError, match="MLKEM768_X25519"):
        Sealer(public_file, app_id=APP, suite=SealSuite.MLKEM768_X25519)


def _armor(kind: str, body: bytes) -> bytes:
    label = f"EDGEPERSONA COLLECTOR {kind} KEY"
    text = base64.b64encode(body).decode()
    return f"-----BEGIN {label}-----\n{text}\n-----END {label}-----\n".encode()


@pytest.mark.parametrize(
    "key_file",
    [
        b"",
        b"not a key",
        b"-----BEGIN EDGEPERSONA COLLECTOR PUBLIC KEY-----",
        _armor("PUBLIC", b"\x01\x01" + bytes(31)),  # one byte short
        _armor("PUBLIC", b"\x01\x01" + bytes(33)),  # one byte long
        _armor("PUBLIC", b"\x02\x01" + bytes(32)),  # unknown key file format
        _armor("PUBLIC", b"\x01\x09" + bytes(32)),  # unknown suite
        _armor("PUBLIC", b"\x01\x02" + b"\xff" * 1216),  # not an ML-KEM key
        _armor("PUBLIC", b"\x01")[:-1],
        _armor("PUBLIC", b"\x01\x01" + bytes(32)).replace(b"AQE", b"A*E"),  # not base64
        "-----BEGIN EDGEPERSONA COLLECTOR PUBLIC KEY-----\n",
    ],
)
def test_malformed_public_key_files_are_input_errors(key_file: bytes | str) -> None:
    with pytest.raises(InputError):
        Sealer(key_file, app_id=APP)  # type: ignore[arg-type]


def test_malformed_private_key_files_are_input_errors() -> None:
    with pytest.raises(InputError):
        Opener(_armor("PRIVATE", b"\x01\x02" + bytes(95)))
    with pytest.raises(InputError):
        Opener(keypair(SealSuite.X25519)[0].decode())  # type: ignore[arg-type]


# --- time and layering ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (0, 0),
        (86_399.999, 0),
        (86_400, 1),
        (1_755_000_000.5, 20_312),
        (2**32 * 86_400 - 1, 2**32 - 1),
    ],
)
def test_day_bucket_floors_to_whole_utc_days(at: float, expected: int) -> None:
    assert day_bucket(at) == expected


@pytest.mark.parametrize("at", [-1.0, math.nan, math.inf, 2**32 * 86_400, True, "0"])
def test_day_bucket_rejects_unusable_times(at: object) -> None:
    with pytest.raises(InputError):
        day_bucket(at)  # type: ignore[arg-type]


def test_only_the_seal_recipes_import_the_hazardous_layer() -> None:
    sdk = pathlib.Path(__file__).resolve().parents[2] / "sdk"
    importers = {
        path.relative_to(sdk).as_posix()
        for path in sdk.rglob("*.py")
        if "protocol import hpke" in path.read_text(encoding="utf-8")
        or "protocol.hpke" in path.read_text(encoding="utf-8").replace("protocol.hpke`", "")
    }
    assert importers == {"protocol/envelope.py"}
