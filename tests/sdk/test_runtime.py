"""PersonaRuntime.assign: every finite vector gets a persona, bad input a clear error.

Both backends are held to the same contract, and to each other: the ONNX
graph (float32) and the numpy fallback (float64) must give the same persona
for every row except genuine float32 near-ties.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, strategies as st

from edgepersona.sdk import InputError, PersonaError, PersonaRuntime

BACKENDS = ("onnxruntime", "numpy")
WIDTH = 6  # features in the conftest spec
TIE_GAP = 1e-5  # relative gap between the two nearest centroids below which float32 may flip

F64 = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def runtimes(bundle_files: Mapping[str, bytes], public_key: bytes,
             bundle_now: datetime) -> dict[str, PersonaRuntime]:
    opened = {b: PersonaRuntime.open(bundle_files, trusted_keys=[public_key], now=bundle_now,
                                     backend=b) for b in BACKENDS}
    assert {b: r.backend for b, r in opened.items()} == {b: b for b in BACKENDS}
    return opened


@pytest.fixture(scope="module")
def bounds(runtimes: dict[str, PersonaRuntime]) -> tuple[F64, F64]:
    spec = runtimes["numpy"].spec
    assert len(spec.features) == WIDTH
    return (np.array([f.bounds[0] for f in spec.features]),
            np.array([f.bounds[1] for f in spec.features]))


ANY_FINITE = st.floats(allow_nan=False, allow_infinity=False)
EXTREMES = st.sampled_from([1e300, -1e300, 1.7976931348623157e308, -1.7976931348623157e308,
                            5e-324, -5e-324, 0.0, -0.0, 3.5e38, -3.5e38, 1e-40])
VECTORS = st.lists(ANY_FINITE | EXTREMES, min_size=WIDTH, max_size=WIDTH)
FLOAT32_VECTORS = st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32),
                           min_size=WIDTH, max_size=WIDTH)
IN_RANGE = st.lists(st.floats(min_value=-1e4, max_value=1e4), min_size=WIDTH, max_size=WIDTH)


def check_assignment(result: Any, runtime: PersonaRuntime) -> None:
    k = len(runtime.personas)
    assert 0 <= result.index < k
    card = runtime.personas[result.index]
    assert (result.persona_id, result.name) == (card.id, card.name)
    assert 0.0 <= result.confidence <= 1.0
    assert len(result.distances) == k
    assert all(math.isfinite(d) and d >= 0.0 for d in result.distances)
    assert result.distances[result.index] == min(result.distances)
    assert result.model_version == runtime.version == 1


# ------------------------------------------------ every finite vector is assigned


@pytest.mark.parametrize("backend", BACKENDS)
@given(vector=VECTORS)
def test_any_finite_vector_gets_a_valid_persona(backend: str, vector: list[float],
                                                runtimes: dict[str, PersonaRuntime]) -> None:
    runtime = runtimes[backend]
    check_assignment(runtime.assign(vector), runtime)
    (batched,) = runtime.assign_many([vector])
    check_assignment(batched, runtime)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [1e300, -1e300, 1e39, -1e39])
def test_values_beyond_float32_are_assigned_without_warnings(
        backend: str, value: float, runtimes: dict[str, PersonaRuntime]) -> None:
    # pytest turns warnings into errors here; a device app must not see
    # "overflow encountered in cast" for a legal (finite, clipped) input either.
    runtime = runtimes[backend]
    check_assignment(runtime.assign([value] * WIDTH), runtime)
    check_assignment(runtime.assign_many([[value] * WIDTH])[0], runtime)


@pytest.mark.parametrize("backend", BACKENDS)
@given(vector=IN_RANGE, scale=st.floats(min_value=1.0, max_value=1e6))
def test_values_are_clipped_to_the_bounds(backend: str, vector: list[float], scale: float,
                                          runtimes: dict[str, PersonaRuntime],
                                          bounds: tuple[F64, F64]) -> None:
    runtime = runtimes[backend]
    low, high = bounds
    row = np.asarray(vector) * scale
    assert runtime.assign(row) == runtime.assign(np.clip(row, low, high))


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_rows_get_the_trainers_labels(backend: str, runtimes: dict[str, PersonaRuntime],
                                               trained: Any,
                                               bundle_training_rows: F64) -> None:
    labels = [r.index for r in runtimes[backend].assign_many(bundle_training_rows)]
    assert labels == trained.labels.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_persona_has_confidently_assigned_training_rows(
        backend: str, runtimes: dict[str, PersonaRuntime], bundle_training_rows: F64) -> None:
    # Well-separated clusters: some member of each sits close to its centroid.
    results = runtimes[backend].assign_many(bundle_training_rows)
    for index in range(len(runtimes[backend].personas)):
        best = max((r for r in results if r.index == index), key=lambda r: r.confidence)
        assert best.confidence > 0.8


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("position", [0, 3, WIDTH - 1])
def test_nan_or_inf_is_refused_naming_the_feature(backend: str, bad: float, position: int,
                                                  runtimes: dict[str, PersonaRuntime]) -> None:
    runtime = runtimes[backend]
    vector = [1.0] * WIDTH
    vector[position] = bad
    with pytest.raises(InputError, match="finite") as info:
        runtime.assign(vector)
    assert runtime.spec.names[position] in str(info.value)
    with pytest.raises(InputError, match="finite"):
        runtime.assign_many([[1.0] * WIDTH, vector])
    with pytest.raises(InputError, match="finite"):
        runtime.assign(dict(zip(runtime.spec.names, vector, strict=True)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vector", [[], [1.0] * (WIDTH - 1), [1.0] * (WIDTH + 1),
                                    [[1.0] * WIDTH], np.ones((2, WIDTH)), 3.0],
                         ids=["empty", "short", "long", "nested", "matrix", "scalar"])
def test_wrong_shape_is_refused_with_the_expected_width(backend: str, vector: Any,
                                                        runtimes: dict[str, PersonaRuntime]
                                                        ) -> None:
    runtime = runtimes[backend]
    with pytest.raises(InputError, match=f"expected {WIDTH} features") as info:
        runtime.assign(vector)
    assert all(name in str(info.value) for name in runtime.spec.names)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vector", [None, object(), "abc", ["x"] * WIDTH, [1j] * WIDTH,
                                    [[1.0, 2.0]] * WIDTH],
                         ids=["none", "object", "str", "strings", "complex", "ragged"])
def test_wrong_type_is_refused(backend: str, vector: Any,
                               runtimes: dict[str, PersonaRuntime]) -> None:
    with pytest.raises(InputError, match=str(WIDTH)):
        runtimes[backend].assign(vector)


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_values_are_refused_not_treated_as_zero(
        backend: str, runtimes: dict[str, PersonaRuntime]) -> None:
    runtime = runtimes[backend]
    vector: list[Any] = [1.0] * WIDTH
    vector[2] = None
    with pytest.raises(InputError, match="basket"):
        runtime.assign(vector)
    with pytest.raises(InputError, match="basket"):
        runtime.assign(dict(zip(runtime.spec.names, vector, strict=True)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rows", [[1.0] * WIDTH, np.ones((2, WIDTH - 1)), np.ones((1, 2, WIDTH)),
                                  [["x"] * WIDTH], None, [[1.0] * WIDTH, [1.0] * (WIDTH - 1)]],
                         ids=["1d", "narrow", "3d", "strings", "none", "ragged"])
def test_assign_many_refuses_wrong_shapes_and_types(backend: str, rows: Any,
                                                    runtimes: dict[str, PersonaRuntime]) -> None:
    with pytest.raises(InputError, match=f"\\(n, {WIDTH}\\)"):
        runtimes[backend].assign_many(rows)


def test_missing_mapping_key_is_named(runtimes: dict[str, PersonaRuntime]) -> None:
    runtime = runtimes["numpy"]
    names = runtime.spec.names
    partial = {n: 1.0 for n in names if n not in ("spend", "recency")}
    with pytest.raises(InputError) as info:
        runtime.assign(partial)
    message = str(info.value)
    assert "missing" in message and "'spend'" in message and "'recency'" in message
    assert all(n in message for n in names)  # and what was expected


def test_mapping_with_a_non_number_is_refused(runtimes: dict[str, PersonaRuntime]) -> None:
    runtime = runtimes["numpy"]
    values: dict[str, Any] = dict.fromkeys(runtime.spec.names, 1.0)
    values["basket"] = "lots"
    with pytest.raises(InputError):
        runtime.assign(values)


def test_input_errors_are_persona_errors_and_value_errors(
        runtimes: dict[str, PersonaRuntime]) -> None:
    with pytest.raises(PersonaError):
        runtimes["numpy"].assign([math.nan] * WIDTH)
    with pytest.raises(ValueError, match="finite"):
        runtimes["numpy"].assign([math.nan] * WIDTH)


# --------------------------------------------------------- equivalent inputs


@pytest.mark.parametrize("backend", BACKENDS)
@given(vector=FLOAT32_VECTORS, order=st.permutations(range(WIDTH)))
def test_mapping_input_equals_list_input(backend: str, vector: list[float], order: list[int],
                                         runtimes: dict[str, PersonaRuntime]) -> None:
    runtime = runtimes[backend]
    names = runtime.spec.names
    mapping = {names[i]: vector[i] for i in order}  # any key order
    assert runtime.assign(mapping) == runtime.assign(vector)
    assert runtime.assign(np.asarray(vector)) == runtime.assign(vector)
    assert runtime.assign(tuple(vector)) == runtime.assign(vector)


@pytest.mark.parametrize("backend", BACKENDS)
@given(rows=st.lists(IN_RANGE, min_size=1, max_size=25))
def test_assign_many_equals_assign_per_row(backend: str, rows: list[list[float]],
                                           runtimes: dict[str, PersonaRuntime]) -> None:
    runtime = runtimes[backend]
    assert runtime.assign_many(rows) == [runtime.assign(row) for row in rows]


@pytest.mark.parametrize("backend", BACKENDS)
def test_assign_many_of_no_rows_is_empty(backend: str,
                                         runtimes: dict[str, PersonaRuntime]) -> None:
    assert runtimes[backend].assign_many(np.empty((0, WIDTH))) == []


# ------------------------------------------------------ the two backends agree


def random_rows(low: F64, high: F64, n: int, seed: int) -> F64:
    """Rows inside the bounds, just outside, far outside and at huge magnitudes."""
    rng = np.random.default_rng(seed)
    span = high - low
    quarter = n // 4
    inside = rng.uniform(low, high, size=(2 * quarter, len(low)))
    near = rng.uniform(low - 2 * span, high + 2 * span, size=(quarter, len(low)))
    magnitude = 10.0 ** rng.uniform(-3, 30, size=(n - 3 * quarter, len(low)))
    far = magnitude * rng.choice([-1.0, 1.0], size=magnitude.shape)
    return np.vstack([inside, near, far])


def test_numpy_and_onnx_backends_agree_except_on_float32_near_ties(
        runtimes: dict[str, PersonaRuntime], bounds: tuple[F64, F64]) -> None:
    rows = random_rows(*bounds, n=100_000, seed=2024)
    exact = runtimes["numpy"].assign_many(rows)
    graph = runtimes["onnxruntime"].assign_many(rows)
    distances = np.array([r.distances for r in exact])
    nearest = np.sort(distances, axis=1)[:, :2]
    tie = (nearest[:, 1] - nearest[:, 0]) / np.maximum(nearest[:, 1], 1e-300) < TIE_GAP
    mismatch = np.array([a.index != b.index for a, b in zip(exact, graph, strict=True)])
    assert int((mismatch & ~tie).sum()) == 0, f"rows {np.flatnonzero(mismatch & ~tie)[:10]}"
    assert tie.mean() < 0.01  # ties are rare: the comparison above is not vacuous
    assert len({r.index for r in exact}) == len(runtimes["numpy"].personas)
    graph_distances = np.array([r.distances for r in graph])
    np.testing.assert_allclose(graph_distances, distances, rtol=1e-4, atol=1e-4)
    confidence = np.array([[a.confidence, b.confidence] for a, b in zip(exact, graph,
                                                                        strict=True)])
    np.testing.assert_allclose(confidence[:, 0], confidence[:, 1], atol=1e-3)


def test_fastest_backend_is_one_of_the_verified_two_and_agrees_with_the_graph(
        bundle_files: Mapping[str, bytes], public_key: bytes, bundle_now: datetime,
        runtimes: dict[str, PersonaRuntime], bounds: tuple[F64, F64]) -> None:
    fastest = PersonaRuntime.open(bundle_files, trusted_keys=[public_key], now=bundle_now,
                                  backend="fastest")
    assert fastest.backend in BACKENDS
    low, high = bounds
    rows = np.random.default_rng(7).uniform(low, high, size=(300, WIDTH))
    graph = [runtimes["onnxruntime"].assign(r) for r in rows]
    for row, expected in zip(rows, graph, strict=True):
        result = fastest.assign(row)
        near_tie = sorted(expected.distances)[1] - sorted(expected.distances)[0] \
            <= TIE_GAP * max(expected.distances)
        assert result.index == expected.index or near_tie


def test_numpy_backend_single_rows_equal_its_batch_path(
        runtimes: dict[str, PersonaRuntime], bounds: tuple[F64, F64]) -> None:
    low, high = bounds
    rows = np.random.default_rng(11).uniform(low - 1.0, high * 1.5, size=(200, WIDTH))
    many = runtimes["numpy"].assign_many(rows)
    for row, batch in zip(rows, many, strict=True):
        one = runtimes["numpy"].assign(row)
        assert (one.index, one.persona_id) == (batch.index, batch.persona_id)
        np.testing.assert_allclose(one.distances, batch.distances, rtol=1e-12)
        assert one.confidence == pytest.approx(batch.confidence, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_mapping_with_an_unknown_feature_name_is_refused_naming_it(
        backend: str, runtimes: dict[str, PersonaRuntime]) -> None:
    runtime = runtimes[backend]
    features = dict.fromkeys(runtime.spec.names, 1.0)
    runtime.assign(features)
    with pytest.raises(InputError, match=r"unknown feature names \['sesions'\]"):
        runtime.assign({**features, "sesions": 3.0})
