"""The feature spec: valid specs round-trip through JSON, invalid ones say what is wrong.

Bad specs go through :func:`load_spec_json`, the path a spec file takes, and
must raise :class:`SchemaError` (never a bare pydantic or JSON error) with a
message that names the offending field and what is allowed instead.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import given, strategies as st

from edgepersona.sdk import Feature, FeatureSpec, PersonaError, SchemaError, Window, load_spec_json

# ---------------------------------------------------------------- valid specs

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
EVENTS = st.one_of(st.just("*"), st.text(min_size=1, max_size=20))
PROPERTIES = st.text(min_size=1, max_size=20)
FINITE = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
HALF_LIVES = st.floats(min_value=1e-3, max_value=1e5, allow_nan=False)


@st.composite
def windows(draw: st.DrawFn) -> Window:
    kind = draw(st.sampled_from(["all_time", "half_life", "blend"]))
    if kind == "all_time":
        return Window()
    if kind == "half_life":
        return Window.half_life(draw(HALF_LIVES))
    n = draw(st.integers(2, 4))
    raw = draw(st.lists(st.integers(1, 100), min_size=n, max_size=n))
    mix = [r / sum(raw) for r in raw]
    mix[-1] = 1.0 - sum(mix[:-1])  # exact complement, so the sum is 1 within rounding
    return Window.blend(*zip(mix, draw(st.lists(HALF_LIVES, min_size=n, max_size=n)), strict=True))


@st.composite
def bounds_for(draw: st.DrawFn, transform: str) -> tuple[float, float]:
    low_floor = -0.999 if transform == "log1p" else -1e12
    low = draw(st.floats(min_value=low_floor, max_value=1e12, allow_nan=False))
    span = draw(st.floats(min_value=1e-3, max_value=1e12, allow_nan=False))
    high = low + span
    if not high > low:  # span lost in rounding at large |low|
        high = math.nextafter(low, math.inf) if low + 1 == low else low + 1
    return (low, high)


@st.composite
def features(draw: st.DrawFn, name: str) -> Feature:
    aggregate = draw(st.sampled_from(
        ["count", "sum", "mean", "distinct", "recency_days", "active_days"]))
    prop = draw(PROPERTIES) if aggregate in ("sum", "mean", "distinct") else None
    window = Window() if aggregate == "recency_days" else draw(windows())
    transform = draw(st.sampled_from(["none", "log1p"]))
    return Feature(
        name=name, event=draw(EVENTS), property=prop, aggregate=aggregate, window=window,
        transform=transform, bounds=draw(bounds_for(transform)),
        bounds_source=draw(st.sampled_from(["declared", "coarse", "data"])),
        weight=draw(st.floats(min_value=1e-6, max_value=1e6)),
        label=draw(st.none() | st.text(max_size=80)),
        high_name=draw(st.none() | st.text(max_size=60)),
        low_name=draw(st.none() | st.text(max_size=60)),
        unit=draw(st.none() | st.text(min_size=1, max_size=24)),
    )


@st.composite
def specs(draw: st.DrawFn) -> FeatureSpec:
    names = draw(st.lists(NAMES, min_size=1, max_size=6, unique=True))
    return FeatureSpec(
        features=tuple(draw(features(n)) for n in names),
        distinct_cap=draw(st.integers(1, 10_000)),
        min_events=draw(st.integers(0, 10**6)),
        min_confidence=draw(st.floats(0.0, 1.0)),
        period_days=draw(st.none() | st.floats(min_value=1e-3, max_value=1e4)),
        event_labels=draw(st.dictionaries(EVENTS, st.text(min_size=1, max_size=60), max_size=3)),
        notes=tuple(draw(st.lists(st.text(max_size=400), max_size=3))),
    )


def test_a_spec_without_the_vocabulary_fields_still_loads() -> None:
    spec = load_spec_json('{"features": [{"name": "orders", "event": "buy",'
                          ' "aggregate": "count", "bounds": [0, 100]}]}')
    assert spec.period_days is None and spec.event_labels == {} and spec.notes == ()
    assert spec.features[0].unit is None
    # unset, the later fields are not written: earlier readers see the same document
    written = json.loads(spec.to_json())
    assert not {"period_days", "event_labels", "notes"} & set(written)
    assert "unit" not in written["features"][0]


@given(specs())
def test_valid_spec_round_trips_through_json(spec: FeatureSpec) -> None:
    loaded = load_spec_json(spec.to_json())
    assert loaded == spec
    assert loaded.names == spec.names
    assert load_spec_json(spec.to_json().encode("utf-8")) == spec  # bytes are accepted too


@given(specs())
def test_normalised_weights_sum_to_one_in_feature_order(spec: FeatureSpec) -> None:
    weights = spec.normalised_weights()
    assert len(weights) == len(spec.features)
    assert math.isclose(sum(weights), 1.0, rel_tol=1e-9)
    total = sum(f.weight for f in spec.features)
    assert all(math.isclose(w, f.weight / total) for w, f in zip(weights, spec.features, strict=True))


def test_spec_is_frozen() -> None:
    spec = FeatureSpec(features=(Feature(name="a", event="e", aggregate="count", bounds=(0, 1)),))
    with pytest.raises(ValueError, match="frozen"):
        spec.features[0].bounds = (0, 2)  # type: ignore[misc]


def test_window_components() -> None:
    assert Window().components() == ((1.0, math.inf),)
    assert Window.half_life(7).components() == ((1.0, 7.0),)
    assert Window.blend((0.6, 7), (0.4, 90)).components() == ((0.6, 7.0), (0.4, 90.0))


# ------------------------------------------------------------------ bad specs


def feature_json(**changes: Any) -> dict[str, Any]:
    """A valid feature as JSON data, with some fields changed (None deletes)."""
    base: dict[str, Any] = {"name": "spend", "event": "purchase", "property": "value",
                            "aggregate": "sum", "window": {"kind": "half_life",
                                                           "half_lives_days": [30]},
                            "transform": "log1p", "bounds": [0, 1000], "weight": 1.0}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def spec_text(*features: dict[str, Any], **top: Any) -> str:
    return json.dumps({"features": list(features), **top})


def schema_error(text: str) -> str:
    with pytest.raises(SchemaError) as info:
        load_spec_json(text)
    assert isinstance(info.value, ValueError)  # SchemaError is also a ValueError
    return str(info.value)


def test_the_base_feature_is_valid() -> None:
    assert load_spec_json(spec_text(feature_json())).names == ("spend",)


def test_unknown_aggregate_names_the_field_and_the_allowed_values() -> None:
    message = schema_error(spec_text(feature_json(aggregate="median")))
    assert "features.0.aggregate" in message
    for allowed in ("count", "sum", "mean", "distinct", "recency_days", "active_days"):
        assert allowed in message


def test_unknown_transform_names_the_allowed_values() -> None:
    message = schema_error(spec_text(feature_json(transform="sqrt")))
    assert "features.0.transform" in message
    assert "none" in message and "log1p" in message


@pytest.mark.parametrize("bounds", [[5, 5], [10, 1], [0, -0.5]])
def test_bounds_must_increase(bounds: list[float]) -> None:
    message = schema_error(spec_text(feature_json(bounds=bounds, transform="none")))
    assert "features.0.bounds" in message
    assert "low < high" in message


@pytest.mark.parametrize("bounds", [[float("nan"), 1.0], [0.0, float("nan")],
                                    [0.0, float("inf")], [float("-inf"), 0.0]])
def test_bounds_must_be_finite(bounds: list[float]) -> None:
    # json.dumps writes NaN/Infinity tokens, which Python's JSON reader accepts.
    message = schema_error(spec_text(feature_json(bounds=bounds, transform="none")))
    assert "features.0.bounds" in message
    assert "finite" in message


def test_bounds_need_two_values() -> None:
    message = schema_error(spec_text(feature_json(bounds=[0, 1, 2])))
    assert "features.0.bounds" in message


@pytest.mark.parametrize("mix", [[0.5, 0.6], [0.3, 0.3], [1.0, 0.0]])
def test_blend_mix_must_sum_to_one(mix: list[float]) -> None:
    window = {"kind": "blend", "half_lives_days": [7, 90], "mix": mix}
    message = schema_error(spec_text(feature_json(window=window)))
    assert "features.0.window" in message
    assert "mix" in message


def test_blend_mix_needs_one_value_per_half_life() -> None:
    window = {"kind": "blend", "half_lives_days": [7, 30, 90], "mix": [0.5, 0.5]}
    message = schema_error(spec_text(feature_json(window=window)))
    assert "features.0.window" in message
    assert "half_lives_days" in message and "mix" in message


@pytest.mark.parametrize("half_life", [0, -1, float("inf"), float("nan")])
def test_half_life_must_be_positive_and_finite(half_life: float) -> None:
    window = {"kind": "half_life", "half_lives_days": [half_life]}
    message = schema_error(spec_text(feature_json(window=window)))
    assert "features.0.window" in message
    assert "> 0" in message


def test_all_time_window_takes_no_half_life() -> None:
    window = {"kind": "all_time", "half_lives_days": [7]}
    message = schema_error(spec_text(feature_json(window=window)))
    assert "all_time" in message


def test_unknown_window_kind_names_the_allowed_kinds() -> None:
    message = schema_error(spec_text(feature_json(window={"kind": "sliding"})))
    assert "features.0.window.kind" in message
    for allowed in ("all_time", "half_life", "blend"):
        assert allowed in message


@pytest.mark.parametrize("window", [{"kind": "half_life", "half_lives_days": [7]},
                                    {"kind": "blend", "half_lives_days": [7, 90],
                                     "mix": [0.5, 0.5]}])
def test_recency_needs_an_all_time_window(window: dict[str, Any]) -> None:
    feature = feature_json(name="recency", event="*", property=None, aggregate="recency_days",
                           transform="none", bounds=[0, 365], window=window)
    message = schema_error(spec_text(feature))
    assert "features.0" in message
    assert "recency_days" in message and "all_time" in message


@pytest.mark.parametrize("aggregate", ["sum", "mean", "distinct"])
def test_aggregates_over_a_property_need_one(aggregate: str) -> None:
    message = schema_error(spec_text(feature_json(aggregate=aggregate, property=None)))
    assert "features.0" in message
    assert aggregate in message and "property" in message


@pytest.mark.parametrize("aggregate", ["count", "recency_days", "active_days"])
def test_aggregates_without_a_property_refuse_one(aggregate: str) -> None:
    message = schema_error(spec_text(feature_json(aggregate=aggregate, window=None)))
    assert aggregate in message and "property" in message


def test_duplicate_names_are_listed() -> None:
    message = schema_error(spec_text(feature_json(name="a"), feature_json(name="b"),
                                     feature_json(name="a")))
    assert "unique" in message
    assert "'a'" in message and "'b'" not in message


@pytest.mark.parametrize("low", [-1.0, -5.0])
def test_log1p_needs_low_bound_above_minus_one(low: float) -> None:
    message = schema_error(spec_text(feature_json(bounds=[low, 10.0], transform="log1p")))
    assert "features.0" in message
    assert "log1p" in message and "-1" in message


def test_log1p_accepts_low_bound_just_above_minus_one() -> None:
    spec = load_spec_json(spec_text(feature_json(bounds=[-0.999, 10.0], transform="log1p")))
    assert spec.features[0].bounds == (-0.999, 10.0)


@pytest.mark.parametrize("name", ["1abc", "has space", "dash-ed", "", "x" * 65])
def test_feature_name_must_be_an_identifier(name: str) -> None:
    message = schema_error(spec_text(feature_json(name=name)))
    assert "features.0.name" in message


@pytest.mark.parametrize("weight", [0, -1, float("nan"), float("inf")])
def test_weight_must_be_positive_and_finite(weight: float) -> None:
    message = schema_error(spec_text(feature_json(weight=weight)))
    assert "features.0.weight" in message


def test_unknown_field_is_named() -> None:
    message = schema_error(spec_text(feature_json(half_life=7)))
    assert "features.0.half_life" in message


def test_empty_feature_list_is_refused() -> None:
    assert "features" in schema_error(spec_text())


def test_unsupported_schema_version_names_the_supported_one() -> None:
    message = schema_error(spec_text(feature_json(), schema_version=2))
    assert "schema_version" in message and "1" in message


@pytest.mark.parametrize("top", [{"distinct_cap": 0}, {"distinct_cap": 10_001},
                                 {"min_confidence": 1.5}, {"min_events": -1}])
def test_device_thresholds_are_range_checked(top: dict[str, Any]) -> None:
    (field,) = top
    assert field in schema_error(spec_text(feature_json(), **top))


def test_error_in_a_later_feature_names_its_index() -> None:
    message = schema_error(spec_text(feature_json(name="a"), feature_json(name="b",
                                                                          aggregate="median")))
    assert "features.1.aggregate" in message


def test_many_errors_are_summarised_not_dumped() -> None:
    bad = [feature_json(name=f"f{i}", aggregate="median") for i in range(10)]
    message = schema_error(spec_text(*bad))
    assert re.search(r"\(and \d+ more\)$", message)
    assert message.count("features.") == 3  # the first three, then a count


@pytest.mark.parametrize("text", ["", "{", "not json", "[1, 2", b'{"features": "\xc3"}'])
def test_malformed_json_is_a_schema_error(text: str | bytes) -> None:
    with pytest.raises(SchemaError):
        load_spec_json(text)


@pytest.mark.parametrize("text", ["[]", "null", "42", '"spec"', '{"features": 1}'])
def test_json_of_the_wrong_shape_is_a_schema_error(text: str) -> None:
    with pytest.raises(SchemaError, match="invalid feature spec"):
        load_spec_json(text)


def test_deeply_nested_json_is_a_schema_error_not_a_crash() -> None:
    # A hostile or corrupted spec file must still give the documented error type.
    try:
        load_spec_json("[" * 100_000)
    except SchemaError:
        pass
    except PersonaError as exc:  # pragma: no cover - wrong subtype
        pytest.fail(f"expected SchemaError, got {type(exc).__name__}")
    except RecursionError:
        pytest.fail("load_spec_json let RecursionError escape on deeply nested JSON")
    else:  # pragma: no cover
        pytest.fail("deeply nested JSON was accepted")
