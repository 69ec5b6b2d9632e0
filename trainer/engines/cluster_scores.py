"""Silhouette and Davies-Bouldin scores of a labelled sample, in numpy, memory-bounded.

The fit scores candidate k and the final model on a seeded sample of rows
(2,000 by default), several times per fit; scikit-learn's versions spend most
of their time there on input checks and chunk bookkeeping. These follow the
same definitions (and agree with scikit-learn to rounding, see the tests):

* silhouette: for each row, ``a`` is its mean distance to the other members
  of its cluster, ``b`` the smallest mean distance to another cluster's
  members, ``s = (b - a) / max(a, b)`` (0 for a row alone in its cluster);
  the score is the mean of ``s``.
* Davies-Bouldin: with ``S_i`` the mean distance of cluster i's members to its
  centroid and ``M_ij`` the distance between centroids, the mean over i of
  ``max_j (S_i + S_j) / M_ij``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["davies_bouldin", "silhouette"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
ROWS = 256  # rows and columns of each block of the distance matrix


def _distances(a: F64, b: F64, b_norms: F64) -> F64:
    """Euclidean distances between rows of ``a`` and ``b`` (clamped before the root)."""
    out: F64 = a @ b.T
    out *= -2.0
    out += (a**2).sum(axis=1)[:, None]
    out += b_norms[None, :]
    np.maximum(out, 0.0, out=out)
    return np.sqrt(out, out=out)


def _cluster_distance_sums(z: F64, onehot: F64) -> F64:
    """Per row, the summed distance to the members of each cluster, shape (n, k).

    The distance matrix is symmetric, so only blocks on or above the diagonal
    are computed (each serves both its rows and its columns), ``ROWS`` x ``ROWS``
    at a time.
    """
    norms = (z**2).sum(axis=1)
    totals = np.zeros(onehot.shape)
    starts = range(0, len(z), ROWS)
    for i in starts:
        rows = slice(i, i + ROWS)
        for j in (s for s in starts if s >= i):
            cols = slice(j, j + ROWS)
            block = _distances(z[rows], z[cols], norms[cols])
            if i == j:  # a row's distance to itself is 0, not rounding noise
                np.fill_diagonal(block, 0.0)
            totals[rows] += block @ onehot[cols]
            if j > i:
                totals[cols] += block.T @ onehot[rows]
    return totals


def silhouette(z: F64, labels: I64) -> float:
    """Mean silhouette coefficient.

    Args:
        z: rows, shape (n, d).
        labels: cluster of each row.

    Returns:
        The score in [-1, 1], or -1.0 when fewer than two clusters are present
        (undefined).
    """
    clusters, codes = np.unique(labels, return_inverse=True)
    if len(clusters) < 2:
        return -1.0
    onehot = (codes[:, None] == np.arange(len(clusters))[None, :]).astype(np.float64)
    sizes = onehot.sum(axis=0)
    totals = _cluster_distance_sums(z, onehot)
    rows, own_size = np.arange(len(z)), sizes[codes]
    a = totals[rows, codes] / np.maximum(own_size - 1, 1)
    totals[rows, codes] = np.inf
    b = (totals / sizes[None, :]).min(axis=1)
    s = (b - a) / np.maximum(np.maximum(a, b), np.finfo(np.float64).tiny)
    return float(np.where(own_size > 1, s, 0.0).mean())


def davies_bouldin(z: F64, labels: I64) -> float | None:
    """Davies-Bouldin index (lower is better).

    Args:
        z: rows, shape (n, d).
        labels: cluster of each row.

    Returns:
        The index, or None when fewer than two clusters are present.
    """
    clusters, codes = np.unique(labels, return_inverse=True)
    if len(clusters) < 2:
        return None
    k = len(clusters)
    sizes = np.bincount(codes, minlength=k).astype(np.float64)
    centroids = np.stack([np.bincount(codes, weights=z[:, j], minlength=k) for j in range(z.shape[1])],
                         axis=1) / sizes[:, None]
    spread = np.bincount(codes, weights=np.sqrt(((z - centroids[codes]) ** 2).sum(axis=1)),
                         minlength=k) / sizes
    between = _distances(centroids, centroids, (centroids**2).sum(axis=1))
    np.fill_diagonal(between, np.inf)
    ratio = (spread[:, None] + spread[None, :]) / np.where(between > 0, between, np.inf)
    return float(ratio.max(axis=1).mean())
