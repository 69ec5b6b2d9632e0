"""Repros of bugs the attack suite and the fuzzers found in files it may not change.

These were strict xfails while the bugs stood; they are fixed now and the
repros stay as regression tests, with the matching ``KNOWN_*``
tolerance in ``test_fuzz_properties.py`` and ``fuzz/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import (
    FoldPlan,
    FoldState,
    ModelIntegrityError,
    PersonaError,
    PersonaRuntime,
    StoreCorruptError,
)
from edgepersona.sdk.protocol.bundle import bundle_source
from edgepersona.sdk.protocol.signing import MANIFEST_CONTEXT, sign
from edgepersona.sdk.protocol.spec import FeatureSpec


def central_directory(archive: bytes) -> int:
    return archive.find(b"PK\x01\x02")


def test_zip_with_an_unknown_extract_version_is_an_integrity_error(bundle_zip: Path) -> None:
    archive = bytearray(bundle_zip.read_bytes())
    archive[central_directory(archive) + 6] = 0xEB  # "version needed to extract": 23.5
    with pytest.raises(ModelIntegrityError):
        bundle_source(bytes(archive))


def test_zip_with_a_non_utf8_name_flagged_utf8_is_an_integrity_error(bundle_zip: Path) -> None:
    archive = bytearray(bundle_zip.read_bytes())
    start = central_directory(archive)
    archive[start + 9] |= 0x08  # general purpose flag bit 11: the name is UTF-8 ...
    archive[start + 46] = 0xFF  # ... but its first byte is not
    with pytest.raises(ModelIntegrityError):
        bundle_source(bytes(archive))


@pytest.fixture(scope="module")
def state_bytes(bundle_spec: FeatureSpec) -> tuple[FoldPlan, dict[str, object]]:
    plan = FoldPlan.from_spec(bundle_spec)
    state = plan.new_state()
    state.fold("session", 1_735_000_000.0, {})
    body = json.loads(state.to_bytes())
    assert isinstance(body, dict)
    return plan, body


@pytest.mark.parametrize(("field", "value"), [("events", math.inf), ("latest", 10**400)],
                         ids=["events-Infinity", "latest-10e400"])
def test_state_record_with_huge_numbers_is_store_corrupt(
        field: str, value: float, state_bytes: tuple[FoldPlan, dict[str, object]]) -> None:
    plan, body = state_bytes
    with pytest.raises(StoreCorruptError):  # json writes inf as Infinity; 10**400 stays an int
        FoldState.from_bytes(plan, json.dumps({**body, field: value}).encode())


def test_deeply_nested_state_record_is_store_corrupt(
        state_bytes: tuple[FoldPlan, dict[str, object]]) -> None:
    plan, _ = state_bytes
    with pytest.raises(StoreCorruptError):
        FoldState.from_bytes(plan, b"[" * 100_000 + b"]" * 100_000)


def test_signed_manifest_with_infinite_assigner_parameters_is_refused(
        bundle_files: Mapping[str, bytes], signing_key: Ed25519PrivateKey, public_key: bytes,
        bundle_now: datetime) -> None:
    fields = json.loads(bundle_files["manifest.json"])
    fields["assigner"]["center"][0] = math.inf
    raw = json.dumps(fields).encode()  # "Infinity": pydantic's JSON parser takes it as a float
    signed = {**bundle_files, "manifest.json": raw,
              "signature": sign(signing_key, MANIFEST_CONTEXT, raw).to_bytes()}
    with pytest.raises(PersonaError):
        runtime = PersonaRuntime.open(signed, trusted_keys=[public_key], now=bundle_now)
        runtime.assign([1.0] * len(runtime.spec.features), explain=True)
