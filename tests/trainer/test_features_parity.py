"""THE parity property: folding events one at a time on the device == batch features.

For any event log and reference time, replaying each event through the device
fold (in any arrival order) gives the feature vector the trainer computes in
batch, to a relative 1e-9. "Relative" is measured against the sum of the
absolute terms of the aggregate (Σ|v|·w for sums and means), so cancellation
in a signed sum is not mistaken for a disagreement, with a tiny absolute floor
for values that underflow to (sub)normal zeros.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edgepersona.sdk import Feature, FeatureSpec, FoldPlan, FoldState, InputError, Window
from edgepersona.sdk.protocol.fold import check_event
from edgepersona.trainer.data.events import EventLog
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.data.replay import replay_on_device

DAY = 86_400.0
YEAR = 365.25 * DAY
T0 = 1_700_000_000.0  # a realistic epoch second, so time differences lose some bits
N_USERS = 3
REL = 1e-9
FLOOR = 1e-300

WINDOWS = {
    "all": Window(),
    "hl": Window.half_life(7.0),
    "blend": Window.blend((0.6, 1.5), (0.4, 120.0)),
}


def _features_for(tag: str, window: Window) -> list[Feature]:
    """Every aggregate over one window, on named events, on '*', on several properties."""
    def f(name: str, **kw: object) -> Feature:
        return Feature(name=f"{name}_{tag}", window=window, bounds=(-1e9, 1e9), **kw)

    return [
        f("count_a", event="a", aggregate="count"),
        f("count_any", event="*", aggregate="count"),
        f("sum_value_a", event="a", property="value", aggregate="sum"),
        f("sum_n_b", event="b", property="n", aggregate="sum"),
        f("mean_value_b", event="b", property="value", aggregate="mean"),
        f("mean_n_any", event="*", property="n", aggregate="mean"),
        f("distinct_s_a", event="a", property="s", aggregate="distinct"),
        f("distinct_n_any", event="*", property="n", aggregate="distinct"),
        f("distinct_m_b", event="b", property="m", aggregate="distinct"),
        f("active_any", event="*", aggregate="active_days"),
        f("active_b", event="b", aggregate="active_days"),
    ]


SPEC = FeatureSpec(
    features=tuple(
        [feat for tag, window in WINDOWS.items() for feat in _features_for(tag, window)]
        + [Feature(name="recency_a", event="a", aggregate="recency_days", bounds=(0, 5000)),
           Feature(name="recency_any", event="*", aggregate="recency_days", bounds=(0, 5000))]),
    distinct_cap=3,
)
PLAN = FoldPlan.from_spec(SPEC)
AGGREGATES_COVERED = {f.aggregate for f in SPEC.features}
WINDOWS_COVERED = {f.window.kind for f in SPEC.features}


@dataclass(frozen=True)
class Row:
    """One event as the strategies draw it."""

    user: int
    time: float
    event: str
    value: float | None
    s: str | None          # a string property (distinct)
    n: float | int | None  # a numeric property (sum, mean, distinct)
    m: str | int | None    # a mixed property: strings and numbers (distinct)


def make_log(rows: list[Row]) -> EventLog:
    """An EventLog built directly from rows (value as floats with NaN, others as objects)."""
    def column(name: str) -> np.ndarray:
        return np.array([getattr(r, name) for r in rows], dtype=object)

    return EventLog(
        user=np.array([r.user for r in rows], dtype=np.int64),
        time=np.array([r.time for r in rows], dtype=np.float64),
        event=np.array([r.event for r in rows], dtype=str),
        properties={"value": np.array([np.nan if r.value is None else r.value for r in rows],
                                      dtype=np.float64),
                    "s": column("s"), "n": column("n"), "m": column("m")},
        user_keys=[f"user-{i}" for i in range(N_USERS)],
        bad_rows=Counter(), source="hypothesis")


def absolute_log(rows: list[Row]) -> EventLog:
    """The same log with |value| and |n|: its sums and means are Σ|terms|."""
    return make_log([Row(r.user, r.time, r.event, None if r.value is None else abs(r.value),
                         r.s, None if r.n is None else abs(r.n), r.m) for r in rows])


def assert_parity(rows: list[Row], at: float, order: list[int]) -> None:
    log = make_log(rows)
    batch = compute_features(log, SPEC, at)
    folded = replay_on_device(PLAN, log, at, np.array(order, dtype=np.int64))
    magnitude = np.maximum(np.abs(batch), np.abs(compute_features(absolute_log(rows), SPEC, at)))
    tolerance = REL * magnitude + FLOOR
    bad = np.abs(folded - batch) > tolerance
    if bad.any():
        user, j = (int(x) for x in np.argwhere(bad)[0])
        pytest.fail(f"feature {SPEC.features[j].name} of user {user}: device {folded[user, j]!r}"
                    f" vs batch {batch[user, j]!r} (tolerance {tolerance[user, j]:.3g})")


# --- strategies ------------------------------------------------------------------------

offsets = st.one_of(
    st.integers(0, 120).map(float),                                   # bursts, equal times
    st.floats(0, 3 * DAY, allow_nan=False),                           # within days
    st.floats(0, 6 * YEAR, allow_nan=False),                          # years apart
    st.sampled_from([0.0, DAY - 1e-3, DAY, 2 * DAY - 1e-6, 400 * DAY]),  # day edges
)
values = st.one_of(st.none(), st.floats(-1e4, 1e4, allow_nan=False),
                   st.integers(-50, 50).map(float))
numeric_props = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from([0.5, 2.0, 2, -0.0]),
                          st.floats(-100, 100, allow_nan=False))
string_props = st.one_of(st.none(), st.sampled_from(["x", "y", "z", "w", "v", "3.0", ""]))
mixed_props = st.one_of(st.none(), st.sampled_from(["x", "y", "3.0", "q"]), st.integers(0, 4))

rows_strategy = st.builds(
    Row,
    user=st.integers(0, N_USERS - 1),
    time=offsets.map(lambda o: T0 + o),
    event=st.sampled_from(["a", "a", "b", "c", "not_in_spec"]),
    value=values, s=string_props, n=numeric_props, m=mixed_props,
)


@st.composite
def event_logs(draw: st.DrawFn) -> tuple[list[Row], float, list[int]]:
    """Rows (with some exact duplicates), a reference time and an arrival order."""
    rows = draw(st.lists(rows_strategy, min_size=1, max_size=40))
    duplicates = draw(st.lists(st.sampled_from(rows), max_size=6))
    # a burst: one user, several events in the same second (ties at the distinct cap)
    burst_time, burst_user = draw(st.sampled_from(rows)).time, draw(st.integers(0, N_USERS - 1))
    burst = [Row(burst_user, burst_time, r.event, r.value, r.s, r.n, r.m)
             for r in draw(st.lists(rows_strategy, max_size=8))]
    rows = rows + duplicates + burst
    latest = max(r.time for r in rows)
    at = draw(st.one_of(
        st.just(latest),
        st.floats(latest, latest + 5 * YEAR, allow_nan=False),
        st.floats(T0 - DAY, latest, allow_nan=False),  # some events are after `at`
    ))
    order = draw(st.permutations(range(len(rows))))
    return rows, at, list(order)


def test_the_spec_covers_every_aggregate_and_window_kind() -> None:
    assert {"count", "sum", "mean", "distinct", "active_days",
                                  "recency_days"} == AGGREGATES_COVERED
    assert {"all_time", "half_life", "blend"} == WINDOWS_COVERED


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(event_logs())
def test_device_fold_equals_batch_features_in_any_arrival_order(
        case: tuple[list[Row], float, list[int]]) -> None:
    rows, at, order = case
    assert_parity(rows, at, order)


# --- hand-picked cases the property must also hold on -----------------------------------

def row(user: int, offset: float, event: str = "a", value: float | None = None,
        s: str | None = None, n: float | int | None = None, m: str | int | None = None) -> Row:
    return Row(user, T0 + offset, event, value, s, n, m)


def test_many_distinct_values_beyond_the_cap_keep_the_most_recent() -> None:
    # ten values arriving newest first: the device must evict as it goes
    rows = [row(0, 1000.0 - i, s=f"v{i}") for i in range(10)]
    assert_parity(rows, T0 + 2000.0, list(range(10)))
    batch = compute_features(make_log(rows), SPEC, T0 + 2000.0)
    assert batch[0, SPEC.names.index("distinct_s_a_all")] == 3.0


def test_ties_in_time_beyond_the_cap_keep_the_larger_values() -> None:
    rows = [row(0, 500.0, s=v) for v in ["b", "e", "a", "d", "c"]]
    for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        assert_parity(rows, T0 + 500.0, order)
    plan_state = PLAN.new_state()
    for r in rows:
        plan_state.fold(r.event, r.time, check_event(r.event, None, r.time, {"s": r.s}))
    which = PLAN.slots[SPEC.names.index("distinct_s_a_all")].distinct
    assert sorted(plan_state.seen[which]) == ["c", "d", "e"]


def test_years_long_gaps_and_out_of_order_arrival() -> None:
    rows = [row(0, 0.0, "b", value=3.0, n=1), row(0, 5 * YEAR, "b", value=5.0, n=2),
            row(0, 2 * YEAR, "a", value=-7.0, s="x"), row(0, 5 * YEAR + 1.0, "c"),
            row(1, 3 * YEAR, "a", value=1.0, s="y")]
    assert_parity(rows, T0 + 5 * YEAR + 1.0, [3, 1, 4, 0, 2])
    assert_parity(rows, T0 + 9 * YEAR, [0, 1, 2, 3, 4])


def test_events_after_the_reference_time_are_left_out_of_batch_features() -> None:
    rows = [row(0, 0.0, value=1.0), row(0, DAY, value=10.0), row(0, 3 * DAY, value=100.0)]
    log = make_log(rows)
    at = T0 + 2 * DAY
    batch = compute_features(log, SPEC, at)
    before = compute_features(make_log(rows[:2]), SPEC, at)
    np.testing.assert_array_equal(batch, before)
    names = SPEC.names
    assert batch[0, names.index("count_a_all")] == 2.0
    assert batch[0, names.index("sum_value_a_all")] == 11.0
    assert batch[0, names.index("recency_a")] == pytest.approx(1.0)
    assert_parity(rows, at, [2, 1, 0])


def test_users_without_events_get_zeros_and_the_recency_upper_bound() -> None:
    rows = [row(0, 0.0, value=1.0)]
    batch = compute_features(make_log(rows), SPEC, T0 + DAY)
    recency = [SPEC.names.index("recency_a"), SPEC.names.index("recency_any")]
    assert (batch[1:, recency] == 5000).all()
    others = [j for j in range(len(SPEC.features)) if j not in recency]
    assert (batch[1:, others] == 0).all()
    assert_parity(rows, T0 + DAY, [0])


def test_mean_of_a_long_dormant_user_agrees() -> None:
    # all events far in the past: the window weights are small but the mean is not
    rows = [row(0, 0.0, "b", value=4.0, n=1.0), row(0, 10.0, "b", value=8.0, n=3.0)]
    for years in (0.5, 2.0, 4.0, 10.0):
        assert_parity(rows, T0 + years * YEAR, [1, 0])


@pytest.mark.parametrize("years_away", [1.0, 20.0, 20.3, 20.5, 30.0])
def test_half_life_mean_does_not_depend_on_how_long_the_user_was_away(
        years_away: float) -> None:
    # For one exponential component the decay cancels in Σv·w / Σw, so the mean of a
    # dormant user stays put. Here the 7-day half-life spans ~1,040-1,570 half-lives:
    # the weights 2^-age underflow to subnormals and then to 0.
    rows = [row(0, 0.0, "b", value=4.0), row(0, 3600.0, "b", value=8.0),
            row(0, 7200.0, "b", value=5.0)]
    log = make_log(rows)
    j = SPEC.names.index("mean_value_b_hl")
    last = T0 + 7200.0
    expected = compute_features(log, SPEC, last)[0, j]
    at = last + years_away * YEAR
    batch = compute_features(log, SPEC, at)[0, j]
    folded = replay_on_device(PLAN, log, at, np.array([2, 0, 1]))[0, j]
    assert (batch, folded) == (pytest.approx(expected, rel=REL), pytest.approx(expected, rel=REL))


# --- the device-side rules around folding ----------------------------------------------

def folded_state(rows: list[Row]) -> FoldState:
    state = PLAN.new_state()
    for r in rows:
        props = check_event(r.event, r.value, r.time, {"s": r.s, "n": r.n, "m": r.m})
        state.fold(r.event, r.time, props)
    return state


def test_evaluating_before_the_latest_event_raises_input_error() -> None:
    state = folded_state([row(0, 100.0, value=1.0), row(0, 50.0, value=2.0)])
    with pytest.raises(InputError, match="latest event"):
        state.evaluate(T0 + 99.0)
    assert state.evaluate(T0 + 100.0).shape == (len(SPEC.features),)
    with pytest.raises(InputError, match="finite"):
        state.evaluate(math.nan)


@pytest.mark.parametrize(("event", "value", "at", "props"), [
    ("a", math.nan, T0, None),
    ("a", math.inf, T0, None),
    ("a", -math.inf, T0, None),
    ("a", True, T0, None),
    ("a", "12", T0, None),
    ("a", 1.0, -1.0, None),
    ("a", 1.0, math.nan, None),
    ("a", 1.0, math.inf, None),
    ("a", 1.0, True, None),
    ("a", 1.0, "1700000000", None),
    (None, 1.0, T0, None),
    (7, 1.0, T0, None),
    (b"a", 1.0, T0, None),
    ("", 1.0, T0, None),
    ("a", 1.0, T0, {"n": math.nan}),
    ("a", 1.0, T0, {"n": math.inf}),
    ("a", 1.0, T0, {"n": False}),
    ("a", 1.0, T0, {"n": [1, 2]}),
], ids=["nan-value", "inf-value", "-inf-value", "bool-value", "str-value", "negative-time",
        "nan-time", "inf-time", "bool-time", "str-time", "none-event", "int-event",
        "bytes-event", "empty-event", "nan-property", "inf-property", "bool-property",
        "list-property"])
def test_check_event_rejects_bad_input_and_nothing_is_folded(
        event: object, value: object, at: object, props: dict[str, object] | None) -> None:
    state = folded_state([row(0, 0.0, value=1.0, s="x", n=2)])
    before = state.evaluate(T0 + DAY).copy()
    with pytest.raises(InputError):
        folded = check_event(event, value, at, props)
        state.fold(str(event), float(at), folded)  # type: ignore[arg-type]
    assert state.events == 1 and state.latest == T0
    np.testing.assert_array_equal(state.evaluate(T0 + DAY), before)


def test_check_event_accepts_good_input_and_puts_value_among_properties() -> None:
    props = check_event("a", 3, 0, {"s": "x", "n": np.float32(2.5), "gone": None})
    assert props == {"s": "x", "n": 2.5, "gone": None, "value": 3.0}
    assert isinstance(props["value"], float)


# --- known gap: strings in a property that a sum or mean reads --------------------------

def test_non_numeric_string_in_a_summed_property_is_skipped_like_the_trainer_does() -> None:
    # The trainer treats a property cell that is not a number as missing (it is still
    # a valid distinct-count key), so the device must fold the same log to the same row.
    rows = [row(0, 0.0, "b", value=1.0, n=2.0), row(0, 60.0, "b", value=1.0, n="n/a"),  # type: ignore[arg-type]
            row(0, 120.0, "b", value=1.0, n=4.0)]
    log = make_log(rows)
    batch = compute_features(log, SPEC, T0 + DAY)
    assert batch[0, SPEC.names.index("mean_n_any_all")] == 3.0
    folded = replay_on_device(PLAN, log, T0 + DAY)
    np.testing.assert_allclose(folded, batch, rtol=REL)


def test_a_failed_fold_leaves_the_state_untouched() -> None:
    # event "c" feeds only '*' features: count_any_* come before mean_n_any_* in the
    # plan, so a fold that fails half-way would already have counted the event
    state = folded_state([row(0, 0.0, "c", n=2.0)])
    before = (list(state.values), list(state.anchors), state.events)
    props = check_event("c", None, T0 + 60.0, {"n": "n/a"})
    try:
        state.fold("c", T0 + 60.0, props)
    except InputError:
        pass
    except Exception as exc:  # any other error is the bug this test reports
        changed = [i for i, (x, y) in enumerate(zip(before[0], state.values, strict=True))
                   if x != y]
        pytest.fail(f"fold raised {type(exc).__name__} ({exc}) after changing accumulators"
                    f" {changed}; events {before[2]} -> {state.events}")
    after = (list(state.values), list(state.anchors), state.events)
    assert after == before or state.events == before[2] + 1
