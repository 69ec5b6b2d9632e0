"""DP k-means: privacy on neighbouring inputs, accounting, declared scaling, k-min, utility.

Privacy tests run a mechanism a fixed number of times (seeded) on a dataset D
and on D' = D plus one worst-case row (a corner of the box) and bin a scalar
statistic of the output into pooled-quantile bins. For every bin S with at
least MIN_MASS hits under D (and at least eight such bins), in both
directions::

    P̂[M(D) ∈ S] ≤ e^ε · (1 + tol) · P̂[M(D') ∈ S] + slack

where, with c and c' the two bin counts out of T trials, tol = (4√c' + 8)/c'
and slack = δ + 4√c/T: four-standard-deviation (Poisson) confidence margins,
so a correct mechanism fails a bin with probability below 1e-4 and all bins
together below 1e-3, while a bin that only one input reaches (c' = 0) is a
violation. The seeds make every outcome fixed. Each test has a negative
control (the same mechanism with several times too little noise) that must
fail the same check, so the test is known to be able to fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.base import clone
from sklearn.cluster import KMeans

from edgepersona.sdk import Feature, FeatureSpec, InputError
from edgepersona.sdk.protocol.assign import numpy_assign
from edgepersona.trainer.engines.lloyd import ClusterStats, lloyd
from edgepersona.trainer.engines.local import LocalBlocks
from edgepersona.trainer.errors import NotFittedError
from edgepersona.trainer.privacy import dp_kmeans as dp
from edgepersona.trainer.privacy.accounting import gaussian_mu
from edgepersona.trainer.privacy.dp_kmeans import (
    DPKMeans,
    PrivacyLeakWarning,
    declared_scaling,
    fit_dp_kmeans,
)

F64 = npt.NDArray[np.float64]
EPSILON, DELTA = 1.0, 1e-6
MIN_MASS = 100


def worst_ratio(mechanism: Callable[[F64, np.random.Generator], float], d: F64, d_prime: F64,
                trials: int) -> float:
    """max over bins S and both directions of LCB(P[D ∈ S]) / (e^ε UCB(P[D' ∈ S]) + δ); <= 1 passes."""
    rng = np.random.default_rng(20240601)
    bins = trials // MIN_MASS  # pooled-quantile bins: about MIN_MASS hits per input where they agree
    samples = np.array([[mechanism(data, rng) for _ in range(trials)] for data in (d, d_prime)])
    edges = np.unique(np.quantile(samples, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    counts = np.array([np.histogram(s, edges)[0] for s in samples])
    ratios = [((c - 4 * math.sqrt(c)) / trials) / (math.exp(EPSILON) * (c2 + 4 * math.sqrt(c2) + 8)
                                                   / trials + DELTA)
              for c, c2 in [*zip(*counts, strict=True), *zip(*counts[::-1], strict=True)]
              if c >= MIN_MASS]
    assert len(ratios) >= 8, "too few bins with enough mass: the check would be vacuous"
    return max(ratios)


# --- one round: the only data access ----------------------------------------------------

HALF = np.array([0.5, 0.5])
ROUND_D = np.random.default_rng(3).uniform(-0.5, 0.5, size=(40, 2))
ROUND_D_PRIME = np.vstack([ROUND_D, HALF])  # the added row is at a corner: the full radius


def round_statistic(mu_scale: float) -> Callable[[F64, np.random.Generator], float]:
    """The Neyman-Pearson statistic of one round calibrated to (ε, δ) (the most powerful test)."""
    mu2 = (gaussian_mu(EPSILON, DELTA) * mu_scale) ** 2
    share = 1 / (1 + math.sqrt(2))
    var_count, var_sum = 1 / (share * mu2), 0.5 / ((1 - share) * mu2)  # R^2 = 0.5

    def statistic(x: F64, rng: np.random.Generator) -> float:
        cells = np.zeros(len(x), dtype=np.int64)
        counts, sums, _ = dp._noisy_stats(x, cells, 2, mu2, rng, HALF)
        return float(counts[0] / var_count + sums[0] @ HALF / var_sum)

    return statistic


def test_a_round_is_epsilon_delta_private_on_neighbours() -> None:
    assert worst_ratio(round_statistic(1.0), ROUND_D, ROUND_D_PRIME, trials=20_000) <= 1.0


def test_the_round_check_catches_too_little_noise() -> None:
    assert worst_ratio(round_statistic(4.0), ROUND_D, ROUND_D_PRIME, trials=20_000) > 1.5


# --- the whole pipeline ------------------------------------------------------------------

LINE_D = np.concatenate([np.full(200, 0.2), np.full(200, 0.7)])[:, None]
LINE_D_PRIME = np.vstack([LINE_D, [[1.0]]])  # one row at the upper bound: |x - centre| = R = 1/2


def pipeline_statistic(x: F64, rng: np.random.Generator) -> float:
    """The final round's Neyman-Pearson statistic, rebuilt from what DPKMeans releases.

    Adding a row adds 1 to the total count and x - 1/2 to the total centred sum,
    whichever cell it falls in; count_j * (centre_j - 1/2) is the noisy centred sum.
    """
    weights = dp._schedule(1, 1)
    mu2 = gaussian_mu(EPSILON, DELTA) ** 2 * weights[-1] / weights.sum()
    var_count, var_sum = 1 / (0.5 * mu2), 0.25 / (0.5 * mu2)  # d = 1: half the budget each
    model = DPKMeans(n_clusters=2, epsilon=EPSILON, delta=DELTA, bounds=(0.0, 1.0), iterations=1,
                     tree_levels=1, k_min=-math.inf, random_state=rng).fit(x)
    counts, centred = model.counts_, model.cluster_centers_[:, 0] - 0.5
    return float(counts.sum() / var_count + (counts * centred).sum() * 0.5 / var_sum)


def test_dp_kmeans_is_epsilon_delta_private_on_neighbours() -> None:
    assert worst_ratio(pipeline_statistic, LINE_D, LINE_D_PRIME, trials=2500) <= 1.0


def test_the_pipeline_check_catches_a_budget_overrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dp, "gaussian_mu", lambda eps, delta: 8 * gaussian_mu(eps, delta))
    assert worst_ratio(pipeline_statistic, LINE_D, LINE_D_PRIME, trials=2500) > 1.5


def test_every_data_access_is_a_clipped_round_and_the_rounds_spend_exactly_mu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    real = dp._noisy_release

    def recording(exact: ClusterStats, mu2: float, rng: np.random.Generator, half: F64
                  ) -> tuple[F64, F64, float]:
        # Every row was clipped to the box: no cell's centred sum can exceed count x half.
        assert (np.abs(exact.sums) <= exact.counts[:, None] * half + 1e-9).all()
        assert exact.counts.sum() == 500  # each round is a partition of every row
        calls.append(mu2)
        return real(exact, mu2, rng, half)

    monkeypatch.setattr(dp, "_noisy_release", recording)
    rows = np.random.default_rng(0).normal(0.5, 2.0, size=(500, 3))  # many rows outside bounds
    DPKMeans(n_clusters=3, epsilon=2.0, bounds=(0.0, 1.0), iterations=4, tree_levels=3,
             random_state=1).fit(rows)
    assert len(calls) == 1 + 2 * 3 + 1 + 4  # root, two per tree level, overclustered, Lloyd
    assert sum(calls) == pytest.approx(gaussian_mu(2.0, 1e-6) ** 2, rel=1e-12)


def test_dp_lloyd_is_the_shared_core_plus_noise_on_the_reduced_statistics() -> None:
    # With the noise sampled as zeros, a DP-Lloyd round is exactly one iteration of the
    # shared Lloyd core over the same rows (the one map-reduce of counts and sums).
    rows = np.random.default_rng(4).uniform(-0.5, 0.5, size=(300, 2))
    start = np.array([[-0.2, -0.2], [0.2, 0.2], [0.0, 0.3]])

    class Silent(np.random.Generator):
        def normal(self, loc: object = 0.0, scale: object = 1.0, size: object = None
                   ) -> F64:  # type: ignore[override]
            return np.zeros(() if size is None else size)  # type: ignore[arg-type]

    silent = Silent(np.random.PCG64(0))
    centers, counts = dp._lloyd(LocalBlocks(rows).map_reduce, start, HALF, np.array([1e6]), silent)
    core = lloyd(LocalBlocks(rows).map_reduce, start, max_iter=1)
    np.testing.assert_allclose(centers, core.centroids, atol=1e-12)
    np.testing.assert_array_equal(counts, core.counts)


# --- k-min on noisy counts ---------------------------------------------------------------

def blobs(n: int, d: int, k: int, seed: int, spread: float = 0.05) -> F64:
    """Separated clusters in [0, 1]^d with unequal sizes (the benchmark's generator)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.15, 0.85, size=(k, d))
    weights = rng.uniform(0.5, 1.5, size=k)
    labels = rng.choice(k, size=n, p=weights / weights.sum())
    return np.clip(centres[labels] + rng.normal(0.0, spread, size=(n, d)), 0.0, 1.0)


def test_k_min_drops_centroids_by_their_noisy_count() -> None:
    rows = blobs(2000, 4, 5, seed=2)
    options = {"n_clusters": 5, "epsilon": 0.5, "bounds": (0.0, 1.0), "random_state": 7}
    everything = DPKMeans(**options).fit(rows)
    assert not np.allclose(everything.counts_, np.round(everything.counts_))  # noisy counts
    k_min = float(np.sort(everything.counts_)[1]) + 1e-6  # between two noisy counts
    model = DPKMeans(**options, k_min=k_min).fit(rows)
    assert model.n_clusters_ == 3 and len(model.dropped_) == 2
    assert all("< k-min" in reason for reason in model.dropped_)
    assert (model.counts_ >= k_min).all()
    np.testing.assert_array_equal(model.cluster_centers_, everything.cluster_centers_[:3])
    assert set(model.predict(rows)) <= {0, 1, 2}
    with pytest.raises(InputError, match="k_min"):
        DPKMeans(**options, k_min=10**9).fit(rows)


# --- declared bounds and the leak warning --------------------------------------------------

def spec(bounds_source: Literal["declared", "data"] = "declared") -> FeatureSpec:
    return FeatureSpec(features=(
        Feature(name="spend", event="buy", property="value", aggregate="sum", transform="log1p",
                bounds=(0.0, 1000.0), weight=3.0, bounds_source=bounds_source),
        Feature(name="visits", event="visit", aggregate="count", bounds=(0.0, 50.0), weight=1.0),
    ))


def test_declared_scaling_uses_only_the_spec_and_matches_the_device() -> None:
    scaling = declared_scaling(spec())
    low, high = scaling.bounds
    np.testing.assert_allclose(high, np.sqrt([0.75, 0.25]) / 2)
    np.testing.assert_allclose(low, -high)
    rows = np.random.default_rng(1).uniform(-100, 2000, size=(300, 2))
    z = scaling.transform(rows)
    assert (z >= low - 1e-12).all() and (z <= high + 1e-12).all()
    model = DPKMeans(n_clusters=3, epsilon=5.0, bounds=scaling.bounds, random_state=0).fit(z)
    params = scaling.assigner_params(model.cluster_centers_)
    np.testing.assert_array_equal(numpy_assign(params, rows)[0], model.predict(z))


def test_bounds_from_data_warn() -> None:
    with pytest.warns(PrivacyLeakWarning, match="derived from the data"):
        declared_scaling(spec("data"))
    with pytest.warns(PrivacyLeakWarning, match="not differentially private"):
        DPKMeans(n_clusters=2, random_state=0).fit(np.random.default_rng(0).random((50, 2)))


# --- estimator conventions ----------------------------------------------------------------

def test_estimator_follows_scikit_learn_conventions() -> None:
    rows = blobs(600, 3, 3, seed=4)
    model = DPKMeans(n_clusters=3, epsilon=2.0, bounds=(0.0, 1.0), random_state=5)
    with pytest.raises(NotFittedError):
        model.predict(rows)
    with pytest.raises(TypeError):
        DPKMeans(3)  # type: ignore[misc]
    twin = clone(model)
    assert twin.get_params() == model.get_params() and not hasattr(twin, "cluster_centers_")
    assert model.fit(rows) is model
    np.testing.assert_array_equal(twin.fit(rows).cluster_centers_, model.cluster_centers_)
    assert model.mu_ == pytest.approx(gaussian_mu(2.0, 1e-6)) and model.rho_ == model.mu_**2 / 2
    unseeded = [DPKMeans(n_clusters=3, bounds=(0.0, 1.0)).fit(rows).cluster_centers_ for _ in "ab"]
    assert not np.array_equal(*unseeded)  # secrets-seeded when no seed is given


@pytest.mark.parametrize(("params", "match"), [
    ({"epsilon": 0.0}, "epsilon"), ({"delta": 0.0}, "delta > 0"), ({"n_clusters": 0}, "n_clusters"),
    ({"iterations": 1.5}, "iterations"), ({"bounds": (1.0, 0.0)}, "lower < upper"),
    ({"bounds": ((0, 0, 0), 1.0)}, "bounds must be"),
])
def test_bad_parameters_say_what_is_expected(params: dict[str, object], match: str) -> None:
    model = DPKMeans(bounds=(0.0, 1.0)).set_params(**params)
    with pytest.raises(InputError, match=match):
        model.fit(np.zeros((10, 2)))
    with pytest.raises(InputError, match="finite matrix"):
        DPKMeans(bounds=(0.0, 1.0)).fit(np.array([[np.nan, 0.0]]))


# --- utility ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def utility_rows() -> tuple[F64, float]:
    rows = blobs(10_000, 16, 8, seed=1)
    return rows, float(KMeans(8, n_init=10, random_state=0).fit(rows).inertia_)


def cost(rows: F64, centres: F64) -> float:
    return float(((rows[:, None, :] - centres[None]) ** 2).sum(axis=2).min(axis=1).sum())


@pytest.mark.parametrize(("epsilon", "limit"), [(10.0, 1.02), (1.0, 1.5)])
def test_cost_ratio_against_the_non_private_optimum(utility_rows: tuple[F64, float], epsilon: float,
                                                    limit: float) -> None:
    rows, optimum = utility_rows
    centres = fit_dp_kmeans(rows, 8, epsilon=epsilon, delta=DELTA, bounds=(0.0, 1.0), rng=11)
    assert centres.shape == (8, 16) and ((centres >= 0) & (centres <= 1)).all()
    assert cost(rows, centres) / optimum <= limit
