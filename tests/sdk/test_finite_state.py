"""State that stays finite: refused input writes nothing, accepted input keeps every subject assignable.

The device (``check_event``, ``FoldState.fold``, ``PersonaClient.track``) and the
trainer's batch path (``compute_features``) apply the same limits: numbers
within ±1e200, strings up to 256 characters. Under them every accumulator is
bounded by 1e200 times the number of events, so no sequence of accepted events
can make a subject unassignable, on the device or in batch, and the two agree.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edgepersona.sdk import (
    FoldPlan,
    FoldState,
    InputError,
    MemoryKeyProvider,
    PersonaClient,
    PersonaRuntime,
    StoreCorruptError,
)
from edgepersona.sdk.protocol.fold import MAX_MAGNITUDE, MAX_STRING_CHARS, check_event
from edgepersona.trainer.data.events import EventLog
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.data.replay import replay_on_device

T0 = 1_735_776_000.0  # 2025-01-02, after the test bundles were created
DAY = 86_400.0


KEYS = MemoryKeyProvider()


def open_client(bundle: Mapping[str, bytes], public_key: bytes, path: Path) -> PersonaClient:
    return PersonaClient.open(dict(bundle), trusted_keys=[public_key], store=path / "state.db",
                              key_provider=KEYS, clock=lambda: T0)


def test_a_value_that_would_overflow_is_refused_twice_and_the_subject_stays_assignable(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path) -> None:
    with open_client(bundle_files, public_key, tmp_path) as client:
        client.track("purchase", 20.0, subject="bob", at=T0 - 60)
        before = client.features(subject="bob")
        for _ in range(2):
            with pytest.raises(InputError, match="limited to"):
                client.track("purchase", 1e308, subject="bob", at=T0 - 30)
        assert client.features(subject="bob") == before
        client.assign(subject="bob")
    with open_client(bundle_files, public_key, tmp_path) as client:  # nothing was persisted
        assert client.features(subject="bob") == before
        client.track("purchase", MAX_MAGNITUDE, subject="bob", at=T0 - 10)
        client.track("purchase", MAX_MAGNITUDE, subject="bob", at=T0 - 5)
        assert all(math.isfinite(v) for v in client.features(subject="bob"))
        client.assign(subject="bob")


def test_a_ten_megabyte_property_string_is_refused_and_nothing_is_written(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path) -> None:
    with open_client(bundle_files, public_key, tmp_path) as client:
        client.track("session", subject="carol", at=T0 - 60)
        size = sum(p.stat().st_size for p in tmp_path.iterdir())
        with pytest.raises(InputError, match=f"limited to {MAX_STRING_CHARS} characters"):
            client.track("view", subject="carol", at=T0 - 30,
                         properties={"category": "x" * 10_000_000})
        client.track("view", subject="carol", at=T0 - 20,
                     properties={"category": "y" * MAX_STRING_CHARS})  # the limit itself is fine
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < size + 200_000


@pytest.mark.parametrize(("event", "value", "properties", "message"), [
    ("e" * 129, None, None, "at most 128 characters"),
    ("buy", -2e200, None, "limited to"),
    ("buy", 10**400, None, "must be finite"),
    ("buy", None, {f"p{i}": 1 for i in range(65)}, "at most 64 properties"),
    ("buy", None, {"k" * 65: 1}, "property names"),
    ("buy", None, {"n": float("nan")}, "must be finite"),
])
def test_check_event_states_each_limit(event: str, value: object, properties: dict[str, object] | None,
                                        message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_event(event, value, T0, properties)


def test_a_stored_state_with_a_non_finite_number_is_store_corrupt(runtime: PersonaRuntime) -> None:
    plan = runtime.fold_plan
    state = plan.new_state()
    state.fold("purchase", T0, check_event("purchase", 10.0, T0, None))
    body = json.loads(state.to_bytes())
    for key in ("values", "derived"):
        broken = json.loads(json.dumps(body))
        target = broken["values"] if key == "values" else broken["derived"][0]
        target[0] = math.inf
        with pytest.raises(StoreCorruptError):
            FoldState.from_bytes(plan, json.dumps(broken).encode())


@pytest.fixture(scope="module")
def runtime(bundle_files: Mapping[str, bytes], public_key: bytes) -> PersonaRuntime:
    return PersonaRuntime.open(dict(bundle_files), trusted_keys=[public_key])


# --- any accepted sequence: assignable on device and in batch, and the two agree ----------

numbers = st.one_of(
    st.sampled_from([MAX_MAGNITUDE, -MAX_MAGNITUDE, 0.0, 5e-324, 1e-300, 0.5]),
    st.floats(-MAX_MAGNITUDE, MAX_MAGNITUDE, allow_nan=False),
)
events = st.lists(st.tuples(
    st.integers(0, 2),                                         # user
    st.one_of(st.floats(0, 3 * 365 * DAY), st.integers(0, 90).map(float)),  # age before T0
    st.sampled_from(["purchase", "session", "view", "other"]),
    numbers,
    st.one_of(st.none(), st.text(max_size=MAX_STRING_CHARS), st.sampled_from(["a", "b", "c"])),
), min_size=1, max_size=60)


def make_log(rows: list[tuple[int, float, str, float, str | None]]) -> EventLog:
    return EventLog(
        user=np.array([r[0] for r in rows], dtype=np.int64),
        time=np.array([T0 - r[1] for r in rows], dtype=np.float64),
        event=np.array([r[2] for r in rows], dtype=str),
        properties={"value": np.array([r[3] for r in rows], dtype=np.float64),
                    "category": np.array([r[4] for r in rows], dtype=object)},
        user_keys=["u0", "u1", "u2"], bad_rows=Counter(), source="hypothesis")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=events)
def test_any_accepted_sequence_keeps_every_subject_assignable_and_device_equals_batch(
        runtime: PersonaRuntime, rows: list[tuple[int, float, str, float, str | None]]) -> None:
    for _user, age, name, value, category in rows:  # every drawn event passes the device's checks
        check_event(name, value, T0 - age, {"category": category})
    log = make_log(rows)
    batch = compute_features(log, runtime.spec, T0)
    folded = replay_on_device(runtime.fold_plan, log, T0)
    assert np.isfinite(batch).all() and np.isfinite(folded).all()
    for a, b in zip(runtime.assign_many(folded), runtime.assign_many(batch), strict=True):
        assert math.isfinite(a.confidence) and math.isfinite(b.confidence)
    magnitude = np.abs(compute_features(make_log([(u, t, e, abs(v), c) for u, t, e, v, c in rows]),
                                        runtime.spec, T0))
    np.testing.assert_array_less(np.abs(folded - batch), 1e-9 * np.maximum(magnitude, 1.0) + 1e-300)


def test_batch_features_refuse_what_the_device_refuses(runtime: PersonaRuntime) -> None:
    with pytest.raises(InputError, match=r"property 'value' has 2 value\(s\) beyond"):
        compute_features(make_log([(0, 10.0, "purchase", 1e308, None),
                                   (0, 5.0, "purchase", 1e308, None)]), runtime.spec, T0)
    with pytest.raises(InputError, match=r"property 'category' has 1 string value\(s\) over 256"):
        compute_features(make_log([(0, 10.0, "view", 1.0, "x" * 10_000)]), runtime.spec, T0)


@settings(max_examples=40, deadline=None)
@given(times=st.lists(st.floats(0, 400 * DAY), min_size=1, max_size=300),
       keys=st.lists(st.integers(0, 40), min_size=300, max_size=300))
def test_incremental_distinct_sums_equal_a_fresh_recomputation(
        runtime: PersonaRuntime, times: list[float], keys: list[int]) -> None:
    # the conftest spec (a 30-day distinct feature, active days) with a cap that evicts often
    plan = FoldPlan.from_spec(runtime.spec.model_copy(update={"distinct_cap": 5}))
    state = plan.new_state()
    for at, key in zip(times, keys, strict=False):
        state.fold("view", T0 - at, check_event("view", None, T0 - at, {"category": f"c{key}"}))
    body = json.loads(state.to_bytes())
    body.pop("derived")  # as written by an earlier version: the sums are recomputed
    fresh = FoldState.from_bytes(plan, json.dumps(body).encode())
    assert fresh is not None
    np.testing.assert_allclose(state.evaluate(T0), fresh.evaluate(T0), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(state.evaluate(T0), state.evaluate_reference(T0), rtol=1e-12,
                               atol=1e-300)


@pytest.mark.parametrize(("value", "properties"), [
    (2e200, {}),
    (None, {"item": -1e201}),
    (None, {"item": 10**400}),
    (None, {"category": "c" * (MAX_STRING_CHARS + 1)}),
    (None, {f"p{i}": 1 for i in range(65)}),
])
def test_the_conformance_document_states_the_same_limits(value: object,
                                                         properties: dict[str, object]) -> None:
    from cleanroom import errors as cleanroom_errors, fold as cleanroom_fold

    with pytest.raises(InputError):
        check_event("buy", value, T0, properties)
    with pytest.raises(cleanroom_errors.InputError):
        cleanroom_fold.check_event("buy", value, T0, properties)


@pytest.mark.parametrize("text", ["1e200", "-1e200", "1e201", "1e300", " 2e250 ", "1e400"])
def test_numeric_strings_beyond_the_limit_are_no_number_in_the_document_too(text: str) -> None:
    from cleanroom import fold as cleanroom_fold

    from edgepersona.sdk.protocol.fold import numeric_property

    assert numeric_property(text) == cleanroom_fold.number(text)
    assert (numeric_property(text) is None) == (abs(float(text)) > MAX_MAGNITUDE)
