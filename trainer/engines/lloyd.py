"""One Lloyd core for every engine: k-means as a map-reduce of per-persona counts and sums.

An iteration sends every row to its nearest centroid and adds up, per
centroid, how many rows it got (``counts``), their sum (``sums``) and their
squared distances (``cost``). All three add across any split of the rows into
blocks, so an engine only applies :func:`partial_stats` to each of its blocks
and adds the results (:class:`ClusterStats` supports ``+``); the driver
:func:`lloyd` turns the totals into new centroids, ``sums / counts``. The same
functions run over numpy blocks in this process
(:class:`edgepersona.trainer.engines.local.LocalBlocks`) and
over dask.array blocks on a cluster (:mod:`edgepersona.trainer.engines.dask_engine`):
the maths exists once.

Memory stays bounded: distances are computed ``CHUNK`` rows at a time as
``|z|² - 2 z·c + |c|²`` (a (rows, k) matrix, never (rows, k, d)); labels are
the argmin, per-row costs are clamped at zero against rounding.

Initial centroids come from k-means++ (scikit-learn's ``kmeans_plusplus``) on a
seeded sample of rows drawn by global row index (:func:`sample_index`), so
every engine starts from the same centroids for the same seed and data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt

from edgepersona.trainer.engines.row_blocks import MapReduce

__all__ = [
    "CHUNK",
    "ClusterStats",
    "LloydResult",
    "Moments",
    "StatsBatch",
    "batch_stats",
    "column_moments",
    "kmeans_plusplus_init",
    "labelled_sums",
    "lloyd",
    "lloyd_batch",
    "nearest",
    "partial_stats",
    "sample_index",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
CHUNK = 4_096  # rows per distance computation: bounds the (rows, k) temporaries


@dataclass(frozen=True)
class ClusterStats:
    """Per-centroid row counts and row sums, and the total squared distance.

    Attributes:
        counts: rows nearest to each centroid, shape (k,).
        sums: sum of those rows, shape (k, d).
        cost: sum over rows of the squared distance to the nearest centroid.
    """

    counts: F64
    sums: F64
    cost: float

    def __add__(self, other: ClusterStats) -> ClusterStats:
        return ClusterStats(self.counts + other.counts, self.sums + other.sums, self.cost + other.cost)


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations per column (Chan et al.'s parallel merge).

    Attributes:
        n: rows seen.
        mean: column means, shape (d,).
        m2: column sums of squared deviations from the mean, shape (d,).
        nonfinite: NaN or infinite cells seen in the raw rows.
    """

    n: int
    mean: F64
    m2: F64
    nonfinite: int = 0

    def __add__(self, other: Moments) -> Moments:
        if other.n == 0 or self.n == 0:
            base = self if other.n == 0 else other
            return Moments(base.n, base.mean, base.m2, self.nonfinite + other.nonfinite)
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        return Moments(n, mean, m2, self.nonfinite + other.nonfinite)

    @property
    def std(self) -> F64:
        """Population standard deviation per column (0 for a constant column)."""
        return np.sqrt(np.maximum(self.m2, 0.0) / max(self.n, 1))


def column_moments(block: F64) -> Moments:
    """Moments of one block of rows.

    Args:
        block: rows, shape (m, d).

    Returns:
        Its count, column means and sums of squared deviations.
    """
    if len(block) == 0:
        return Moments(0, np.zeros(block.shape[1]), np.zeros(block.shape[1]))
    mean = block.mean(axis=0)
    return Moments(len(block), mean, ((block - mean) ** 2).sum(axis=0))


class _Workspace:
    """Buffers for one chunk of rows, reused so no chunk allocates (fresh pages cost more than maths)."""

    def __init__(self, centroids: F64, rows: int) -> None:
        k = len(centroids)
        self.centroids = centroids
        self.half_norms = 0.5 * (centroids**2).sum(axis=1)
        self.member_ids = np.arange(k)[:, None]
        self.scores = np.empty((k, rows))
        self.onehot = np.empty((k, rows))
        self.best = np.empty(rows)
        self.norms = np.empty(rows)
        self.equal = np.empty(rows, dtype=bool)
        self.labels = np.empty(rows, dtype=np.int64)

    def _best(self, block: F64) -> tuple[F64, F64]:
        """Halved scores ``|c|²/2 - z·c`` (shape (k, m)) and each row's smallest one."""
        m = len(block)
        scores, best = self.scores[:, :m], self.best[:m]
        np.matmul(self.centroids, block.T, out=scores)
        np.subtract(self.half_norms[:, None], scores, out=scores)
        scores.min(axis=0, out=best)
        return scores, best

    def _labels(self, scores: F64, best: F64) -> I64:
        """Index of each row's smallest score; ties go to the lowest index (as argmin)."""
        m = len(best)
        labels, equal = self.labels[:m], self.equal[:m]
        labels.fill(0)
        for j in range(len(scores) - 1, -1, -1):  # descending: the lowest tied index is written last
            np.equal(scores[j], best, out=equal)
            np.copyto(labels, j, where=equal)
        return labels

    def assign(self, block: F64) -> tuple[I64, F64, F64]:
        """Labels, halved scores and halved best score of a chunk."""
        scores, best = self._best(block)
        return self._labels(scores, best), scores, best

    def members(self, block: F64) -> tuple[F64, F64, F64]:
        """One-hot membership (shape (k, m)), its row counts, and the halved best scores."""
        scores, best = self._best(block)
        onehot = self.onehot[:, :len(block)]
        np.equal(scores, best, out=onehot)
        counts = onehot.sum(axis=1)
        if counts.sum() != len(block):  # a row tied between centroids: it goes to the lowest index
            np.equal(self._labels(scores, best)[None, :], self.member_ids, out=onehot)
            counts = onehot.sum(axis=1)
        return onehot, counts, best

    def squared(self, block: F64, best: F64) -> F64:
        """Squared distance of each row to its nearest centroid, clamped at 0 against rounding."""
        norms = self.norms[:len(block)]
        np.einsum("ij,ij->i", block, block, out=norms)
        norms += 2.0 * best
        return np.maximum(norms, 0.0, out=norms)


def _chunks(z: F64) -> Iterator[tuple[int, F64]]:
    """(start, rows) of consecutive chunks of at most CHUNK rows."""
    for start in range(0, len(z), CHUNK):
        yield start, z[start:start + CHUNK]


def nearest(z: F64, centroids: F64) -> tuple[I64, F64, F64]:
    """Nearest centroid of each row, the squared distance to it, and the gap to the runner-up.

    Args:
        z: rows, shape (n, d).
        centroids: shape (k, d), k >= 2.

    Returns:
        (labels, squared distances clamped at 0, second-smallest minus smallest
        squared distance), each of length n. Ties go to the lowest index.
    """
    work = _Workspace(centroids, min(len(z), CHUNK))
    labels = np.empty(len(z), dtype=np.int64)
    squared, gap = np.empty(len(z)), np.empty(len(z))
    for start, block in _chunks(z):
        rows = slice(start, start + len(block))
        labels[rows], scores, best = work.assign(block)
        squared[rows] = work.squared(block, best)
        scores[labels[rows], np.arange(len(block))] = np.inf
        gap[rows] = 2.0 * (scores.min(axis=0) - best)
    return labels, squared, gap


def labelled_sums(labels: I64, k: int, values: F64) -> F64:
    """Sum of the rows of ``values`` per label.

    Args:
        labels: label of each row, in ``0..k-1``.
        k: number of labels.
        values: rows, shape (n, d).

    Returns:
        Shape (k, d).
    """
    sums = np.zeros((k, values.shape[1]))
    ids = np.arange(k)[:, None]
    for start, block in _chunks(values):
        sums += (labels[None, start:start + len(block)] == ids).astype(np.float64) @ block
    return sums


def partial_stats(z: F64, centroids: F64) -> ClusterStats:
    """One block's share of a Lloyd iteration.

    Args:
        z: a block of rows, shape (m, d).
        centroids: the current centroids, shape (k, d).

    Returns:
        Counts and sums of the rows nearest to each centroid, and their cost.
    """
    return batch_stats(z, (centroids,)).items[0]


@dataclass(frozen=True)
class StatsBatch:
    """:class:`ClusterStats` of several centroid sets over the same rows; adds item by item."""

    items: tuple[ClusterStats, ...]

    def __add__(self, other: StatsBatch) -> StatsBatch:
        return StatsBatch(tuple(a + b for a, b in zip(self.items, other.items, strict=True)))


def batch_stats(z: F64, centroids: Sequence[F64]) -> StatsBatch:
    """:func:`partial_stats` for several centroid sets in one pass over a block.

    Restarts and candidate values of k advance together, so an engine makes
    one pass (one round trip to a cluster) per iteration, not one per run.

    Args:
        z: a block of rows, shape (m, d).
        centroids: centroid sets, each of shape (k_i, d).

    Returns:
        One :class:`ClusterStats` per set, in order.
    """
    work = [_Workspace(c, min(len(z), CHUNK)) for c in centroids]
    counts = [np.zeros(len(c)) for c in centroids]
    sums = [np.zeros(c.shape) for c in centroids]
    cost = [0.0] * len(centroids)
    for _, block in _chunks(z):
        for i, space in enumerate(work):
            onehot, chunk_counts, best = space.members(block)
            counts[i] += chunk_counts
            sums[i] += onehot @ block
            cost[i] += float(space.squared(block, best).sum())
    return StatsBatch(tuple(ClusterStats(*item) for item in zip(counts, sums, cost, strict=True)))


@dataclass(frozen=True)
class LloydResult:
    """Where Lloyd's algorithm stopped.

    Attributes:
        centroids: the final centroids (means of the last assignment), shape (k, d).
        counts: rows per centroid in the last assignment.
        cost: squared distances of the last assignment to the final centroids.
        n_iter: iterations run.
        converged: whether the centroids moved less than ``tol``.
    """

    centroids: F64
    counts: F64
    cost: float
    n_iter: int
    converged: bool


def lloyd(map_reduce: MapReduce, init: F64, *, max_iter: int = 300, tol: float = 0.0) -> LloydResult:
    """Lloyd's algorithm over blocks of rows.

    A centroid that loses all its rows stays where it is (k-min merging removes it).

    Args:
        map_reduce: applies a function to every block and adds the results.
        init: the initial centroids, shape (k, d).
        max_iter: the most iterations to run.
        tol: stop once the summed squared centroid shift is at most this.

    Returns:
        The centroids and the last assignment's counts and cost. That cost is
        exact for the returned centroids: moving each centroid to the mean of
        its rows lowers the cost by ``counts · |shift|²``.

    Raises:
        ValueError: ``max_iter`` is below 1.
    """
    return lloyd_batch(map_reduce, [init], max_iter=max_iter, tol=tol)[0]


def lloyd_batch(map_reduce: MapReduce, inits: Sequence[F64], *, max_iter: int = 300,
                tol: float = 0.0) -> list[LloydResult]:
    """Several runs of :func:`lloyd` in lockstep: one map-reduce per iteration for all of them.

    Each run stops on its own; the others go on. Results equal separate runs.

    Args:
        map_reduce: applies a function to every block and adds the results.
        inits: initial centroids of each run, shapes (k_i, d).
        max_iter: the most iterations of each run.
        tol: a run stops once its summed squared centroid shift is at most this.

    Returns:
        One result per run, in order.

    Raises:
        ValueError: ``max_iter`` is below 1.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    current = [np.array(init, dtype=np.float64) for init in inits]
    done: dict[int, LloydResult] = {}
    for iteration in range(1, max_iter + 1):
        active = [i for i in range(len(current)) if i not in done]
        if not active:
            break
        batch: StatsBatch = map_reduce(partial(batch_stats, centroids=tuple(current[i] for i in active)))
        for i, stats in zip(active, batch.items, strict=True):
            filled = stats.counts > 0
            updated = current[i].copy()
            updated[filled] = stats.sums[filled] / stats.counts[filled, None]
            moved = ((updated - current[i]) ** 2).sum(axis=1)
            current[i] = updated
            if float(moved.sum()) <= tol or iteration == max_iter:
                cost = max(stats.cost - float((stats.counts * moved).sum()), 0.0)
                done[i] = LloydResult(updated, stats.counts, cost, iteration, float(moved.sum()) <= tol)
    return [done[i] for i in range(len(current))]


def sample_index(n: int, size: int, rng: np.random.Generator) -> I64:
    """A seeded sample of global row indices, sorted (all rows when there are few).

    Args:
        n: number of rows.
        size: the most rows to draw.
        rng: the random generator (only ``n`` and ``size`` decide what it draws).

    Returns:
        Sorted row indices.
    """
    if n <= size:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def kmeans_plusplus_init(sample: F64, k: int, seed: int) -> F64:
    """k-means++ seeding (scikit-learn's) on a sample of rows.

    Args:
        sample: rows, shape (m, d), m >= k.
        k: number of centroids.
        seed: seed for the draw.

    Returns:
        Initial centroids, shape (k, d).
    """
    from sklearn.cluster import kmeans_plusplus

    centres, _ = kmeans_plusplus(sample, k, random_state=seed)
    return np.asarray(centres, dtype=np.float64)
