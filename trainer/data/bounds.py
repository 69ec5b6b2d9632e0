"""Coarse clipping bounds that reveal no individual's value.

Bounds taken straight from the data (a minimum, a maximum, an exact
percentile) are the value of one particular user, and every release that
clips to them publishes it. Here a bound is instead *chosen* from a fixed,
data-independent grid of round numbers (0 and ±1, 2, 5 times 10^k) with the
exponential mechanism (McSherry & Talwar 2007): grid value ``g`` is picked
with probability proportional to ``exp(ε · u(g) / 2)``, where ``u(g) = -|#{x ≤
g} - q·n| - s(g)`` (``#{x < g}`` for the low bound) is how far ``g`` is, in users, from the wanted quantile
``q``, less a data-independent prior ``s(g)`` of three users per grid step away
from 0 (so the flat tails beyond the data, where every grid value is as good,
do not draw the bound out to 10^12). One user changes ``u`` by at most 1, so
each bound is ε-DP, and the grid is coarse enough that the bound says nothing
finer than "about a thousand".
Count-like aggregates start at 0, which needs no data at all.
"""

from __future__ import annotations

import secrets
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["BOUND_EPSILON", "GRID", "coarse_bounds"]

F64 = npt.NDArray[np.float64]
BOUND_EPSILON = 1.0  # ε per data-chosen bound (exponential mechanism)
_STEPS = np.array([1.0, 2.0, 5.0])
_POSITIVE = np.concatenate([_STEPS * 10.0 ** e for e in range(-3, 13)])
GRID: F64 = np.concatenate([-_POSITIVE[::-1], [0.0], _POSITIVE])
_PRIOR_PER_STEP = 3.0  # users of utility per grid step away from 0 (data-independent)
_NON_NEGATIVE = ("count", "distinct", "active_days", "recency_days")


def _rng(seed: int | None) -> np.random.Generator:
    """Seeded for tests and reproducible runs; otherwise from the OS's secure source."""
    return np.random.default_rng(secrets.randbits(128) if seed is None else seed)


def _noisy_quantile(values: F64, q: float, epsilon: float, rng: np.random.Generator,
                    grid: F64) -> float:
    """A grid value near the q-quantile, chosen with the exponential mechanism."""
    side: Literal["left", "right"] = "right" if q >= 0.5 else "left"  # low: #{x < g} ≈ q·n
    below = np.searchsorted(np.sort(values), grid, side=side).astype(np.float64)
    steps = np.abs(np.searchsorted(GRID, grid) - np.searchsorted(GRID, 0.0)).astype(np.float64)
    utility = -np.abs(below - q * len(values)) - _PRIOR_PER_STEP * steps
    logits = epsilon * utility / 2.0
    weights = np.exp(logits - logits.max())
    return float(rng.choice(grid, p=weights / weights.sum()))


def coarse_bounds(values: F64, aggregate: str, *, log1p: bool, seed: int | None = None,
                  epsilon: float = BOUND_EPSILON) -> tuple[float, float]:
    """Clipping bounds for one feature: round numbers near its 1st and 99th percentiles.

    Args:
        values: the feature's value for every user.
        aggregate: the feature's aggregate; count-like ones start at 0 without
            looking at the data.
        log1p: whether the feature is log-transformed (its low bound stays >= 0).
        seed: a seed for reproducible runs; None draws from the OS.
        epsilon: ε of each data-chosen bound.

    Returns:
        ``(low, high)`` on the round-number grid, ``low < high``.
    """
    rng = _rng(seed)
    if aggregate in _NON_NEGATIVE or log1p:
        low = 0.0
    else:
        low = min(_noisy_quantile(values, 0.01, epsilon, rng, GRID), 0.0)
    above = GRID[low < GRID]
    high = _noisy_quantile(values, 0.99, epsilon, rng, above)
    return low, high
