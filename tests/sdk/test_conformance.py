"""The Python SDK reproduces every published conformance vector in models/.

Each section of ``models/vectors.json`` is re-derived here through the SDK's
public names and compared with the tolerances of ``models/CONFORMANCE.md``; the
generator test then checks that regenerating the kit from the SDK changes
nothing, and that changing a vector without bumping the kit version is refused.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cleanroom import (
    assign as cleanroom_assign,
    bundle as cleanroom_bundle,
    errors as cleanroom_errors,
    fold as cleanroom_fold,
    wire as cleanroom_wire,
)
from cleanroom.errors import KitError
from hypothesis import given, settings, strategies as st

from edgepersona.sdk import (
    ClientOptions,
    InputError,
    MemoryKeyProvider,
    ModelIntegrityError,
    PersonaClient,
    PersonaError,
    PersonaRuntime,
    Pseudonymizer,
    load_spec_json,
)
from edgepersona.sdk.protocol import (
    Contribution,
    FoldPlan,
    Opener,
    Sealer,
    TrustedKeys,
    check_event,
    day_bucket,
    decode_batch,
    distinct_key,
    encode_batch,
    encode_payload,
    model_space,
    numeric_property,
)
from edgepersona.trainer.release.conformance import KIT_VERSION, build_kit

MODELS = Path(__file__).resolve().parents[2] / "models"
KEY = (MODELS / "test_signing_key.pub.pem").read_bytes()


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    data = json.loads((MODELS / "vectors.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    assert data["kit_version"] == KIT_VERSION
    return data


@pytest.fixture(scope="module")
def runtime(vectors: dict[str, Any]) -> PersonaRuntime:
    return PersonaRuntime.open(MODELS / vectors["bundle"], trusted_keys=[KEY],
                               now=datetime.fromisoformat(vectors["trusted_at"]))


def outcome(action: Any) -> tuple[str, Any]:
    try:
        return "ok", action()
    except PersonaError as exc:
        return type(exc).__name__, None


def test_reference_folder_and_zip_hold_the_same_verified_bundle(runtime: PersonaRuntime,
                                                                vectors: dict[str, Any]) -> None:
    folder = PersonaRuntime.open(MODELS / "reference", trusted_keys=[KEY],
                                 now=datetime.fromisoformat(vectors["trusted_at"]))
    assert folder.manifest == runtime.manifest


def test_flipping_any_byte_of_the_reference_bundle_fails(vectors: dict[str, Any]) -> None:
    files = {p.name: p.read_bytes() for p in (MODELS / "reference").iterdir()}
    for name, data in files.items():
        for position in (0, len(data) // 2, len(data) - 1):
            broken = bytearray(data)
            broken[position] ^= 0x01
            with pytest.raises(ModelIntegrityError):
                PersonaRuntime.open({**files, name: bytes(broken)}, trusted_keys=[KEY],
                                    now=datetime.fromisoformat(vectors["trusted_at"]))


def test_fold_vectors(vectors: dict[str, Any]) -> None:
    groups = vectors["fold"]["groups"]
    assert {g["name"] for g in groups} == {"reference", "coverage", "wildcard"}
    for group in groups:
        plan = FoldPlan.from_spec(load_spec_json(json.dumps(group["spec"])))
        for case in group["cases"]:
            state = plan.new_state()
            for e in case["events"]:
                state.fold(e["event"], e["at"], check_event(e["event"], e["value"], e["at"],
                                                            e["properties"]))
            assert (state.events, state.ignored, state.latest) == \
                (case["folded"], case["ignored"], case["latest"])
            for got, want in zip(state.evaluate(case["at"]), case["features"], strict=True):
                assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


def test_every_aggregate_and_window_kind_is_covered(vectors: dict[str, Any]) -> None:
    seen = {(f["aggregate"], f["window"]["kind"]) for g in vectors["fold"]["groups"]
            for f in g["spec"]["features"]}
    aggregates = ("count", "sum", "mean", "distinct", "active_days")
    assert {(a, w) for a in aggregates for w in ("all_time", "half_life", "blend")} <= seen
    assert ("recency_days", "all_time") in seen


def test_checked_event_vectors(vectors: dict[str, Any]) -> None:
    for case in vectors["fold"]["checked_events"]:
        result = outcome(lambda c=case: check_event(c["event"], c["value"], c["at"], c["properties"]))
        assert result[0] == case["outcome"]
        if case["outcome"] == "ok":
            assert result[1] == case["folded_properties"]


def test_evaluation_time_vectors(vectors: dict[str, Any]) -> None:
    specs = {g["name"]: g["spec"] for g in vectors["fold"]["groups"]}
    for case in vectors["fold"]["evaluation"]:
        state = FoldPlan.from_spec(load_spec_json(json.dumps(specs[case["spec"]]))).new_state()
        for e in case["events"]:
            state.fold(e["event"], e["at"], check_event(e["event"], e["value"], e["at"], e["properties"]))
        assert outcome(lambda s=state, t=case["at"]: s.evaluate(t))[0] == case["outcome"]


def test_future_event_vectors(vectors: dict[str, Any], tmp_path: Path) -> None:
    for index, case in enumerate(vectors["fold"]["future"]):
        options = ClientOptions(max_future_seconds=case["max_future_seconds"])
        with PersonaClient.open(MODELS / "reference", trusted_keys=[KEY],
                                store=tmp_path / f"{index}.db", key_provider=MemoryKeyProvider(bytes(32)),
                                options=options, clock=lambda c=case: c["now"]) as client:
            got = outcome(lambda c=case, cl=client: cl.track("purchase", 5.0, at=c["at"]))
        assert got[0] == case["outcome"]


def test_pseudonym_vectors(vectors: dict[str, Any]) -> None:
    secret = bytes.fromhex(vectors["keys"]["pseudonym_secret_hex"])
    assert vectors["pseudonyms"]
    for case in vectors["pseudonyms"]:
        maker = Pseudonymizer(secret, period_s=case["period_seconds"])
        p = maker.pseudonym(case["raw_id"], domain=case["domain"], at=case["at"])
        assert (p.value, p.key_id, p.epoch) == (case["value"], case["key_id"], case["epoch"])


@pytest.mark.parametrize("backend", ["onnxruntime", "numpy"])
def test_assign_vectors(vectors: dict[str, Any], backend: str) -> None:
    runtime = PersonaRuntime.open(MODELS / vectors["bundle"], trusted_keys=[KEY],
                                  now=datetime.fromisoformat(vectors["trusted_at"]), backend=backend)
    for case in vectors["assign"]:
        result = runtime.assign(case["features"])
        assert result.index == case["index"]
        assert result.persona_id == case["persona_id"]
        assert result.confidence == pytest.approx(case["confidence"], rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(result.distances, case["distances"], rtol=1e-4, atol=1e-5)
        synced = model_space(runtime.manifest.assigner, np.asarray([case["features"]]))[0]
        np.testing.assert_allclose(synced, case["model_space"], rtol=1e-9, atol=1e-9)


def test_verification_vectors(vectors: dict[str, Any]) -> None:
    outcomes = {c["outcome"] for c in vectors["verify"]}
    assert outcomes == {"ok", "UntrustedKeyError", "ModelIntegrityError", "SchemaError",
                        "BundleExpiredError", "RollbackError"}
    for case in vectors["verify"]:
        got = outcome(lambda c=case: PersonaRuntime.open(
            base64.b64decode(c["zip_base64"]), trusted_keys=c["trusted_keys"],
            now=datetime.fromisoformat(c["now"]), min_version=c["min_version"],
            backend="onnxruntime"))
        assert got[0] == case["outcome"], case["name"]
        if got[1] is not None:
            assert (got[1].manifest.model_id, got[1].version) == (case["model_id"], case["version"])


def test_rotation_vectors(vectors: dict[str, Any]) -> None:
    for case in vectors["rotation"]:
        trust = case["trusted"]
        keys = TrustedKeys(trust["keys"], revoked=trust["revoked"], rotation=trust["rotation"])
        got = outcome(lambda c=case, k=keys: k.rotate(c["statement"].encode(),
                                                     now=datetime.fromisoformat(c["now"])))
        assert got[0] == case["outcome"], case["name"]
        if got[1] is not None:
            assert {"key_ids": list(got[1].ids), "revoked": sorted(got[1].revoked),
                    "rotation": got[1].rotation} == case["result"]


def test_envelope_vectors(vectors: dict[str, Any]) -> None:
    collector = vectors["keys"]["collector"]
    openers = {name: Opener(entry["private_key_file"].encode()) for name, entry in collector.items()}
    assert {c["suite"] for c in vectors["envelopes"] if c["outcome"] == "ok"} == set(openers)
    for case in vectors["envelopes"]:
        got = outcome(lambda c=case: openers[c["suite"]].open(
            bytes.fromhex(c["envelope_hex"]), app_id=c["app_id"], model_versions=c["model_versions"]))
        assert got[0] == case["outcome"], case["name"]
        if got[1] is not None:
            want = case["contribution"]
            assert {k: getattr(got[1], k) for k in want} == {**want, "features": tuple(want["features"])}


def test_day_bucket_vectors(vectors: dict[str, Any]) -> None:
    for case in vectors["day_buckets"]:
        got = outcome(lambda c=case: day_bucket(c["at"]))
        assert got == (case["outcome"], case.get("day"))


def test_framing_vectors(vectors: dict[str, Any]) -> None:
    for case in vectors["framing"]:
        body = bytes.fromhex(case["body_hex"])
        got = outcome(lambda b=body: decode_batch(b))
        assert got[0] == case["outcome"], case["name"]
        if got[1] is not None:
            assert [e.hex() for e in got[1]] == case["envelopes_hex"]
            assert encode_batch(got[1]) == body


@pytest.fixture
def kit_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "models"
    shutil.copytree(MODELS, copy)
    return copy


def test_regenerating_the_kit_from_the_sdk_changes_nothing(kit_copy: Path) -> None:
    # The SDK re-derives every vector (HPKE envelopes are reused when they still open).
    assert build_kit(kit_copy) == []
    assert (kit_copy / "vectors.json").read_bytes() == (MODELS / "vectors.json").read_bytes()


def test_changing_a_vector_without_a_new_kit_version_is_refused(kit_copy: Path) -> None:
    data = json.loads((kit_copy / "vectors.json").read_text(encoding="utf-8"))
    data["pseudonyms"][0]["value"] = "0" * 64
    (kit_copy / "vectors.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match="bump KIT_VERSION"):
        build_kit(kit_copy)
    data["kit_version"] = KIT_VERSION - 1  # the committed kit is older: a bump is a new kit
    (kit_copy / "vectors.json").write_text(json.dumps(data), encoding="utf-8")
    assert build_kit(kit_copy) == ["vectors.json"]
    assert (kit_copy / "vectors.json").read_bytes() == (MODELS / "vectors.json").read_bytes()


def test_a_new_reference_bundle_needs_a_new_kit_version(kit_copy: Path) -> None:
    with pytest.raises(InputError, match="bump KIT_VERSION"):
        build_kit(kit_copy, retrain=True)


# The clean room (tests/cleanroom, written from CONFORMANCE.md alone) against the SDK on
# inputs no vector lists: where they differ, the document is incomplete or wrong.

_ITEMS = st.one_of(st.text(max_size=4), st.floats(allow_nan=False, allow_infinity=False),
                   st.integers(-2**60, 2**60), st.none())
_AMOUNTS = st.one_of(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
                     st.text(alphabet="0123456789._eE+- infa", max_size=8), st.none())
_EVENTS = st.lists(st.fixed_dictionaries({
    "event": st.sampled_from(["a", "b", "c"]),
    "at": st.floats(0, 1e7).map(lambda t: 1_500_000_000.0 + t),
    "value": st.one_of(st.none(), st.floats(-1e6, 1e6)),
    "properties": st.fixed_dictionaries({"item": _ITEMS, "amount": _AMOUNTS}),
}), min_size=1, max_size=25)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_the_document_and_the_sdk_agree_on_distinct_keys(value: float) -> None:
    assert cleanroom_fold.key(value) == distinct_key(value)


@given(st.text(alphabet="0123456789._eE+- infaINF", max_size=10))
def test_the_document_and_the_sdk_agree_on_numeric_strings(text: str) -> None:
    assert cleanroom_fold.number(text) == numeric_property(text)


@settings(max_examples=60)
@given(_EVENTS, st.sampled_from([0.0, 1.0, 86_400.0 * 30, 86_400.0 * 5000]))
def test_the_document_and_the_sdk_fold_alike(vectors: dict[str, Any], events: list[dict[str, Any]],
                                             gap: float) -> None:
    for group in vectors["fold"]["groups"][1:]:  # the coverage and wildcard specs
        plan = FoldPlan.from_spec(load_spec_json(json.dumps(group["spec"])))
        state, clean = plan.new_state(), cleanroom_fold.State(group["spec"])
        for e in events:
            try:
                checked = check_event(e["event"], e["value"], e["at"], e["properties"])
            except InputError:  # refused by the SDK (e.g. beyond ±1e200): the document refuses it too
                with pytest.raises(cleanroom_errors.InputError):
                    cleanroom_fold.check_event(e["event"], e["value"], e["at"], e["properties"])
                continue
            state.fold(e["event"], e["at"], checked)
            clean.fold(e["event"], e["at"], cleanroom_fold.check_event(e["event"], e["value"], e["at"],
                                                                      e["properties"]))
        at = max(e["at"] for e in events) + gap
        for got, want in zip(clean.evaluate(at), state.evaluate(at), strict=True):
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


def test_the_document_and_the_sdk_read_damaged_archives_alike(vectors: dict[str, Any]) -> None:
    # Bit patterns 0x01, 0x80, 0xff over every zip header byte of the good bundle (with
    # EDGEPERSONA_CONFORMANCE=long: of every verification archive): the SDK and the clean
    # room's reading of section 1 give the same outcome class.
    long = os.environ.get("EDGEPERSONA_CONFORMANCE") == "long"
    cases = vectors["verify"] if long else vectors["verify"][:1]
    differ, tried = [], 0
    for case in cases:
        archive = base64.b64decode(case["zip_base64"])
        for damaged in _damaged_headers(archive):
            tried += 1
            now = datetime.fromisoformat(case["now"])
            sdk = outcome(lambda d=damaged, c=case, t=now: PersonaRuntime.open(
                d, trusted_keys=c["trusted_keys"], now=t, min_version=c["min_version"],
                backend="onnxruntime"))[0]
            if sdk != _clean_room_outcome(damaged, case["trusted_keys"], now, case["min_version"]):
                differ.append((case["name"], tried, sdk))
    print(f"damaged archives: {tried} read alike by the SDK and the clean room, {len(differ)} not")
    assert tried >= 1_400
    assert differ == []


def _damaged_headers(archive: bytes) -> list[bytes]:
    """The archive with one zip header byte changed (three ways), for every header byte."""
    starts = [i for i in range(len(archive))
              if archive[i:i + 4] in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06")]
    out = []
    for position in sorted({p for s in starts for p in range(s, min(s + 46, len(archive)))}):
        for bits in (0x01, 0x80, 0xFF):
            damaged = bytearray(archive)
            damaged[position] ^= bits
            out.append(bytes(damaged))
    return out


def _clean_room_outcome(data: bytes, keys: list[str], now: datetime, min_version: int) -> str:
    trusted = {cleanroom_bundle.key_id(bytes.fromhex(k)): bytes.fromhex(k) for k in keys}
    try:
        verified = cleanroom_bundle.verify(cleanroom_bundle.read_archive(data), trusted, now=now,
                                           min_version=min_version)
        cleanroom_bundle.load_graph(verified)
    except KitError as exc:
        return type(exc).__name__
    return "ok"


@settings(max_examples=40)
@given(st.text(min_size=1, max_size=40), st.sampled_from(["local", "sync"]),
       st.floats(0, 4e9), st.integers(1, 10**8))
def test_the_document_and_the_sdk_make_the_same_pseudonyms(raw_id: str, domain: str, at: float,
                                                           period: int) -> None:
    secret = bytes(range(32))
    try:
        raw_id.encode("utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate is not text; the SDK refuses it
    p = Pseudonymizer(secret, period_s=period).pseudonym(raw_id, domain=domain, at=at)  # type: ignore[arg-type]
    assert cleanroom_assign.pseudonym(secret, raw_id, domain, at, period) == (p.value, p.key_id, p.epoch)


@settings(max_examples=40)
@given(st.lists(st.floats(-1e4, 1e5), min_size=6, max_size=6))
def test_the_document_and_the_sdk_assign_alike(runtime: PersonaRuntime, row: list[float]) -> None:
    manifest = json.loads((MODELS / "reference" / "manifest.json").read_bytes())
    index, persona_id, confidence, distances = cleanroom_assign.assign(manifest, row)
    result = runtime.assign(row)
    if result.confidence > 1e-4:  # a near tie may go either way in float32
        assert (index, persona_id) == (result.index, result.persona_id)
    assert confidence == pytest.approx(result.confidence, rel=1e-4, abs=1e-4)
    np.testing.assert_allclose(distances, result.distances, rtol=1e-4, atol=1e-4)


@settings(max_examples=30)
@given(st.integers(1, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1),
       st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20),
       st.binary(min_size=8, max_size=32))
def test_the_document_and_the_sdk_seal_and_open_alike(vectors: dict[str, Any], sequence: int, day: int,
                                                     persona: int, features: list[float],
                                                     pseudonym: bytes) -> None:
    entry = vectors["keys"]["collector"]["x25519"]
    opener = Opener(entry["private_key_file"].encode())
    contribution = Contribution(pseudonym=pseudonym.hex(), pseudonym_epoch=day, sequence=sequence,
                                day_bucket=day, model_version=7, persona_index=persona, features=features)
    envelope = Sealer(opener.public_key, app_id="com.example.shop").seal(contribution)
    collector = cleanroom_wire.load_private_key_file(entry["private_key_file"])
    decoded, plaintext = cleanroom_wire.open_envelope(collector, envelope, "com.example.shop", [7])
    assert decoded == {**dataclasses.asdict(contribution), "features": list(contribution.features)}
    assert plaintext == encode_payload(contribution)
