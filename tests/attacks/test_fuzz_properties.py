"""Every parser of untrusted bytes returns a value or raises a declared error: never anything else.

Valid inputs are built first (a sealed envelope, a signed manifest, a feature
spec, a folded state, a store file), then mutated at the byte level (flips,
truncation, insertion, duplication) or at the JSON level (any value replaced
by any JSON value, keys dropped or added, deep nesting, huge numbers). Each
call runs under a deadline in a worker thread, so a hang fails the example
instead of the run. The coverage-guided versions of these are in ``fuzz/``.

Known bugs in files this suite may not change are tolerated by name
(``KNOWN_*_BUGS``), each with a strict-xfail repro in ``test_known_bugs.py``:
when a bug is fixed its repro fails loudly and its entry here must go.
"""

from __future__ import annotations

import copy
import json
import math
import os
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings, strategies as st

from edgepersona.sdk import (
    Contribution,
    EncryptedStore,
    FoldPlan,
    FoldState,
    InvalidEnvelope,
    MemoryKeyProvider,
    PersonaError,
    PersonaRuntime,
    Sealer,
    SealSuite,
    StoreCorruptError,
    load_spec_json,
)
from edgepersona.sdk.protocol.bundle import bundle_source, verify_bundle
from edgepersona.sdk.protocol.envelope import Opener, generate_collector_keypair
from edgepersona.sdk.protocol.fold import PropertyValue
from edgepersona.sdk.protocol.manifest import Manifest, parse_manifest
from edgepersona.sdk.protocol.signing import MANIFEST_CONTEXT, sign
from edgepersona.sdk.protocol.spec import FeatureSpec
from edgepersona.sdk.protocol.trust import TrustedKeys

T = TypeVar("T")
DEADLINE_S = 10.0  # seconds one call may take before it counts as a hang
APP_ID = "fuzz-app"
_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]


def budget(examples: int) -> settings:
    """Modest example counts (the file runs in well under 40 s); EDGEPERSONA_FUZZ_SCALE=N hunts longer."""
    scale = int(os.environ.get("EDGEPERSONA_FUZZ_SCALE", "1"))
    return settings(max_examples=examples * scale, suppress_health_check=_SUPPRESSED)


# ------------------------------------------------------------------ the guard


class HangError(AssertionError):
    """A call did not return within the deadline."""


def within_deadline(call: Callable[[], T], seconds: float = DEADLINE_S) -> T:
    """Run ``call`` in a worker thread; re-raise what it raised; fail if it hangs."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test thread as is
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise HangError(f"call still running after {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def declared_outcome(call: Callable[[], T], allowed: tuple[type[BaseException], ...] = (PersonaError,),
                     known_bugs: tuple[type[BaseException], ...] = ()) -> T | None:
    """The call's value, or None if it raised an allowed error; anything else fails."""
    try:
        return within_deadline(call)
    except allowed:
        return None
    except known_bugs:
        return None


# ------------------------------------------------------------- known bugs
# Tolerated by name, each with a strict-xfail repro in test_known_bugs.py; remove an entry
# when its repro starts to pass.

# A signed manifest may carry inf/NaN assigner parameters (sdk/_manifest.py accepts any float):
# assign then computes inf - inf, which pytest's filterwarnings=error turns into this error.
KNOWN_MANIFEST_BUGS: tuple[type[BaseException], ...] = ()  # fixed: assigner values are checked
# zipfile errors that bundle_source lets out instead of ModelIntegrityError (sdk/_bundle.py).
KNOWN_ARCHIVE_BUGS: tuple[type[BaseException], ...] = ()  # fixed in bundle_source
# FoldState.from_bytes lets these out instead of StoreCorruptError (sdk/_fold.py).
KNOWN_STATE_BUGS: tuple[type[BaseException], ...] = ()  # fixed in FoldState.from_bytes


# -------------------------------------------------------------- mutations


@st.composite
def byte_mutations(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` after 1-4 byte-level edits."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "duplicate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif op == "duplicate":
            data[at:at] = data[at:at + draw(st.integers(1, 64))]
    return bytes(data)


JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.sampled_from([10**400, -(10**400), 2**63, -1, 0])
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document (the root is ``()``)."""
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


@st.composite
def json_mutations(draw: st.DrawFn, document: Any) -> bytes:
    """``document`` after 1-3 structural edits, serialised (NaN and Infinity allowed)."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            doc = draw(JSON_VALUES)
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        op = draw(st.sampled_from(["replace", "delete", "add", "wrap"]))
        if op == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif op == "delete":
            del parent[path[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        else:
            parent[path[-1]] = [parent[path[-1]]]
    text = json.dumps(doc, allow_nan=True)
    if draw(st.booleans()) and draw(st.booleans()):  # a quarter of the time: deep nesting
        depth = draw(st.sampled_from([50, 2_000, 100_000]))
        text = "[" * depth + text + "]" * depth
    return text.encode()


def mutations(document: Any, raw: bytes) -> st.SearchStrategy[bytes]:
    return byte_mutations(raw) | json_mutations(document)


# ------------------------------------------------------------------ envelopes


@pytest.fixture(scope="module")
def envelopes() -> dict[SealSuite, tuple[Opener, bytes, Contribution]]:
    contribution = Contribution(pseudonym="ab" * 16, pseudonym_epoch=3, sequence=7, day_bucket=20_000,
                                model_version=2, persona_index=1, features=(0.5, 1.5, -2.0))
    made = {}
    for suite in SealSuite:
        private, public = generate_collector_keypair(suite)
        envelope = Sealer(public, app_id=APP_ID).seal(contribution)
        made[suite] = (Opener(private), envelope, contribution)
    return made


@budget(300)
@given(data=st.data(), suite=st.sampled_from(list(SealSuite)))
def test_mutated_envelopes_open_to_the_original_or_raise_invalid_envelope(
        data: st.DataObject, suite: SealSuite,
        envelopes: dict[SealSuite, tuple[Opener, bytes, Contribution]]) -> None:
    opener, envelope, original = envelopes[suite]
    mutated = data.draw(byte_mutations(envelope) | st.binary(max_size=2_000))
    opened = declared_outcome(lambda: opener.open(mutated, app_id=APP_ID, model_versions={2}),
                              allowed=(InvalidEnvelope,))
    assert opened is None or opened == original  # AEAD: nothing else can open


# ------------------------------------------------------------------ manifests


def sign_manifest_bytes(files: Mapping[str, bytes], raw: bytes, key: Ed25519PrivateKey) -> dict[str, bytes]:
    return {**files, "manifest.json": raw, "signature": sign(key, MANIFEST_CONTEXT, raw).to_bytes()}


@budget(250)
@given(data=st.data())
def test_mutated_manifests_parse_or_raise_schema_errors(data: st.DataObject,
                                                       bundle_files: Mapping[str, bytes]) -> None:
    raw = bundle_files["manifest.json"]
    mutated = data.draw(mutations(json.loads(raw), raw))
    parsed = declared_outcome(lambda: parse_manifest(mutated))
    assert parsed is None or isinstance(parsed, Manifest)


@budget(60)
@given(data=st.data())
def test_signed_mutated_manifests_verify_load_and_assign_or_raise_declared_errors(
        data: st.DataObject, bundle_files: Mapping[str, bytes], signing_key: Ed25519PrivateKey,
        public_key: bytes, bundle_now: datetime) -> None:
    raw = bundle_files["manifest.json"]
    signed = sign_manifest_bytes(bundle_files, data.draw(mutations(json.loads(raw), raw)), signing_key)
    trusted = TrustedKeys([public_key])
    declared_outcome(lambda: verify_bundle(bundle_source(signed), trusted, now=bundle_now))
    backend = data.draw(st.sampled_from(["onnxruntime", "numpy"]))

    def open_and_assign() -> object:
        runtime = PersonaRuntime.open(signed, trusted_keys=[public_key], now=bundle_now,
                                      backend=backend)
        middle = [(f.bounds[0] + f.bounds[1]) / 2 for f in runtime.spec.features]
        return runtime.assign(middle, explain=True)

    declared_outcome(open_and_assign, known_bugs=KNOWN_MANIFEST_BUGS)


@budget(150)
@given(data=st.data())
def test_mutated_archives_verify_or_raise_declared_errors(
        data: st.DataObject, bundle_zip: Path, public_key: bytes, bundle_now: datetime) -> None:
    archive = data.draw(byte_mutations(bundle_zip.read_bytes()) | zip_header_mutations(bundle_zip))
    trusted = TrustedKeys([public_key])
    declared_outcome(lambda: verify_bundle(bundle_source(archive), trusted, now=bundle_now),
                     known_bugs=KNOWN_ARCHIVE_BUGS)


def zip_header_mutations(bundle_zip: Path) -> st.SearchStrategy[bytes]:
    """Whole-byte rewrites inside the central directory, where zipfile parses most."""
    raw = bundle_zip.read_bytes()
    start = raw.find(b"PK\x01\x02")

    @st.composite
    def rewrite(draw: st.DrawFn) -> bytes:
        data = bytearray(raw)
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(start, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)

    return rewrite()


# -------------------------------------------------------------- feature specs


@budget(300)
@given(data=st.data())
def test_mutated_specs_load_and_compile_or_raise_schema_errors(data: st.DataObject,
                                                               bundle_spec: FeatureSpec) -> None:
    raw = bundle_spec.to_json().encode()
    mutated = data.draw(mutations(json.loads(raw), raw))
    as_text = data.draw(st.booleans())
    spec = declared_outcome(lambda: load_spec_json(mutated.decode("utf-8", "replace") if as_text
                                                   else mutated))
    if spec is not None:
        within_deadline(lambda: FoldPlan.from_spec(spec))  # a valid spec always compiles


# ------------------------------------------------------------- folded states


@pytest.fixture(scope="module")
def folded_state(bundle_spec: FeatureSpec) -> tuple[FoldPlan, bytes]:
    plan = FoldPlan.from_spec(bundle_spec)
    state = plan.new_state()
    events: list[tuple[str, dict[str, PropertyValue]]] = [
        ("session", {}), ("purchase", {"value": 12.5}), ("view", {"category": "books"}),
        ("view", {"category": 7})]
    for day, (event, props) in enumerate(events):
        state.fold(event, 1_735_000_000.0 + day * 86_400, props)
    return plan, state.to_bytes()


@budget(300)
@given(data=st.data())
def test_mutated_state_files_restore_or_raise_store_corrupt(
        data: st.DataObject, folded_state: tuple[FoldPlan, bytes]) -> None:
    plan, raw = folded_state
    mutated = data.draw(mutations(json.loads(raw), raw))
    restored = declared_outcome(lambda: FoldState.from_bytes(plan, mutated),
                                allowed=(StoreCorruptError,), known_bugs=KNOWN_STATE_BUGS)
    assert restored is None or isinstance(restored, FoldState)


# ------------------------------------------------------------- store files


RECORDS = {("", "trusted_version"): b"3", ("alice", "fold_state"): b'{"x": 1}',
           ("bob", "fold_state"): bytes(range(256))}
MASTER_KEY = bytes(range(1, 33))


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("store") / "state.db"
    with EncryptedStore.open(path, MemoryKeyProvider(MASTER_KEY)) as store:
        store.put_many((s, n, v) for (s, n), v in RECORDS.items())
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    return path.read_bytes()


@budget(80)
@given(data=st.data())
def test_mutated_store_files_read_back_authentic_records_or_raise_store_errors(
        data: st.DataObject, store_file: bytes, tmp_path: Path) -> None:
    path = tmp_path / f"fuzzed-{data.draw(st.integers(0, 10**9))}.db"
    path.write_bytes(data.draw(byte_mutations(store_file)))

    def read_all() -> dict[tuple[str, str], bytes | None]:
        with EncryptedStore.open(path, MemoryKeyProvider(MASTER_KEY)) as store:
            store.subjects()
            return {key: store.get(*key) for key in RECORDS}

    records = declared_outcome(read_all)
    for key, value in (records or {}).items():
        assert value in (RECORDS[key], None)  # authentic or gone, never altered


def test_the_deadline_guard_reports_a_hang() -> None:
    with pytest.raises(HangError):
        within_deadline(lambda: threading.Event().wait(2), seconds=0.05)
    assert math.isclose(within_deadline(lambda: 1.5), 1.5)
