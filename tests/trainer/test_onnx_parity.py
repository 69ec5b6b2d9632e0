"""The exported ONNX graph against the trainer's float64 maths, and the trap it avoids.

The graph runs in float32, the trainer in float64, so a point whose two nearest
centroids are (almost) equally far may legitimately get either label. Such
near-ties are detected from float64 distances (relative gap between the two
smallest < 1e-5), counted and reported separately; every other point must get
the same label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import pytest

from edgepersona.sdk import Feature, FeatureSpec
from edgepersona.sdk.protocol.assign import INPUT_NAME, OUTPUT_NAMES, numpy_assign
from edgepersona.sdk.protocol.manifest import AssignerParams
from edgepersona.trainer.data.events import EventLog
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.engines.kmeans import PersonaKMeans
from edgepersona.trainer.release.export_onnx import build_onnx

TIE_GAP = 1e-5
F32 = np.float32


@dataclass(frozen=True)
class Exported:
    """A fitted model, its graph and the rows it was fitted on."""

    name: str
    model: PersonaKMeans
    session: ort.InferenceSession
    rows: np.ndarray


def session_for(params: AssignerParams) -> ort.InferenceSession:
    graph = build_onnx(params, model_id="parity", version=1)
    return ort.InferenceSession(graph, providers=["CPUExecutionProvider"])


def run(session: ort.InferenceSession, points: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """persona, distances, confidence for float32 points."""
    persona, distances, confidence = session.run(list(OUTPUT_NAMES), {INPUT_NAME: points})
    return np.asarray(persona), np.asarray(distances), np.asarray(confidence)


def near_ties(params: AssignerParams, points: np.ndarray) -> np.ndarray:
    """Points whose two nearest centroids are within a relative 1e-5 (float64 maths)."""
    distances = numpy_assign(params, points.astype(np.float64))[2]
    two = np.sort(distances, axis=1)[:, :2]
    ties: np.ndarray = (two[:, 1] - two[:, 0]) <= TIE_GAP * two[:, 1]
    return ties


def compare(exported: Exported, points32: np.ndarray, label: str) -> tuple[int, int]:
    """Return (near-tie count, non-tie mismatch count); also check every output's shape."""
    persona, distances, confidence = run(exported.session, points32)
    expected = exported.model.predict(points32.astype(np.float64))
    k = len(exported.model.params_.centroids)
    assert persona.shape == (len(points32),) and persona.dtype == np.int64
    assert distances.shape == (len(points32), k) and confidence.shape == (len(points32),)
    assert not np.isnan(distances).any() and (distances >= 0).all()
    assert ((confidence >= 0) & (confidence <= 1)).all()
    ties = near_ties(exported.model.params_, points32)
    mismatches = persona != expected
    print(f"[onnx parity] {exported.name}/{label}: {len(points32)} points,"
          f" {int(ties.sum())} float32 near-ties, {int(mismatches.sum())} label differences"
          f" ({int((mismatches & ties).sum())} of them near-ties)")
    return int(ties.sum()), int((mismatches & ~ties).sum())


def _synthetic() -> tuple[FeatureSpec, np.ndarray]:
    """Skewed counts, signed sums, recency; bounds not representable in float32."""
    spec = FeatureSpec(features=(
        Feature(name="visits", event="visit", aggregate="count", transform="log1p",
                bounds=(0.0, 1000.0), weight=2.0),
        Feature(name="balance", event="pay", property="value", aggregate="sum",
                bounds=(-50.0, 50.0)),
        Feature(name="recency", event="*", aggregate="recency_days", bounds=(0.0, 400.0),
                weight=0.5),
        Feature(name="basket", event="pay", property="value", aggregate="mean",
                transform="log1p", bounds=(0.0, 217.96959014568773)),
    ))
    rng = np.random.default_rng(1)
    n = 600
    rows = np.column_stack([rng.lognormal(2, 1.5, n), rng.normal(0, 20, n),
                            rng.uniform(0, 400, n), rng.lognormal(3, 1, n)])
    return spec, rows


@pytest.fixture(scope="module", params=["synthetic", "retail"])
def exported(request: pytest.FixtureRequest, retail_log: EventLog,
             retail_spec: FeatureSpec) -> Exported:
    if request.param == "synthetic":
        spec, rows = _synthetic()
        k = 5
    else:
        spec, rows = retail_spec, compute_features(retail_log, retail_spec)
        k = 4
    model = PersonaKMeans(spec=spec, n_clusters=k, stability_rounds=0, random_state=3).fit(rows)
    return Exported(request.param, model, session_for(model.params_), rows)


def random_points(params: AssignerParams, n: int, seed: int) -> np.ndarray:
    """Points inside and just around the bounds, with a fifth of the cells far outside."""
    rng = np.random.default_rng(seed)
    low, high = np.asarray(params.lower), np.asarray(params.upper)
    span = high - low
    points = rng.uniform(low - 0.1 * span, high + 0.1 * span, size=(n, len(low)))
    far = rng.random(points.shape) < 0.2
    points[far] = rng.choice([1e6, -1e6, 1e30, -1e30], size=int(far.sum()))
    return points.astype(F32)


def test_graph_labels_equal_predict_on_every_training_row(exported: Exported) -> None:
    rows32 = exported.rows.astype(F32)
    _, mismatches = compare(exported, rows32, "training rows")
    assert mismatches == 0


def test_graph_labels_equal_predict_on_100k_points_inside_and_far_outside(
        exported: Exported) -> None:
    points = random_points(exported.model.params_, 100_000, seed=17)
    _, mismatches = compare(exported, points, "100k random points")
    assert mismatches == 0


def test_graph_distances_and_confidence_match_float64_maths(exported: Exported) -> None:
    points = random_points(exported.model.params_, 20_000, seed=18)
    _, distances, confidence = run(exported.session, points)
    _, ref_confidence, ref_distances = numpy_assign(exported.model.params_,
                                                    points.astype(np.float64))
    np.testing.assert_allclose(distances, ref_distances, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(confidence, ref_confidence, atol=1e-4)


def centroid_points(params: AssignerParams) -> np.ndarray:
    """Raw feature rows that preprocess exactly onto each centroid (float64)."""
    z = np.asarray(params.centroids)
    transformed: np.ndarray = z / np.asarray(params.scale) + np.asarray(params.center)
    mask = np.asarray(params.log1p)
    transformed[:, mask] = np.expm1(transformed[:, mask])
    return transformed


def perturbed_around(raw: np.ndarray) -> np.ndarray:
    """Each row, plus float32 neighbours one to a few ulps away and relative nudges."""
    base = raw.astype(F32)
    variants = [base]
    for steps in (1, 2, 3):
        up, down = base.copy(), base.copy()
        for _ in range(steps):
            up = np.nextafter(up, F32(np.inf))
            down = np.nextafter(down, F32(-np.inf))
        variants += [up, down]
    for nudge in (1e-7, 1e-6, 1e-5, -1e-7, -1e-6, -1e-5):
        variants.append((base * F32(1 + nudge) + F32(nudge)).astype(F32))
    rng = np.random.default_rng(5)
    for _ in range(20):
        variants.append((base + rng.normal(0, 1e-6, base.shape) * np.abs(base)).astype(F32))
    return np.vstack(variants)


def test_points_exactly_at_centroids_get_non_negative_finite_distances(
        exported: Exported) -> None:
    params = exported.model.params_
    raw = centroid_points(params)
    # the inversion is right: the trainer's maths puts each row on its own centroid
    index, _, distances = numpy_assign(params, raw)
    np.testing.assert_array_equal(index, np.arange(len(raw)))
    assert distances[np.arange(len(raw)), index] == pytest.approx(0.0, abs=1e-9)

    points = perturbed_around(raw)
    persona, distances, confidence = run(exported.session, points)
    assert not np.isnan(distances).any() and (distances >= 0).all()
    assert not np.isnan(confidence).any()
    assert ((confidence >= 0) & (confidence <= 1)).all()
    # each point sits on (or a hair from) a centroid: it is that centroid's persona
    np.testing.assert_array_equal(persona, np.tile(np.arange(len(raw)), len(points) // len(raw)))
    assert (confidence > 0.99).all()


def test_confidence_is_one_minus_nearest_over_runner_up(exported: Exported) -> None:
    points = np.vstack([random_points(exported.model.params_, 5_000, seed=19),
                        perturbed_around(centroid_points(exported.model.params_))])
    persona, distances, confidence = run(exported.session, points)
    two = np.sort(distances.astype(np.float64), axis=1)[:, :2]
    expected = np.clip(1.0 - two[:, 0] / np.maximum(two[:, 1], 1e-12), 0.0, 1.0)
    np.testing.assert_allclose(confidence, expected, atol=1e-6)
    np.testing.assert_array_equal(distances[np.arange(len(points)), persona], two[:, 0])


# --- the trap the hand-built graph avoids ---------------------------------------------

def test_skl2onnx_kmeans_goes_nan_at_centroids_where_our_graph_does_not() -> None:
    from skl2onnx import to_onnx
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    data = (rng.normal(size=(300, 4)) + 1000.0).astype(F32)  # far from the origin
    kmeans = KMeans(n_clusters=3, n_init=4, random_state=0).fit(data)
    theirs = ort.InferenceSession(to_onnx(kmeans, data[:1]).SerializeToString(),
                                  providers=["CPUExecutionProvider"])
    points = perturbed_around(kmeans.cluster_centers_.astype(np.float64))
    their_labels, their_scores = theirs.run(None, {theirs.get_inputs()[0].name: points})
    their_bad = int(np.isnan(their_scores).sum() + (their_scores < 0).sum())

    d = data.shape[1]
    params = AssignerParams(lower=(-1e30,) * d, upper=(1e30,) * d, log1p=(False,) * d,
                            center=(0.0,) * d, scale=(1.0,) * d,
                            centroids=tuple(map(tuple, kmeans.cluster_centers_.tolist())))
    persona, distances, confidence = run(session_for(params), points)
    print(f"[onnx parity] skl2onnx KMeans: {int(np.isnan(their_scores).sum())} NaN and"
          f" {int((their_scores < 0).sum())} negative distances out of {their_scores.size};"
          f" ours: {int(np.isnan(distances).sum())} NaN, {int((distances < 0).sum())} negative")
    assert not np.isnan(distances).any() and (distances >= 0).all()
    assert not np.isnan(confidence).any()
    nearest = numpy_assign(params, points.astype(np.float64))[0]
    np.testing.assert_array_equal(persona, nearest)
    assert their_bad > 0, ("skl2onnx's KMeans converter no longer yields NaN/negative distances"
                           " at centroids; revisit the rationale in trainer/export_onnx.py")
    assert (np.asarray(their_labels) == persona).mean() > 0.5  # same model, same inputs
