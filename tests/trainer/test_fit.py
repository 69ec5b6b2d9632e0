"""PersonaKMeans: a hand-computed case, weights, k-min, automatic k, estimator contract."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from edgepersona.sdk import Feature, FeatureSpec, InputError, PersonaError
from edgepersona.trainer.engines.kmeans import PersonaKMeans, preprocess
from edgepersona.trainer.errors import NotFittedError

WIDE = (-1e6, 1e6)


def plain_spec(width: int, weights: tuple[float, ...] | None = None) -> FeatureSpec:
    """Untransformed features with wide declared bounds (clipping never bites)."""
    weights = weights or (1.0,) * width
    return FeatureSpec(features=tuple(
        Feature(name=f"f{j}", event="e", property="value", aggregate="sum", bounds=WIDE,
                weight=weights[j]) for j in range(width)))


def blobs(centres: Sequence[Sequence[float]], sizes: list[int], spread: float, seed: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around the given centres, with their true labels."""
    rng = np.random.default_rng(seed)
    rows = [rng.normal(centre, spread, size=(size, len(centre)))
            for centre, size in zip(centres, sizes, strict=True)]
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return np.vstack(rows), truth


def unscaled_centroids(model: PersonaKMeans) -> np.ndarray:
    """Centroids back in raw units: z / scale + center (no transform in these specs)."""
    params = model.params_
    raw: np.ndarray = (np.asarray(params.centroids) / np.asarray(params.scale)
                       + np.asarray(params.center))
    return raw


# --- the hand-computed case ------------------------------------------------------------
#
# Points A=(0,0), B=(0,1), C=(10,1), D=(10,2); equal weights 1/2 each.
#   mean = (5, 1); std = (5, sqrt(1/2))
#   scale_j = sqrt(1/2) / std_j = (sqrt(1/2)/5, 1)
# The x-split {A,B} | {C,D} leaves only the y offsets ±1/2 (scale 1):
#   inertia = 4 · (1/2)² = 1.0, centroids (0, 0.5) and (10, 1.5) in raw units.
# It is the only Lloyd fixed point among the 2-cluster partitions (the runner-up,
# the y-split {A,B,C} | {D}, has inertia 2.0 and is not stable), so every seed
# must find it. (The classic grid (0,0),(0,1),(10,0),(10,1) is NOT usable:
# standardising turns it into a square where the x- and y-splits tie.)

FOUR_POINTS = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 1.0], [10.0, 2.0]])


@pytest.fixture(scope="module")
def four_point_model() -> PersonaKMeans:
    return PersonaKMeans(spec=plain_spec(2), n_clusters=2, k_min=2, stability_rounds=0,
                         random_state=0).fit(FOUR_POINTS)


def test_four_points_standardisation_parameters_by_hand(four_point_model: PersonaKMeans) -> None:
    params = four_point_model.params_
    assert params.center == pytest.approx((5.0, 1.0), abs=1e-12)
    assert params.scale == pytest.approx((math.sqrt(0.5) / 5.0, 1.0), rel=1e-12)
    assert params.lower == (WIDE[0], WIDE[0]) and params.upper == (WIDE[1], WIDE[1])
    assert params.log1p == (False, False)


def test_four_points_centroids_and_labels_by_hand(four_point_model: PersonaKMeans) -> None:
    centroids = sorted(map(tuple, unscaled_centroids(four_point_model).round(9)))
    assert centroids == [(0.0, 0.5), (10.0, 1.5)]
    labels = four_point_model.labels_
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    assert four_point_model.k_ == 2 and four_point_model.sizes_.tolist() == [2, 2]
    assert four_point_model.metrics_.inertia == pytest.approx(1.0, rel=1e-12)
    assert four_point_model.merged_ == []


@pytest.mark.parametrize("seed", range(8))
def test_four_points_every_seed_finds_the_unique_optimum(seed: int) -> None:
    model = PersonaKMeans(spec=plain_spec(2), n_clusters=2, k_min=2, n_init=1, stability_rounds=0,
                          random_state=seed).fit(FOUR_POINTS)
    assert sorted(map(tuple, unscaled_centroids(model).round(9))) == [(0.0, 0.5), (10.0, 1.5)]


def test_four_points_scaled_centroids_are_means_of_scaled_members(
        four_point_model: PersonaKMeans) -> None:
    transformed, mean, _ = preprocess(four_point_model.spec, FOUR_POINTS)
    z = (transformed - mean) * np.asarray(four_point_model.params_.scale)
    centroids = np.asarray(four_point_model.params_.centroids)
    for index in range(2):
        members = z[four_point_model.labels_ == index]
        np.testing.assert_allclose(centroids[index], members.mean(axis=0), atol=1e-12)


# --- weights ---------------------------------------------------------------------------

def _two_independent_splits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature 0 splits users one way, feature 1 an independent other way."""
    rng = np.random.default_rng(seed)
    n = 240
    split_a = rng.permutation(np.repeat([0, 1], n // 2))
    split_b = rng.permutation(np.repeat([0, 1], n // 2))
    rows = np.column_stack([split_a * 10.0 + rng.normal(0, 0.5, n),
                            split_b * 10.0 + rng.normal(0, 0.5, n)])
    return rows, split_a, split_b


@pytest.mark.parametrize(("weights", "follows"), [((1.0, 1e-4), 0), ((1e-4, 1.0), 1)])
def test_a_feature_with_tiny_weight_does_not_drive_clustering(
        weights: tuple[float, float], follows: int) -> None:
    rows, split_a, split_b = _two_independent_splits(seed=11)
    model = PersonaKMeans(spec=plain_spec(2, weights), n_clusters=2, stability_rounds=0,
                          random_state=1).fit(rows)
    truth = (split_a, split_b)
    assert adjusted_rand_score(truth[follows], model.labels_) == pytest.approx(1.0)
    assert abs(adjusted_rand_score(truth[1 - follows], model.labels_)) < 0.1


def test_weights_enter_the_scale_as_square_roots() -> None:
    rows, _, _ = _two_independent_splits(seed=12)
    model = PersonaKMeans(spec=plain_spec(2, (3.0, 1.0)), n_clusters=2, stability_rounds=0,
                          random_state=1).fit(rows)
    std = rows.std(axis=0)
    expected = np.sqrt(np.array([0.75, 0.25])) / std
    np.testing.assert_allclose(model.params_.scale, expected, rtol=1e-12)


# --- k-min -----------------------------------------------------------------------------

def test_a_tiny_planted_cluster_is_never_released() -> None:
    rows, truth = blobs([(0.0, 0.0), (20.0, 0.0), (10.0, 40.0)], [120, 120, 3], 1.0, seed=5)
    model = PersonaKMeans(spec=plain_spec(2), n_clusters=3, k_min=10, stability_rounds=0,
                          random_state=2).fit(rows)
    assert model.k_ == 2
    assert len(model.merged_) == 1
    assert "3 users" in model.merged_[0] and "k-min 10" in model.merged_[0]
    assert model.sizes_.min() >= 10 and model.sizes_.sum() == len(rows)
    # no released centroid sits on the planted users
    assert np.linalg.norm(unscaled_centroids(model) - np.array([10.0, 40.0]), axis=1).min() > 10
    # the planted users now belong to released personas, like everyone else
    assert set(model.labels_[truth == 2]) <= set(range(model.k_))


def test_k_min_also_applies_when_k_is_chosen_automatically() -> None:
    rows, _ = blobs([(0.0, 0.0), (30.0, 0.0), (0.0, 30.0), (60.0, 60.0)], [80, 80, 80, 4],
                    1.0, seed=6)
    model = PersonaKMeans(spec=plain_spec(2), n_clusters="auto", k_range=(3, 5), k_min=10,
                          min_share=0.0, stability_rounds=0, random_state=3).fit(rows)
    assert model.sizes_.min() >= 10
    assert np.linalg.norm(unscaled_centroids(model) - np.array([60.0, 60.0]), axis=1).min() > 10


def test_k_min_that_cannot_be_met_is_an_input_error() -> None:
    rows, _ = blobs([(0.0, 0.0), (20.0, 0.0)], [15, 5], 1.0, seed=7)
    with pytest.raises(InputError, match="k-min"):
        PersonaKMeans(spec=plain_spec(2), n_clusters=2, k_min=10, stability_rounds=0,
                      random_state=0).fit(rows)


# --- automatic k -----------------------------------------------------------------------

@pytest.mark.parametrize("planted", [3, 5])
def test_auto_k_finds_the_planted_number_of_blobs(planted: int) -> None:
    angles = np.linspace(0, 2 * np.pi, planted, endpoint=False)
    centres = [(30 * np.cos(a), 30 * np.sin(a), 10.0 * i) for i, a in enumerate(angles)]
    rows, truth = blobs(centres, [60] * planted, 1.0, seed=planted)
    model = PersonaKMeans(spec=plain_spec(3), n_clusters="auto", k_range=(2, 7),
                          stability_rounds=0, random_state=4).fit(rows)
    assert model.k_ == planted
    assert adjusted_rand_score(truth, model.labels_) == pytest.approx(1.0)
    assert model.metrics_.k_selection.startswith("auto")


# --- estimator contract ----------------------------------------------------------------

def test_predict_before_fit_raises_not_fitted() -> None:
    model = PersonaKMeans(spec=plain_spec(2))
    with pytest.raises(NotFittedError, match="fit"):
        model.predict(FOUR_POINTS)
    assert issubclass(NotFittedError, PersonaError) and issubclass(NotFittedError, AttributeError)
    assert not hasattr(model, "params_") and not hasattr(model, "labels_")


def test_init_only_stores_parameters() -> None:
    spec = plain_spec(2)
    model = PersonaKMeans(spec=spec, n_clusters=4, k_min=3, random_state=9)
    assert (model.spec, model.n_clusters, model.k_min, model.random_state) == (spec, 4, 3, 9)
    assert [name for name in vars(model) if name.endswith("_")] == []


@pytest.mark.parametrize("bad", [
    np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0]]),
    np.array([[0.0, np.inf], [1.0, 1.0], [2.0, 2.0]]),
    np.zeros((4, 3)),
    np.zeros(4),
    np.zeros((2, 2, 2)),
], ids=["nan", "inf", "too-wide", "1-d", "3-d"])
def test_fit_rejects_bad_rows(bad: np.ndarray) -> None:
    with pytest.raises(InputError, match=r"finite|shape"):
        PersonaKMeans(spec=plain_spec(2), n_clusters=2, k_min=1, stability_rounds=0,
                      random_state=0).fit(bad)


def test_predict_rejects_bad_rows(four_point_model: PersonaKMeans) -> None:
    with pytest.raises(InputError, match="finite"):
        four_point_model.predict(np.array([[np.nan, 0.0]]))
    with pytest.raises(InputError, match="shape"):
        four_point_model.predict(np.zeros((3, 5)))


def test_predict_equals_labels_on_training_rows() -> None:
    rows, _ = blobs([(0.0, 0.0, 0.0), (5.0, 5.0, 0.0), (0.0, 5.0, 5.0)], [70, 50, 40], 2.0,
                    seed=8)
    model = PersonaKMeans(spec=plain_spec(3), n_clusters=3, stability_rounds=0, random_state=5).fit(rows)
    np.testing.assert_array_equal(model.predict(rows), model.labels_)
    # personas are numbered by size, largest first
    assert list(model.sizes_) == sorted(model.sizes_, reverse=True)


def test_same_seed_gives_identical_parameters() -> None:
    rows, _ = blobs([(0.0, 0.0), (4.0, 4.0), (8.0, 0.0)], [60, 60, 60], 1.5, seed=9)

    def fit() -> PersonaKMeans:
        return PersonaKMeans(spec=plain_spec(2), n_clusters="auto", k_range=(2, 4),
                             stability_rounds=2, random_state=1234).fit(rows)

    first, second = fit(), fit()
    assert first.params_ == second.params_
    np.testing.assert_array_equal(first.labels_, second.labels_)
    assert first.metrics_ == second.metrics_


def test_both_estimators_follow_one_convention_and_clone() -> None:
    from sklearn.base import clone

    from edgepersona.trainer.privacy.dp_kmeans import DPKMeans

    spec = plain_spec(2)
    for model in (PersonaKMeans(spec=spec, n_clusters=2, k_min=2, stability_rounds=0,
                                random_state=4),
                  DPKMeans(n_clusters=2, epsilon=2.0, bounds=(0.0, 10.0), k_min=-math.inf,
                           random_state=4)):
        params = model.get_params()
        assert "random_state" in params and "seed" not in params
        copy = clone(model)
        assert type(copy) is type(model) and copy.get_params() == params
        assert copy.set_params(random_state=5) is copy and copy.random_state == 5
        assert model.random_state == 4
        with pytest.raises(NotFittedError):
            copy.predict(FOUR_POINTS)
        with pytest.raises(InputError, match="unknown parameter 'seed'"):
            copy.set_params(seed=1)
        assert [name for name in vars(copy) if name.endswith("_")] == []
        assert model.fit(FOUR_POINTS * 2.0) is model
        assert len(model.predict(FOUR_POINTS)) == len(FOUR_POINTS)
