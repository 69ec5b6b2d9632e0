"""``edgepersona train --epsilon-sweep``: what each ε would cost in quality, before any release.

The preview spends no budget because it never touches the real rows: for each
ε it fits DP k-means twice on synthetic data with the same shape (users,
features, k) inside the spec's declared bounds, where the true clustering is
known, and reports the k-means cost relative to the non-private optimum and
the stability of the result (adjusted Rand index between two private fits).
Real data is usually less separated than the synthetic clusters, so read the
figures as a lower bound on the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgepersona.sdk import FeatureSpec, InputError
from edgepersona.trainer.privacy.dp_kmeans import DPKMeans, declared_scaling

__all__ = ["SweepPoint", "epsilon_sweep"]


@dataclass(frozen=True)
class SweepPoint:
    """Quality at one ε: cost ratio vs the non-private optimum, and stability."""

    epsilon: float
    cost_ratio: float
    stability_ari: float


def _cost(x: np.ndarray, centers: np.ndarray) -> float:
    """k-means cost (sum of squared distances to the nearest center)."""
    d2 = (x**2).sum(1)[:, None] - 2 * x @ centers.T + (centers**2).sum(1)[None, :]
    return float(np.maximum(d2.min(axis=1), 0.0).sum())


def epsilon_sweep(spec: FeatureSpec, *, users: int, k: int, epsilons: list[float], delta: float,
                  seed: int = 0) -> list[SweepPoint]:
    """Preview DP quality per ε on synthetic data shaped like the real job.

    Args:
        spec: the feature spec (its declared bounds define the space).
        users: number of users the real fit would see.
        k: number of personas.
        epsilons: the ε values to try.
        delta: the δ of each release.
        seed: random seed of the synthetic data and the fits.

    Returns:
        One point per ε.

    Raises:
        InputError: fewer users than personas, or a non-positive ε.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    if users < 2 * k or any(e <= 0 for e in epsilons):
        raise InputError("the sweep needs users >= 2k and every ε > 0")
    lower, upper = declared_scaling(spec).bounds
    rng = np.random.default_rng(seed)
    centers = lower + (upper - lower) * rng.uniform(0.2, 0.8, size=(k, len(lower)))
    truth = rng.integers(0, k, size=users)
    x = np.clip(centers[truth] + rng.normal(0, 0.05, size=(users, len(lower))) * (upper - lower),
                lower, upper)
    optimum = _cost(x, KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x).cluster_centers_)
    points = []
    for epsilon in epsilons:
        fits = [DPKMeans(n_clusters=k, epsilon=epsilon, delta=delta, bounds=(lower, upper),
                         random_state=seed + r).fit(x) for r in (1, 2)]
        labels = [f.predict(x) for f in fits]
        points.append(SweepPoint(epsilon, _cost(x, fits[0].cluster_centers_) / optimum,
                                 float(adjusted_rand_score(labels[0], labels[1]))))
    return points
