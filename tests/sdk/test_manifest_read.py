"""The device's light manifest reading agrees with the pydantic models, value for value.

Differential: the same bytes go through ``parse_manifest`` (pydantic, the
reference) and ``parse_manifest_view`` (json only, falling back to the models
where it cannot vouch); both must accept or both refuse with the same error
class and message, and what the view holds must equal what the models hold.
The light reading alone (``read_manifest_view``) must never accept what the
models refuse. ``FoldPlan.spec_id`` must not change by a byte.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edgepersona.sdk.errors import SchemaError
from edgepersona.sdk.protocol.fold import FoldPlan
from edgepersona.sdk.protocol.manifest import parse_manifest
from edgepersona.sdk.protocol.manifest_read import (
    parse_manifest_view,
    read_manifest_view,
    read_spec_view,
)
from edgepersona.sdk.protocol.manifest_view import json_float
from edgepersona.sdk.protocol.spec import Feature, FeatureSpec, Window

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = (ROOT / "models" / "reference" / "manifest.json").read_bytes()
SPEC_FILES = sorted((ROOT / "trainer" / "datasets").glob("*.json"))
_INTERNAL = {"raw", "loader", "model_cache", "_lock"}


def assert_same(view: Any, model: Any, where: str = "manifest") -> None:
    """Every field of the view equals the model's field of the same name, type included."""
    if is_dataclass(view):
        for f in fields(view):
            if f.name not in _INTERNAL:
                assert_same(getattr(view, f.name), getattr(model, f.name), f"{where}.{f.name}")
    elif isinstance(view, tuple):
        assert isinstance(model, tuple) and len(view) == len(model), where
        for i, (v, m) in enumerate(zip(view, model, strict=True)):
            assert_same(v, m, f"{where}[{i}]")
    elif isinstance(view, Mapping):
        assert list(view) == list(model), where
        for key in view:
            assert_same(view[key], model[key], f"{where}[{key!r}]")
    elif isinstance(view, datetime):
        assert view == model and view.utcoffset() == model.utcoffset(), where
    else:
        assert type(view) is type(model) and repr(view) == repr(model), (where, view, model)


def outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", parse(raw)
    except SchemaError as exc:
        return type(exc).__name__, str(exc)


def check_agreement(raw: bytes) -> bool:
    """Both readings agree on ``raw``; True when the light reading alone accepted it."""
    reference, light = outcome(parse_manifest, raw), outcome(parse_manifest_view, raw)
    assert reference[0] == light[0]
    alone = read_manifest_view(raw)
    if reference[0] != "ok":
        assert reference[1] == light[1]
        assert alone is None  # never accepts what the models refuse
        return False
    assert_same(light[1], reference[1])
    assert light[1].spec.model_dump_json() == reference[1].spec.model_dump_json()
    if alone is not None:
        assert_same(alone, reference[1])
    return alone is not None


# ------------------------------------------------------------------ known manifests

def test_the_reference_manifest_is_read_lightly_and_identically() -> None:
    assert check_agreement(REFERENCE)


def test_the_test_bundle_manifest_is_read_lightly_and_identically(
        bundle_files: Mapping[str, bytes], trained_v2: Any) -> None:
    assert check_agreement(bundle_files["manifest.json"])
    assert check_agreement(trained_v2.files["manifest.json"])


def test_a_view_builds_the_same_full_manifest_once() -> None:
    view = parse_manifest_view(REFERENCE)
    assert view.model() is view.model()
    assert view.model() == parse_manifest(REFERENCE)


# ------------------------------------------------------------------ mutated manifests

REFERENCE_DATA = json.loads(REFERENCE)
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
    st.text(max_size=70), st.sampled_from(["", "1", "1.5", "high", "log1p", "2026-01-01",
                                           "2026-01-01T00:00:00", "2026-01-01T00:00:00+25:00",
                                           "2026-01-01 00:00:00Z", "\ud800", "a" * 500]),
    st.lists(st.integers(0, 3), max_size=3), st.builds(dict),
    st.fixed_dictionaries({"x": st.just(1)}))


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into the JSON tree (centroid rows sampled, not every number)."""
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            out += paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data[:3]):
            out += paths(value, (*prefix, i))
    return out


ALL_PATHS = paths(REFERENCE_DATA)


def parent_of(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = copy.deepcopy(REFERENCE_DATA)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        try:
            parent = parent_of(data, path)
            current = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue
        action = draw(st.sampled_from(["drop", "add", "retype", "number", "number", "text"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "add" and isinstance(current, dict):
            current[draw(st.sampled_from(["extra", "unit", "lifecycle", "epsilon", "period_days",
                                          "notes", "kind"]))] = draw(ODD_VALUES)
        elif action == "number" and isinstance(current, (int, float)) and not isinstance(
                current, bool):
            parent[path[-1]] = draw(st.sampled_from([
                0, -1, 1, 2, 1.0, 0.5, -0.0, 1e-7, 1e300, 2**60, 10_001, 64 * 1024 * 1024 + 1,
                current + 1, current * 1.5, -current, float(current), int(current)]))
        elif action == "text" and isinstance(current, str):
            parent[path[-1]] = current + draw(st.sampled_from(["", "x", " ", "\n", "é", "-"])) \
                if draw(st.booleans()) else current[:draw(st.integers(0, 3))]
        else:
            parent[path[-1]] = draw(ODD_VALUES)
    text = json.dumps(data, allow_nan=True, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_manifests_get_the_same_verdict_and_values(raw: bytes) -> None:
    check_agreement(raw)


@pytest.mark.parametrize("raw", [
    b"", b"[]", b"{}", b"null", b"\xff\xfe{}", REFERENCE.replace(b"{", b"{ ", 1),
    b"\xef\xbb\xbf" + REFERENCE, REFERENCE.decode().encode("utf-16"),
    REFERENCE.replace(b'"schema_version":1', b'"schema_version":1.0'),
    REFERENCE.replace(b'"schema_version":1', b'"schema_version":"1"'),
    REFERENCE.replace(b'"schema_version":1', b'"schema_version":2'),
    REFERENCE.replace(b'"schema_version":1', b'"schema_version":1,"schema_version":1'),
    REFERENCE.replace(b'"version":1', b'"version":true'),
    REFERENCE.replace(b'2026-01-01T00:00:00Z', b'2026-01-01T00:00:00+01:00'),
    REFERENCE.replace(b'2026-01-01T00:00:00Z', b'2026-01-01T00:00:00.123456Z'),
    REFERENCE.replace(b'2026-01-01T00:00:00Z', b'2026-01-01T00:00:00'),
    REFERENCE.replace(b'2026-01-01T00:00:00Z', b'1767225600'),
    REFERENCE.replace(b'2035-12-30T00:00:00Z', b'2025-12-30T00:00:00Z'),
    REFERENCE.replace(b'"k_min":10', b'"k_min":NaN'),
    REFERENCE.replace(b'"bounds":[0.0,60.0]', b'"bounds":[60.0,0.0]'),
    REFERENCE.replace(b'"bounds":[0.0,60.0]', b'"bounds":[0,60]'),
    REFERENCE.replace(b'"mix":[0.6,0.4]', b'"mix":[0.6,0.5]'),
], ids=lambda raw: str(len(raw)))
def test_edge_forms_get_the_same_verdict_and_values(raw: bytes) -> None:
    check_agreement(raw)


# ------------------------------------------------------------------ spec_id

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
ANY_FLOAT = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def windows(draw: st.DrawFn) -> Window:
    kind = draw(st.sampled_from(["all_time", "half_life", "blend"]))
    halves = st.floats(min_value=5e-324, max_value=1e300)
    if kind == "all_time":
        return Window()
    if kind == "half_life":
        return Window.half_life(draw(halves))
    first = draw(st.floats(min_value=1e-9, max_value=1 - 1e-9))
    return Window.blend((first, draw(halves)), (1.0 - first, draw(halves)))


@st.composite
def specs(draw: st.DrawFn) -> FeatureSpec:
    features = []
    for name in draw(st.lists(NAMES, min_size=1, max_size=4, unique=True)):
        aggregate = draw(st.sampled_from(["count", "sum", "mean", "distinct", "recency_days"]))
        low = draw(st.floats(min_value=-0.99, max_value=1e300))
        features.append(Feature(
            name=name, event=draw(st.text(min_size=1, max_size=20)),
            property=draw(st.text(min_size=1, max_size=8)) if aggregate in ("sum", "mean", "distinct")
            else None, aggregate=aggregate,
            window=Window() if aggregate == "recency_days" else draw(windows()),
            transform=draw(st.sampled_from(["none", "log1p"])), bounds=(low, low * 2 + 1.0),
            weight=draw(st.floats(min_value=5e-324, max_value=1e300)),
            label=draw(st.none() | st.text(max_size=80)),
            unit=draw(st.none() | st.text(min_size=1, max_size=24))))
    return FeatureSpec(
        features=tuple(features), distinct_cap=draw(st.integers(1, 10_000)),
        min_events=draw(st.integers(0, 2**53)), min_confidence=draw(st.floats(0.0, 1.0)),
        period_days=draw(st.none() | st.floats(min_value=1e-7, max_value=1e300)),
        event_labels=draw(st.dictionaries(st.text(max_size=8), st.text(min_size=1, max_size=60),
                                          max_size=3)),
        notes=tuple(draw(st.lists(st.text(max_size=40), max_size=2))))


def assert_same_spec_id(spec: FeatureSpec) -> None:
    view = read_spec_view(json.loads(spec.model_dump_json()))
    assert view is not None
    assert_same(view, spec, "spec")
    assert view.model_dump_json() == spec.model_dump_json()
    assert FoldPlan.from_spec(view).spec_id == FoldPlan.from_spec(spec).spec_id


@settings(max_examples=300, deadline=None)
@given(specs())
def test_spec_id_is_byte_identical_on_built_specs(spec: FeatureSpec) -> None:
    assert_same_spec_id(spec)


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.name)
def test_spec_id_is_byte_identical_on_the_dataset_specs(path: Path) -> None:
    assert_same_spec_id(FeatureSpec.model_validate_json(path.read_bytes()))


def test_spec_id_is_byte_identical_on_the_bundles(bundle_files: Mapping[str, bytes]) -> None:
    for raw in (REFERENCE, bundle_files["manifest.json"]):
        view, model = parse_manifest_view(raw), parse_manifest(raw)
        assert FoldPlan.from_spec(view.spec).spec_id == FoldPlan.from_spec(model.spec).spec_id
    assert FoldPlan.from_spec(parse_manifest_view(REFERENCE).spec).spec_id == "0144440737197a5f"


@given(ANY_FLOAT)
def test_floats_are_written_as_pydantic_writes_them(value: float) -> None:
    from pydantic_core import to_json

    assert json_float(value) == to_json(value).decode()
    assert math.isfinite(float(json_float(value)))
