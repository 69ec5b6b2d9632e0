"""Weighted k-means personas, following scikit-learn's estimator conventions.

Rows are clipped to the spec's bounds, transformed (log1p where the spec says
so), standardised and multiplied by the square root of each feature's
normalised clustering weight, so squared Euclidean distance is the weighted
sum ``Σ_j w_j (Δz_j)²``. The fitted parameters are exactly what the device
runs (:class:`edgepersona.sdk._manifest.AssignerParams`), and :meth:`predict`
is the device's numpy assigner, so trainer and device agree by construction.

Choosing k (``n_clusters="auto"``): each k in ``k_range`` is fitted and scored
by the silhouette on a seeded sample of at most ``sample_size`` rows; a k
whose smallest persona holds less than ``min_share`` of users is skipped; the
best silhouette wins, ties going to the smaller k.

k-min: a persona with fewer than ``k_min`` users is never released. The
smallest such persona is dropped and its users go to their nearest remaining
persona (Lloyd iterations restart from the remaining centroids); repeat until
every persona holds at least ``k_min`` users. ``merged_`` lists what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import FeatureSpec, InputError, NotFittedError
from edgepersona.sdk._assign import numpy_assign
from edgepersona.sdk._manifest import AssignerParams

__all__ = ["FitMetrics", "PersonaKMeans", "preprocess"]

F64 = npt.NDArray[np.float64]
Progress = Callable[[str], None]


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
    """Quality of a fitted model (all on the training rows)."""

    silhouette: float | None
    davies_bouldin: float | None
    stability_ari: float | None
    inertia: float
    k_selection: str


class PersonaKMeans:
    """Weighted k-means over a feature spec, with automatic k and k-min.

    Args:
        spec: the feature spec (bounds, transforms, weights).
        n_clusters: a number of personas, or ``"auto"``.
        k_range: the candidates for ``"auto"``, inclusive.
        k_min: the fewest users a released persona may hold.
        min_share: with ``"auto"``, skip k whose smallest persona is smaller.
        n_init: k-means restarts per k.
        stability_rounds: bootstrap refits for the stability score (0 to skip).
        sample_size: rows used for silhouette scores.
        seed: random seed; None draws one from the OS.
    """

    def __init__(self, spec: FeatureSpec, *, n_clusters: int | Literal["auto"] = "auto",
                 k_range: tuple[int, int] = (3, 8), k_min: int = 10, min_share: float = 0.02,
                 n_init: int = 4, stability_rounds: int = 5, sample_size: int = 2000,
                 seed: int | None = None) -> None:
        self.spec = spec
        self.n_clusters = n_clusters
        self.k_range = k_range
        self.k_min = k_min
        self.min_share = min_share
        self.n_init = n_init
        self.stability_rounds = stability_rounds
        self.sample_size = sample_size
        self.seed = seed

    def fit(self, rows: F64, progress: Progress | None = None) -> PersonaKMeans:
        """Fit personas to raw feature rows.

        Args:
            rows: raw features, shape (n, number of spec features), finite.
            progress: called with a short message after each step.

        Returns:
            self, with ``params_``, ``labels_``, ``sizes_``, ``metrics_``,
            ``merged_`` and ``k_`` set.

        Raises:
            InputError: wrong shape, non-finite values, or too few users for k-min.
        """
        note = progress or (lambda _msg: None)
        rows = self._check_rows(rows)
        rng = np.random.default_rng(self.seed)
        transformed, mean, std = preprocess(self.spec, rows)
        factor = np.sqrt(np.array(self.spec.normalised_weights())) / std
        z = (transformed - mean) * factor
        centroids, selection = self._choose_k(z, rng, note)
        centroids, self.merged_ = self._enforce_k_min(z, centroids, rng)
        note(f"k-min {self.k_min}: {len(self.merged_)} persona(s) merged")
        labels = _nearest(z, centroids)
        order = np.argsort(-np.bincount(labels, minlength=len(centroids)), kind="stable")
        centroids = centroids[order]
        self.params_ = AssignerParams(
            lower=tuple(f.bounds[0] for f in self.spec.features),
            upper=tuple(f.bounds[1] for f in self.spec.features),
            log1p=tuple(f.transform == "log1p" for f in self.spec.features),
            center=tuple(mean.tolist()), scale=tuple(factor.tolist()),
            centroids=tuple(tuple(c) for c in centroids.tolist()))
        self.labels_ = self.predict(rows)
        self.k_ = len(centroids)
        self.sizes_ = np.bincount(self.labels_, minlength=self.k_)
        self.metrics_ = self._metrics(z, centroids, selection, rng)
        note(f"fitted {self.k_} personas on {len(rows)} users")
        return self

    def predict(self, rows: F64) -> npt.NDArray[np.int64]:
        """Persona index of each raw row, exactly as the device's numpy assigner computes it.

        Args:
            rows: raw features, shape (n, d).

        Returns:
            Persona indices.

        Raises:
            NotFittedError: ``fit`` has not been called.
        """
        if not hasattr(self, "params_"):
            raise NotFittedError("PersonaKMeans is not fitted yet; call fit(rows) first")
        return numpy_assign(self.params_, self._check_rows(rows))[0]

    def _check_rows(self, rows: F64) -> F64:
        """Rows must be a finite (n, d) matrix."""
        matrix = np.asarray(rows, dtype=np.float64)
        width = len(self.spec.features)
        if matrix.ndim != 2 or matrix.shape[1] != width:
            raise InputError(f"rows must have shape (n, {width}), got {matrix.shape}")
        if not np.isfinite(matrix).all():
            raise InputError("rows must be finite (no NaN or inf)")
        return matrix

    def _kmeans(self, z: F64, k: int, rng: np.random.Generator, init: F64 | None = None) -> F64:
        """Lloyd's algorithm via scikit-learn; return centroids."""
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=k, n_init=1 if init is not None else self.n_init,
                       init=init if init is not None else "k-means++",
                       random_state=int(rng.integers(2**31 - 1)))
        return np.asarray(model.fit(z).cluster_centers_, dtype=np.float64)

    def _choose_k(self, z: F64, rng: np.random.Generator, note: Progress) -> tuple[F64, str]:
        """Fit the requested k, or pick k by silhouette under the minimum share."""
        n = len(z)
        if self.n_clusters != "auto":
            k = int(self.n_clusters)
            if not 2 <= k <= n:
                raise InputError(f"k must be between 2 and the number of users ({n}), got {k}")
            note(f"fitting k={k}")
            return self._kmeans(z, k, rng), f"fixed k={k}"
        low, high = self.k_range
        sample = _sample(n, self.sample_size, rng)
        best: tuple[float, int, F64] | None = None
        for k in range(max(2, low), min(high, n - 1) + 1):
            centroids = self._kmeans(z, k, rng)
            labels = _nearest(z, centroids)
            share = np.bincount(labels, minlength=k).min() / n
            score = _silhouette(z[sample], labels[sample])
            note(f"k={k}: silhouette {score:.3f}, smallest share {share:.1%}")
            if share >= self.min_share and (best is None or score > best[0]):
                best = (score, k, centroids)
        if best is None:
            raise InputError(f"no k in {self.k_range} gives every persona at least"
                             f" {self.min_share:.0%} of users; lower --min-share or set --k")
        return best[2], (f"auto: best silhouette in k={low}..{high} on a {len(sample)}-row"
                         f" sample with every persona >= {self.min_share:.0%} of users")

    def _enforce_k_min(self, z: F64, centroids: F64, rng: np.random.Generator
                       ) -> tuple[F64, list[str]]:
        """Drop personas below k-min, re-running Lloyd from the remaining centroids."""
        merged: list[str] = []
        while True:
            sizes = np.bincount(_nearest(z, centroids), minlength=len(centroids))
            small = int(np.argmin(sizes))
            if sizes[small] >= self.k_min:
                return centroids, merged
            if len(centroids) <= 2:
                raise InputError(f"fewer than {self.k_min} users in a persona even at k=2;"
                                 f" need more users or a lower --k-min")
            merged.append(f"a persona of {int(sizes[small])} users (< k-min {self.k_min})"
                          " merged into its nearest neighbours")
            centroids = self._kmeans(z, len(centroids) - 1, rng, np.delete(centroids, small, 0))

    def _metrics(self, z: F64, centroids: F64, selection: str, rng: np.random.Generator
                 ) -> FitMetrics:
        """Silhouette, Davies-Bouldin, inertia and bootstrap stability."""
        from sklearn.metrics import adjusted_rand_score, davies_bouldin_score

        labels = _nearest(z, centroids)
        sample = _sample(len(z), self.sample_size, rng)
        inertia = float(((z - centroids[labels]) ** 2).sum())
        aris = []
        for _ in range(self.stability_rounds):
            boot = rng.integers(0, len(z), size=len(z))
            refit = self._kmeans(z[boot], len(centroids), rng)
            aris.append(adjusted_rand_score(labels, _nearest(z, refit)))
        return FitMetrics(
            silhouette=_silhouette(z[sample], labels[sample]),
            davies_bouldin=float(davies_bouldin_score(z, labels)),
            stability_ari=float(np.mean(aris)) if aris else None,
            inertia=inertia, k_selection=selection)


def _nearest(z: F64, centroids: F64) -> npt.NDArray[np.int64]:
    """Index of the nearest centroid for each row."""
    # |z|^2 is the same for every centroid, so it does not change the argmin.
    scores = (centroids**2).sum(axis=1)[None, :] - 2.0 * (z @ centroids.T)
    return np.asarray(np.argmin(scores, axis=1), dtype=np.int64)


def _sample(n: int, size: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """A seeded sample of row indices (all rows when there are few)."""
    return np.arange(n) if n <= size else np.sort(rng.choice(n, size=size, replace=False))


def _silhouette(z: F64, labels: npt.NDArray[np.int64]) -> float:
    """Silhouette score, or -1 when it is undefined (a single label)."""
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2:
        return -1.0
    return float(silhouette_score(z, labels))
