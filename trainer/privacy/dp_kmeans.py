"""Differentially private k-means: DP-Lloyd seeded by a private bisecting tree.

Input space. Rows are clipped to DECLARED bounds ``[lo, hi]`` in the
clustering space; nothing about the space is learnt from the data. For
personas, :func:`declared_scaling` maps the spec's clipped, transformed
features to ``[-sqrt(w_j)/2, +sqrt(w_j)/2]`` using the declared bounds only
(the non-private trainer standardises with the data's mean and std, which
would leak outside the budget). Weights sum to 1, so every row lies within
1/2 of the origin.

Neighbours: datasets that differ by adding or removing one row (one user).
Under replace-one, a change is a removal plus an addition: mu doubles.

Mechanism. Every data access is a *round*: the rows are split into cells by
a partition fixed by public values (bounds, k, the seed) and earlier noisy
outputs, and for each cell j the round releases::

    n_j + N(0, s_c^2)          sum over the cell of (x - c) + N(0, s_s^2 I)

with c the centre of the box. Adding one row changes one cell only: its count
by 1 and its sum by ``x - c``, whose L2 norm is at most R = |(hi - lo)/2|.
So the L2 sensitivities are 1 (counts) and R (sums), whatever the number of
cells (L1: 1 and sum_j (hi_j - lo_j)/2, what a Laplace variant would need; for
a cube the L2 figure is sqrt(d) times smaller, hence Gaussian noise). Centring
at c halves R compared with summing uncentred rows of a [0, hi] box. The round is
mu_t-Gaussian-DP with mu_t^2 = 1/s_c^2 + R^2/s_s^2.
Rounds compose adaptively as mu^2 = sum of mu_t^2 (Dong, Roth & Su 2022);
mu = ``gaussian_mu(epsilon, delta)`` is the largest mu whose exact Gaussian
privacy profile gives (epsilon, delta) (see :mod:`.accounting`; the ledger records the
release as rho = mu^2/2 zCDP). Within a round 1/(1 + sqrt(d)) of mu_t^2 goes to
the counts and the rest to the sums, which carry d coordinates.

Rounds and budget split (relative weights of mu^2, normalised to sum to 1):
  1. root: the noisy count and mean of all rows (0.1);
  2. a private bisecting tree, ``tree_levels`` levels of two rounds (0.15 *
     1.5**level each): every node is split by 2-means started from a random
     hyperplane through its noisy mean; the split stands if both noisy child
     counts reach max(2 s_c, n_hat / (4k)), n_hat the noisy root count, else
     the node keeps its rows, pools its children's statistics into its own
     (inverse-variance weights) and retries along a new direction at the
     next level;
  3. one overclustered DP-Lloyd round with every tree node as a centre
     (1.0): rows may leave the branch an early cut put them in;
  4. weighted k-means++ (10 restarts) on those noisy (mean, count) pairs:
     post-processing, no data access;
  5. ``iterations`` DP-Lloyd rounds (1.0 each, 4.0 for the last, whose noise
     is what the released centroids carry).
DP-Lloyd is the noisy form of the shared Lloyd core
(:mod:`edgepersona.trainer.engines.lloyd`): a round runs the core's map-reduce
of per-centroid counts and sums (:func:`~edgepersona.trainer.engines.lloyd.partial_stats`
over the local engine's blocks) and adds the round's Gaussian noise to the
reduced totals (``_noisy_release``), the only values a data access releases;
the tree's rounds add the same noise to the exact statistics of their cells.
Only the final centroids (clipped to the box) and their noisy counts leave
:class:`DPKMeans`; every intermediate value is discarded. Nothing depends on
the true number of rows.

k-min on noisy counts: a centroid whose final noisy count is below ``k_min``
is dropped and reported in ``dropped_``; its users go to the nearest released
centroid. This is post-processing (no further data access); DP is the
guarantee, k-min is a policy against near-empty personas.

Randomness: a NumPy PCG64 generator seeded from :mod:`secrets` unless a seed
is given (tests and benchmarks only). The noise is float64 Gaussian; a
discrete Gaussian would close the known floating-point side channels.
"""

from __future__ import annotations

import math
import secrets
import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import FeatureSpec, InputError
from edgepersona.sdk.protocol.manifest import AssignerParams
from edgepersona.trainer.engines.estimator import EstimatorParams
from edgepersona.trainer.engines.lloyd import ClusterStats, nearest, partial_stats
from edgepersona.trainer.engines.local import LocalBlocks
from edgepersona.trainer.engines.row_blocks import MapReduce
from edgepersona.trainer.errors import NotFittedError
from edgepersona.trainer.privacy.accounting import gaussian_mu

__all__ = ["DPKMeans", "DeclaredScaling", "PrivacyLeakWarning", "declared_scaling", "fit_dp_kmeans"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Seed = int | np.random.Generator | None


class PrivacyLeakWarning(UserWarning):
    """Bounds came from the data, so the release is not differentially private."""


# Shown on every occurrence unless the application filters it (appended: user filters win).
warnings.filterwarnings("always", category=PrivacyLeakWarning, append=True)


@dataclass(frozen=True)
class DeclaredScaling:
    """Feature scaling built from declared bounds only: ``z = (t(clip(x)) - center) * scale``.

    Attributes:
        lower: raw lower bounds.
        upper: raw upper bounds.
        log1p: which features are log1p-transformed.
        center: middle of each transformed bound interval.
        scale: sqrt(normalised weight) / width of each transformed interval.
    """

    lower: F64
    upper: F64
    log1p: npt.NDArray[np.bool_]
    center: F64
    scale: F64

    @property
    def bounds(self) -> tuple[F64, F64]:
        """The clustering-space box (pass as ``DPKMeans(bounds=...)``)."""
        half = self.scale * (self._t(self.upper) - self._t(self.lower)) / 2.0
        return -half, half

    def transform(self, rows: F64) -> F64:
        """Raw rows to clustering space (exactly what the device computes).

        Args:
            rows: raw features, shape (n, d).

        Returns:
            z, inside :attr:`bounds`.
        """
        return (self._t(np.clip(rows, self.lower, self.upper)) - self.center) * self.scale

    def assigner_params(self, centroids: F64) -> AssignerParams:
        """The manifest's assigner parameters for centroids in clustering space.

        Args:
            centroids: shape (k, d), k >= 2.

        Returns:
            The parameters.
        """
        return AssignerParams(lower=tuple(self.lower.tolist()), upper=tuple(self.upper.tolist()),
                              log1p=tuple(self.log1p.tolist()), center=tuple(self.center.tolist()),
                              scale=tuple(self.scale.tolist()),
                              centroids=tuple(tuple(c) for c in centroids.tolist()))

    def _t(self, values: F64) -> F64:
        """Apply log1p where the spec says so (masked, exactly as the device does)."""
        out = np.array(values, dtype=np.float64)
        out[..., self.log1p] = np.log1p(out[..., self.log1p])
        return out


def declared_scaling(spec: FeatureSpec) -> DeclaredScaling:
    """Build the DP preprocessing from the spec's bounds, transforms and weights only.

    Args:
        spec: the feature spec.

    Returns:
        The scaling; its :attr:`DeclaredScaling.bounds` is the box to declare.

    Warns:
        PrivacyLeakWarning: some bounds were derived from the data.
    """
    leaky = [f.name for f in spec.features if f.bounds_source == "data"]
    if leaky:
        warnings.warn(f"bounds of {', '.join(leaky)} were derived from the data, so DP does not"
                      " hold; declare them in the spec", PrivacyLeakWarning, stacklevel=2)
    lower = np.array([f.bounds[0] for f in spec.features], dtype=np.float64)
    upper = np.array([f.bounds[1] for f in spec.features], dtype=np.float64)
    log1p = np.array([f.transform == "log1p" for f in spec.features])
    probe = DeclaredScaling(lower, upper, log1p, np.zeros_like(lower), np.ones_like(lower))
    t_lo, t_hi = probe._t(lower), probe._t(upper)
    scale = np.sqrt(np.array(spec.normalised_weights())) / (t_hi - t_lo)
    return DeclaredScaling(lower, upper, log1p, (t_lo + t_hi) / 2.0, scale)


def fit_dp_kmeans(z: F64, k: int, *, epsilon: float, delta: float, iterations: int = 3,
                  bounds: tuple[F64 | float, F64 | float], rng: Seed = None) -> F64:
    """(epsilon, delta)-DP k-means centroids (all k, no k-min; see :class:`DPKMeans`).

    Args:
        z: rows in clustering space, shape (n, d); clipped to ``bounds``.
        k: the number of centroids.
        epsilon: the privacy budget of this release.
        delta: its delta (> 0; Gaussian noise).
        iterations: DP-Lloyd rounds after the private seeding.
        bounds: declared (lower, upper) per feature, or scalars for all features.
        rng: a generator or seed; None draws a seed from :mod:`secrets`.

    Returns:
        Centroids, shape (k, d).

    Raises:
        InputError: bad shapes, bounds or parameters.
    """
    model = DPKMeans(n_clusters=k, epsilon=epsilon, delta=delta, bounds=bounds,
                     iterations=iterations, random_state=rng)
    return model._fit_all(z)[0]


class DPKMeans(EstimatorParams):
    """Differentially private k-means following scikit-learn's estimator conventions.

    Args:
        n_clusters: the number of centroids to fit (fewer may be released, see k_min).
        epsilon: the privacy budget of this release.
        delta: its delta (> 0; Gaussian noise).
        bounds: declared (lower, upper) per feature or scalars; None takes them from the
            data and emits a :class:`PrivacyLeakWarning` (the result is then not DP).
        iterations: DP-Lloyd rounds after the private seeding.
        tree_levels: levels of the private bisecting tree used for seeding.
        k_min: centroids with a noisy final count below this are not released.
        random_state: a seed or generator; None draws a seed from :mod:`secrets`.
    """

    def __init__(self, *, n_clusters: int = 8, epsilon: float = 1.0, delta: float = 1e-6,
                 bounds: tuple[F64 | float, F64 | float] | None = None, iterations: int = 3,
                 tree_levels: int = 5, k_min: float = 1, random_state: Seed = None) -> None:
        self.n_clusters = n_clusters
        self.epsilon = epsilon
        self.delta = delta
        self.bounds = bounds
        self.iterations = iterations
        self.tree_levels = tree_levels
        self.k_min = k_min
        self.random_state = random_state

    def fit(self, X: F64, y: object = None) -> DPKMeans:  # noqa: N803 - scikit-learn's name
        """Fit centroids with (epsilon, delta)-DP.

        Args:
            X: rows, shape (n, d), finite; clipped to the bounds.
            y: ignored.

        Returns:
            self, with ``cluster_centers_`` (largest noisy count first), ``counts_``
            (their noisy counts), ``dropped_``, ``n_clusters_``, ``mu_`` and ``rho_``.

        Raises:
            InputError: bad shapes, bounds or parameters, or no centroid reaches k_min.

        Warns:
            PrivacyLeakWarning: ``bounds`` is None.
        """
        centers, counts = self._fit_all(X)
        order = np.argsort(-counts, kind="stable")
        keep = order[counts[order] >= self.k_min]
        if len(keep) == 0:
            raise InputError(f"no centroid has a noisy count of at least k_min={self.k_min}; lower"
                             " k_min or n_clusters, raise epsilon, or use more rows")
        self.dropped_ = tuple(f"a centroid with noisy count {counts[j]:.1f} (< k-min {self.k_min})"
                              " was not released; its users go to the nearest released one"
                              for j in order if counts[j] < self.k_min)
        self.cluster_centers_, self.counts_ = centers[keep], counts[keep]
        self.n_clusters_ = len(keep)
        self.mu_ = gaussian_mu(float(self.epsilon), float(self.delta))
        self.rho_ = self.mu_**2 / 2.0
        return self

    def _fit_all(self, X: F64) -> tuple[F64, F64]:  # noqa: N803 - scikit-learn's name
        """Validate, then fit all n_clusters centroids; return them and their noisy counts."""
        x = _matrix(X)
        lower, upper = self._declared_bounds(x)
        k, iterations, levels = (_positive(self, name) for name in
                                 ("n_clusters", "iterations", "tree_levels"))
        mu = gaussian_mu(float(self.epsilon), float(self.delta))
        seed = self.random_state
        rng = seed if isinstance(seed, np.random.Generator) else \
            np.random.default_rng(secrets.randbits(128) if seed is None else seed)
        center, half = (upper + lower) / 2.0, (upper - lower) / 2.0
        shifted = np.clip(x, lower, upper) - center
        weights = _schedule(levels, iterations)
        mu2 = mu * mu * weights / weights.sum()
        tree, refine = 2 * levels + 1, 2 * levels + 2  # rounds: root + tree, overclustered, Lloyd
        columns = np.asfortranarray(shifted)  # the tree's per-cell sums go column by column
        points, sizes = _private_seeds(columns, k, half, mu2[:tree], rng)
        del columns
        blocks = LocalBlocks(shifted).map_reduce  # the shared Lloyd core's map-reduce
        points, sizes = _lloyd(blocks, points, half, mu2[tree:refine], rng)
        start = _coreset_kmeans(points, sizes, k, half, rng)
        centers, counts = _lloyd(blocks, start, half, mu2[refine:], rng)
        return centers + center, counts

    def predict(self, X: F64) -> I64:  # noqa: N803 - scikit-learn's name
        """Index of the nearest released centroid for each row.

        Args:
            X: rows, shape (n, d).

        Returns:
            Centroid indices.

        Raises:
            NotFittedError: ``fit`` has not been called.
        """
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError("DPKMeans is not fitted yet; call fit(X) first")
        return nearest(_matrix(X), self.cluster_centers_)[0]

    def _declared_bounds(self, x: F64) -> tuple[F64, F64]:
        """Broadcast and check the declared bounds, or take them from the data (and warn)."""
        if self.bounds is None:
            warnings.warn("DPKMeans got no bounds and takes them from the data, so the result is"
                          " not differentially private; pass bounds=(lower, upper)",
                          PrivacyLeakWarning, stacklevel=4)  # the caller of fit
            low, high = (x.min(axis=0), x.max(axis=0)) if len(x) else (0.0, 1.0)
            return np.broadcast_to(low, x.shape[1:]), np.broadcast_to(high, x.shape[1:]) + 1e-9
        try:
            lower, upper = (np.broadcast_to(np.asarray(b, dtype=np.float64), x.shape[1:])
                            for b in self.bounds)
        except (ValueError, TypeError):
            raise InputError(f"bounds must be (lower, upper), each a number or {x.shape[1]} numbers"
                             ) from None
        if not (np.isfinite(lower).all() and np.isfinite(upper).all() and (lower < upper).all()):
            raise InputError("bounds must be finite with lower < upper for every feature")
        return lower, upper


def _matrix(rows: F64) -> F64:
    """Rows must be a finite 2-D matrix."""
    matrix = np.asarray(rows, dtype=np.float64)
    if matrix.ndim != 2 or not np.isfinite(matrix).all():
        raise InputError(f"X must be a finite matrix of shape (n, d), got shape {matrix.shape}")
    return matrix


def _positive(model: DPKMeans, name: str) -> int:
    """An integer parameter that must be at least 1."""
    value = getattr(model, name)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _schedule(levels: int, iterations: int) -> F64:
    """Relative mu^2 per round: root, two per tree level, overclustered, then the Lloyd rounds."""
    tree = [0.15 * 1.5**level for level in range(levels) for _ in range(2)]
    return np.array([0.1, *tree, 1.0, *([1.0] * (iterations - 1)), 4.0])


def _noisy_release(exact: ClusterStats, mu2: float, rng: np.random.Generator,
                   half: F64) -> tuple[F64, F64, float]:
    """Gaussian noise on one round's exact per-cell counts and sums: all a data access releases."""
    radius = float(np.linalg.norm(half))
    share = 1.0 / (1.0 + math.sqrt(exact.sums.shape[1]))
    sigma_count = math.sqrt(1.0 / (share * mu2))
    sigma_sum = radius / math.sqrt((1.0 - share) * mu2)
    counts = exact.counts + rng.normal(0.0, sigma_count, len(exact.counts))
    return counts, exact.sums + rng.normal(0.0, sigma_sum, exact.sums.shape), sigma_count


def _noisy_stats(x: F64, cells: I64, m: int, mu2: float, rng: np.random.Generator,
                 half: F64) -> tuple[F64, F64, float]:
    """One round over a public partition (the tree's cells): exact count and sum per cell, noised."""
    counts = np.bincount(cells, minlength=m).astype(np.float64)
    sums = np.stack([np.bincount(cells, weights=column, minlength=m)
                     for column in np.ascontiguousarray(x.T)], axis=1).astype(np.float64, copy=False)
    return _noisy_release(ClusterStats(counts, sums, 0.0), mu2, rng, half)


def _means(counts: F64, sums: F64, sigma: float | F64, half: F64, previous: F64) -> F64:
    """Noisy means inside the box; cells whose count is mostly noise keep ``previous``."""
    means = np.clip(sums / np.maximum(counts, 1.0)[:, None], -half, half)
    return np.where((counts >= np.maximum(1.0, 2.0 * sigma))[:, None], means, previous)


def _private_seeds(x: F64, k: int, half: F64, mu2: F64, rng: np.random.Generator
                   ) -> tuple[F64, F64]:
    """The private bisecting tree: a weighted coreset of (noisy mean, noisy count)."""
    n, d = x.shape
    node = np.zeros(n, dtype=np.int64)
    counts, sums, sigma = _noisy_stats(x, node, 1, float(mu2[0]), rng, half)
    n_hat, precision = max(float(counts[0]), 1.0), np.full(1, sigma**-2)
    means = _means(counts, sums, sigma, half, np.zeros((1, d)))
    for level in range(len(mu2) // 2):
        m = len(means)
        offset = 1e-6 * rng.normal(size=(m, d))  # a random hyperplane through each noisy mean
        seeds = np.empty((2 * m, d))
        seeds[0::2], seeds[1::2] = means - offset, means + offset
        for step in (1, 2):
            normal = seeds[1::2] - seeds[0::2]  # 2-means boundary of each node: a hyperplane
            cut = ((seeds[1::2] + seeds[0::2]) / 2.0 * normal).sum(axis=1)
            child = 2 * node + (_along(x, normal, node) > cut[node])
            child_counts, child_sums, sigma = _noisy_stats(
                x, child, 2 * m, float(mu2[2 * level + step]), rng, half)
            seeds = _means(child_counts, child_sums, sigma, half, seeds)
        # The two children partition their node: pool them with its earlier estimate
        # (inverse-variance weights; post-processing), so a node that does not split
        # still gets this level's more precise statistics.
        fresh = 0.5 / sigma**2
        total = precision + fresh
        counts = (counts * precision + (child_counts[0::2] + child_counts[1::2]) * fresh) / total
        sums = (sums * precision[:, None] + (child_sums[0::2] + child_sums[1::2]) * fresh) / total[:, None]
        means, precision = _means(counts, sums, total**-0.5, half, means), total
        threshold = max(2.0 * sigma, n_hat / (4.0 * k))
        split = (child_counts[0::2] >= threshold) & (child_counts[1::2] >= threshold)
        kids, stay = np.flatnonzero(np.repeat(split, 2)), np.flatnonzero(~split)
        renumber = np.full(3 * m, -1, dtype=np.int64)  # children 0..2m-1, unsplit nodes 2m..3m-1
        renumber[kids], renumber[2 * m + stay] = np.arange(len(kids)), len(kids) + np.arange(len(stay))
        node = renumber[np.where(split[node], child, 2 * m + node)]
        means = np.vstack([seeds[kids], means[stay]])
        counts = np.concatenate([child_counts[kids], counts[stay]])
        sums = np.vstack([child_sums[kids], sums[stay]])
        precision = np.concatenate([np.full(len(kids), sigma**-2), precision[stay]])
    return means, counts


def _along(x: F64, normals: F64, node: I64, chunk: int = 32_768) -> F64:
    """Each row's projection on its own node's normal (chunked: n x nodes can be large)."""
    out = np.empty(len(x))
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        out[rows] = np.take_along_axis(x[rows] @ normals.T, node[rows, None], axis=1)[:, 0]
    return out


def _coreset_kmeans(points: F64, weights: F64, k: int, half: F64, rng: np.random.Generator,
                    restarts: int = 10, steps: int = 30) -> F64:
    """Weighted k-means++ and Lloyd on the noisy coreset (post-processing only)."""
    w = np.maximum(weights, 0.0) + 1e-9
    if len(points) <= k:  # too few nodes: split the heaviest ones
        extra = points[np.argsort(-w)[np.arange(k - len(points)) % len(points)]]
        return np.vstack([points, extra + 1e-3 * rng.normal(size=extra.shape) * half])
    best, best_cost = points[:k], math.inf
    for _ in range(restarts):
        centers = points[[rng.choice(len(points), p=w / w.sum())]]
        for _ in range(k - 1):
            gap = w * ((points[:, None, :] - centers[None]) ** 2).sum(axis=2).min(axis=1)
            pick = rng.choice(len(points), p=gap / gap.sum()) if gap.sum() > 0 else 0
            centers = np.vstack([centers, points[pick]])
        for _ in range(steps):
            labels = nearest(points, centers)[0]
            mass = np.bincount(labels, weights=w, minlength=k)
            total = np.zeros_like(centers)
            np.add.at(total, labels, points * w[:, None])
            moved = np.where(mass[:, None] > 0, total / np.maximum(mass, 1e-300)[:, None], centers)
            if np.array_equal(moved, centers):
                break
            centers = moved
        cost = float((w * ((points - centers[nearest(points, centers)[0]]) ** 2).sum(axis=1)).sum())
        if cost < best_cost:
            best, best_cost = centers, cost
    return best


def _lloyd(rows: MapReduce, centers: F64, half: F64, mu2: F64, rng: np.random.Generator
           ) -> tuple[F64, F64]:
    """DP-Lloyd: the shared core's map-reduce of per-centroid counts and sums, noise on the totals."""
    counts = np.zeros(len(centers))
    for budget in mu2:
        exact: ClusterStats = rows(partial(partial_stats, centroids=centers))
        counts, sums, sigma = _noisy_release(exact, float(budget), rng, half)
        centers = _means(counts, sums, sigma, half, centers)
    return centers, counts
