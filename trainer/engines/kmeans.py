"""Weighted k-means personas, following scikit-learn's estimator conventions.

Rows are clipped to the spec's bounds, transformed (log1p where the spec says
so), standardised and multiplied by the square root of each feature's
normalised clustering weight, so squared Euclidean distance is the weighted
sum ``Σ_j w_j (Δz_j)²``. The fitted parameters are exactly what the device
runs (:class:`edgepersona.sdk.protocol.manifest.AssignerParams`), and ``labels_`` are
what the device's numpy assigner gives for the training rows.

Engines: ``fit`` takes a numpy array (fitted in this process, in blocks, on a
few threads) or any :class:`edgepersona.trainer.engines.row_blocks.RowBlocks`, such as the
Dask engine's distributed rows. Either way every pass over the data (column
moments, Lloyd iterations, final labels) is the map-reduce of
:mod:`edgepersona.trainer.engines.lloyd`; the same seed and data give the same model.

Samples (all drawn by global row index from the seeded generator, so every
engine draws the same rows):

* k-means++ seeds each of the ``n_init`` restarts from a sample of at most
  ``INIT_SAMPLE`` rows; Lloyd's iterations then run on every row.
* Silhouette and Davies-Bouldin scores are computed on a sample of at most
  ``sample_size`` rows (both are quadratic or worse in rows otherwise).
* Stability is the mean adjusted Rand index between the model's labels and
  those of refits on bootstrap resamples of the ``INIT_SAMPLE`` sample.

Choosing k (``n_clusters="auto"``): each k in ``k_range`` is fitted and scored
by the silhouette on the score sample; a k whose smallest persona holds less
than ``min_share`` of users is skipped; the best silhouette wins, ties going
to the smaller k.

k-min: a persona with fewer than ``k_min`` users is never released. The
smallest such persona is dropped and its users go to their nearest remaining
persona (Lloyd iterations restart from the remaining centroids); repeat until
every persona holds at least ``k_min`` users. ``merged_`` lists what happened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import FeatureSpec, InputError
from edgepersona.sdk.protocol.assign import numpy_assign
from edgepersona.sdk.protocol.manifest import AssignerParams
from edgepersona.trainer.engines.cluster_scores import davies_bouldin, silhouette
from edgepersona.trainer.engines.estimator import EstimatorParams
from edgepersona.trainer.engines.lloyd import (
    Moments,
    StatsBatch,
    batch_stats,
    column_moments,
    kmeans_plusplus_init,
    labelled_sums,
    lloyd,
    lloyd_batch,
    nearest,
    sample_index,
)
from edgepersona.trainer.engines.local import LocalBlocks
from edgepersona.trainer.engines.row_blocks import RowBlocks, one_blas_thread
from edgepersona.trainer.errors import NotFittedError

__all__ = ["INIT_SAMPLE", "FitMetrics", "PersonaKMeans", "PersonaProfile", "preprocess"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Progress = Callable[[str], None]
INIT_SAMPLE = 20_000  # rows: k-means++ seeding and the stability bootstrap
MAX_ITER = 300  # Lloyd iterations per run
TOL = 1e-4  # stop when centroids move less than this times the mean feature variance
TIE = 1e-9  # relative gap under which a label is recomputed with the device's formula


def preprocess(spec: FeatureSpec, rows: F64) -> tuple[F64, F64, F64]:
    """Clip and transform rows; return them with per-feature mean and std.

    Args:
        spec: the feature spec.
        rows: raw features, shape (n, d).

    Returns:
        (transformed rows, mean, std with zeros replaced by 1).
    """
    lower = np.array([f.bounds[0] for f in spec.features])
    upper = np.array([f.bounds[1] for f in spec.features])
    out = np.clip(rows, lower, upper)
    mask = np.array([f.transform == "log1p" for f in spec.features])
    out[:, mask] = np.log1p(out[:, mask])
    std = out.std(axis=0)
    return out, out.mean(axis=0), np.where(std > 0, std, 1.0)


@dataclass(frozen=True)
class FitMetrics:
    """Quality of a fitted model (scores on the seeded score sample, inertia on all rows)."""

    silhouette: float | None
    davies_bouldin: float | None
    stability_ari: float | None
    inertia: float
    k_selection: str


class PersonaProfile(NamedTuple):
    """What persona cards are made of (the arguments of ``cards_from_stats``).

    Attributes:
        shares: each persona's share of users, shape (k,).
        z: each persona's mean z-score per feature (transformed, standardised,
            unweighted), shape (k, d).
        values: each persona's mean clipped raw value per feature, shape (k, d).
        population: everyone's mean clipped raw value per feature, shape (d,).
    """

    shares: F64
    z: F64
    values: F64
    population: F64


@dataclass(frozen=True)
class _Totals:
    """Per-persona sums of the final pass; they add across blocks."""

    counts: F64
    cost: float
    transformed: F64
    clipped: F64

    def __add__(self, other: _Totals) -> _Totals:
        return _Totals(self.counts + other.counts, self.cost + other.cost,
                       self.transformed + other.transformed, self.clipped + other.clipped)


@dataclass(frozen=True)
class _Samples:
    """Rows drawn by global index: k-means++ seeds and stability, and scores."""

    init_index: I64
    init_rows: F64
    score_index: I64
    score_rows: F64
    tol: float


class PersonaKMeans(EstimatorParams):
    """Weighted k-means over a feature spec, with automatic k and k-min.

    Follows scikit-learn's estimator conventions: keyword-only parameters stored
    as given, ``get_params``/``set_params`` (so ``sklearn.base.clone`` works),
    ``fit(X)`` returning self, fitted attributes ending in ``_``.

    Args:
        spec: the feature spec (bounds, transforms, weights).
        n_clusters: a number of personas, or ``"auto"``.
        k_range: the candidates for ``"auto"``, inclusive.
        k_min: the fewest users a released persona may hold.
        min_share: with ``"auto"``, skip k whose smallest persona is smaller.
        n_init: k-means restarts per k.
        stability_rounds: bootstrap refits for the stability score (0 to skip).
        sample_size: rows used for silhouette and Davies-Bouldin scores.
        random_state: random seed; None draws one from the OS.
    """

    def __init__(self, *, spec: FeatureSpec, n_clusters: int | Literal["auto"] = "auto",
                 k_range: tuple[int, int] = (3, 8), k_min: int = 10, min_share: float = 0.02,
                 n_init: int = 4, stability_rounds: int = 5, sample_size: int = 2000,
                 random_state: int | None = None) -> None:
        self.spec = spec
        self.n_clusters = n_clusters
        self.k_range = k_range
        self.k_min = k_min
        self.min_share = min_share
        self.n_init = n_init
        self.stability_rounds = stability_rounds
        self.sample_size = sample_size
        self.random_state = random_state

    def fit(self, X: F64 | RowBlocks, y: object = None, *,  # noqa: N803 - scikit-learn's name
            progress: Progress | None = None) -> PersonaKMeans:
        """Fit personas to raw feature rows.

        Args:
            X: raw features, shape (n, number of spec features), finite: a
                numpy array, or rows held by an engine (e.g. the Dask engine's).
            y: ignored.
            progress: called with a short message after each step.

        Returns:
            self, with ``params_``, ``labels_``, ``sizes_``, ``profile_``,
            ``metrics_``, ``merged_`` and ``k_`` set.

        Raises:
            InputError: wrong shape, non-finite values, or too few users for k-min.
        """
        with one_blas_thread():
            return self._fit(self._row_blocks(X), progress or (lambda _msg: None))

    def _fit(self, data: RowBlocks, note: Progress) -> PersonaKMeans:
        """``fit`` on validated rows, BLAS on one thread (its products are small)."""
        rng = np.random.default_rng(self.random_state)
        z, space, samples = self._standardise(data, rng)
        centroids, counts, selection = self._choose_k(z, samples, rng, note)
        centroids, counts, self.merged_ = self._enforce_k_min(z, samples, centroids, counts, rng)
        note(f"k-min {self.k_min}: {len(self.merged_)} persona(s) merged")
        order = np.argsort(-counts, kind="stable")
        self.params_ = self._params(space.center, space.scale, centroids[order])
        self.labels_, totals = data.map_collect(partial(_final_block, self.params_))
        self.k_ = len(centroids)
        self.sizes_ = np.rint(totals.counts).astype(np.int64)
        self.profile_ = self._profile(totals)
        self.metrics_ = self._metrics(samples, totals.cost, selection, rng)
        note(f"fitted {self.k_} personas on {len(self.labels_)} users")
        return self

    def predict(self, X: F64) -> npt.NDArray[np.int64]:  # noqa: N803 - scikit-learn's name
        """Persona index of each raw row, exactly as the device's numpy assigner computes it.

        Args:
            X: raw features, shape (n, d).

        Returns:
            Persona indices.

        Raises:
            NotFittedError: ``fit`` has not been called.
        """
        if not hasattr(self, "params_"):
            raise NotFittedError("PersonaKMeans is not fitted yet; call fit(X) first")
        return numpy_assign(self.params_, self._check_rows(X))[0]

    def _check_rows(self, rows: F64) -> F64:
        """Rows must be a finite (n, d) matrix."""
        matrix = np.asarray(rows, dtype=np.float64)
        width = len(self.spec.features)
        if matrix.ndim != 2 or matrix.shape[1] != width:
            raise InputError(f"rows must have shape (n, {width}), got {matrix.shape}")
        if not np.isfinite(matrix).all():
            raise InputError("rows must be finite (no NaN or inf)")
        return matrix

    def _row_blocks(self, rows: F64 | RowBlocks) -> RowBlocks:
        """Local rows become numpy blocks; an engine's rows only get their width checked."""
        if isinstance(rows, np.ndarray) or not hasattr(rows, "map_collect"):
            return LocalBlocks(self._check_rows(np.asarray(rows)))
        width = len(self.spec.features)
        if len(rows.shape) != 2 or rows.shape[1] != width:
            raise InputError(f"rows must have shape (n, {width}), got {rows.shape}")
        return rows

    def _params(self, center: tuple[float, ...], scale: tuple[float, ...], centroids: F64
                ) -> AssignerParams:
        """The device's parameters for this spec."""
        return AssignerParams(
            lower=tuple(f.bounds[0] for f in self.spec.features),
            upper=tuple(f.bounds[1] for f in self.spec.features),
            log1p=tuple(f.transform == "log1p" for f in self.spec.features),
            center=center, scale=scale, centroids=tuple(tuple(c) for c in centroids.tolist()))

    def _standardise(self, data: RowBlocks, rng: np.random.Generator
                     ) -> tuple[RowBlocks, AssignerParams, _Samples]:
        """Weighted z-rows (one moments pass, one transform pass) and the seeded samples."""
        width = len(self.spec.features)
        placeholder = self._params((0.0,) * width, (1.0,) * width, np.zeros((2, width)))
        moments: Moments = data.map_reduce(partial(_block_moments, placeholder))
        if moments.nonfinite:
            raise InputError("rows must be finite (no NaN or inf)")
        std = np.where(moments.std > 0, moments.std, 1.0)
        factor = np.sqrt(np.array(self.spec.normalised_weights())) / std
        space = self._params(tuple(moments.mean.tolist()), tuple(factor.tolist()), np.zeros((2, width)))
        z = data.map_blocks(partial(_standardise_block, space))
        n = len(z)
        init_index = sample_index(n, INIT_SAMPLE, rng)
        score_index = sample_index(n, self.sample_size, rng)
        tol = TOL * float(np.mean((moments.std * factor) ** 2))
        return z, space, _Samples(init_index, z.take(init_index), score_index,
                                  z.take(score_index), tol)

    def _kmeans(self, z: RowBlocks, seeds: F64, ks: Sequence[int], tol: float,
                rng: np.random.Generator) -> list[F64]:
        """For each k, the lowest-cost of ``n_init`` k-means++ restarts (all runs in lockstep)."""
        restarts = max(1, self.n_init)
        inits = [kmeans_plusplus_init(seeds, k, int(rng.integers(2**31 - 1)))
                 for k in ks for _ in range(restarts)]
        runs = lloyd_batch(z.map_reduce, inits, max_iter=MAX_ITER, tol=tol)
        best = []
        for start in range(0, len(runs), restarts):
            group = runs[start:start + restarts]
            best.append(min(group, key=lambda run: run.cost).centroids)
        return best

    def _choose_k(self, z: RowBlocks, samples: _Samples, rng: np.random.Generator, note: Progress
                  ) -> tuple[F64, F64, str]:
        """Fit the requested k, or pick k by silhouette under the minimum share."""
        n = len(z)
        if self.n_clusters != "auto":
            k = int(self.n_clusters)
            if not 2 <= k <= n:
                raise InputError(f"k must be between 2 and the number of users ({n}), got {k}")
            note(f"fitting k={k}")
            centroids = self._kmeans(z, samples.init_rows, [k], samples.tol, rng)[0]
            return centroids, _counts(z, [centroids])[0], f"fixed k={k}"
        low, high = self.k_range
        ks = list(range(max(2, low), min(high, n - 1) + 1))
        note(f"fitting k={ks[0]}..{ks[-1]}" if ks else "no k to fit")
        fitted = self._kmeans(z, samples.init_rows, ks, samples.tol, rng)
        best: tuple[float, F64, F64] | None = None
        for k, centroids, counts in zip(ks, fitted, _counts(z, fitted), strict=True):
            score = silhouette(samples.score_rows, nearest(samples.score_rows, centroids)[0])
            note(f"k={k}: silhouette {score:.3f}, smallest share {counts.min() / n:.1%}")
            if counts.min() / n >= self.min_share and (best is None or score > best[0]):
                best = (score, centroids, counts)
        if best is None:
            raise InputError(f"no k in {self.k_range} gives every persona at least"
                             f" {self.min_share:.0%} of users; lower --min-share or set --k")
        return best[1], best[2], (
            f"auto: best silhouette in k={low}..{high} on a {len(samples.score_index)}-row"
            f" sample with every persona >= {self.min_share:.0%} of users")

    def _enforce_k_min(self, z: RowBlocks, samples: _Samples, centroids: F64, counts: F64,
                       rng: np.random.Generator) -> tuple[F64, F64, list[str]]:
        """Drop personas below k-min, re-running Lloyd from the remaining centroids."""
        merged: list[str] = []
        while True:
            small = int(np.argmin(counts))
            if counts[small] >= self.k_min:
                return centroids, counts, merged
            if len(centroids) <= 2:
                raise InputError(f"fewer than {self.k_min} users in a persona even at k=2;"
                                 f" need more users or a lower --k-min")
            merged.append(f"a persona of {int(counts[small])} users (< k-min {self.k_min})"
                          " merged into its nearest neighbours")
            centroids = lloyd(z.map_reduce, np.delete(centroids, small, 0), max_iter=MAX_ITER,
                              tol=samples.tol).centroids
            counts = _counts(z, [centroids])[0]

    def _profile(self, totals: _Totals) -> PersonaProfile:
        """Card statistics from the final pass's per-persona sums."""
        n = totals.counts.sum()
        filled = np.maximum(totals.counts, 1.0)[:, None]
        population = totals.clipped.sum(axis=0) / n
        center, scale = np.asarray(self.params_.center), np.asarray(self.params_.scale)
        std = np.sqrt(np.array(self.spec.normalised_weights())) / scale
        z = np.where(totals.counts[:, None] > 0, (totals.transformed / filled - center) / std, 0.0)
        values = np.where(totals.counts[:, None] > 0, totals.clipped / filled, population)
        return PersonaProfile(totals.counts / n, z, values, population)

    def _metrics(self, samples: _Samples, inertia: float, selection: str,
                 rng: np.random.Generator) -> FitMetrics:
        """Silhouette and Davies-Bouldin on the score sample, inertia, bootstrap stability."""
        from sklearn.metrics import adjusted_rand_score

        labels = self.labels_[samples.score_index]
        seeds, seed_labels = samples.init_rows, self.labels_[samples.init_index]
        aris = []
        for _ in range(self.stability_rounds):
            boot = seeds[rng.integers(0, len(seeds), size=len(seeds))]
            refit = self._kmeans(LocalBlocks(boot, threads=1), boot, [self.k_], samples.tol, rng)[0]
            aris.append(adjusted_rand_score(seed_labels, nearest(seeds, refit)[0]))
        return FitMetrics(
            silhouette=silhouette(samples.score_rows, labels),
            davies_bouldin=davies_bouldin(samples.score_rows, labels),
            stability_ari=float(np.mean(aris)) if aris else None,
            inertia=inertia, k_selection=selection)


def _clip(space: AssignerParams, rows: F64) -> F64:
    """Rows clipped to the bounds (as ``np.clip``, which is several times slower with array bounds)."""
    out: F64 = np.maximum(rows, np.asarray(space.lower))
    np.minimum(out, np.asarray(space.upper), out=out)
    return out


def _transform(space: AssignerParams, rows: F64) -> F64:
    """``log1p?(clip(x))``: the device's ``model_space``, without its slow column gather.

    Any last-bit difference from the device could only flip a near-tie, and
    :func:`_final_block` recomputes near-ties with the device's own code.
    """
    out = _clip(space, rows)
    np.log1p(out, out=out, where=np.asarray(space.log1p, dtype=bool))
    return out


def _block_moments(space: AssignerParams, rows: F64) -> Moments:
    """Column moments of a block's transformed rows, and its count of non-finite cells."""
    moments = column_moments(_transform(space, rows))
    bad = int(rows.size - np.count_nonzero(np.isfinite(rows)))
    return Moments(moments.n, moments.mean, moments.m2, bad)


def _standardise_block(space: AssignerParams, rows: F64) -> F64:
    """The device's z for a block: ``(log1p?(clip(x)) - center) * scale``."""
    z = _transform(space, rows)
    z -= np.asarray(space.center)
    z *= np.asarray(space.scale)
    return z


def _final_block(params: AssignerParams, rows: F64) -> tuple[I64, _Totals]:
    """Labels of a block of raw rows as the device computes them, with per-persona sums.

    Labels come from the fast expansion; a row whose two nearest centroids are
    within a relative ``TIE`` (where rounding could flip the order) is
    relabelled with the device's own formula, so ``labels_ == predict(rows)``.
    """
    transformed = _transform(params, rows)
    z = (transformed - np.asarray(params.center)) * np.asarray(params.scale)
    centroids = np.asarray(params.centroids)
    labels, squared, gap = nearest(z, centroids)
    reach = np.einsum("ij,ij->i", z, z) + float((centroids**2).sum(axis=1).max())
    close = gap <= TIE * reach
    if close.any():
        labels[close] = numpy_assign(params, rows[close])[0]
    k = len(centroids)
    clipped = _clip(params, rows)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return labels, _Totals(counts, float(squared.sum()), labelled_sums(labels, k, transformed),
                           labelled_sums(labels, k, clipped))


def _counts(z: RowBlocks, centroids: Sequence[F64]) -> list[F64]:
    """Rows nearest to each centroid, for several centroid sets (one pass)."""
    batch: StatsBatch = z.map_reduce(partial(batch_stats, centroids=tuple(centroids)))
    return [stats.counts for stats in batch.items]

