"""Privacy accounting: pure maths, no files (the ledger in :mod:`.ledger` stores it).

A Gaussian release (L2 sensitivity Δ, noise sigma) is mu-GDP with mu = Δ/sigma,
and an adaptive composition of Gaussians is exactly one Gaussian with
mu^2 = Σ mu_i^2 (Dong, Roth & Su 2022). Each Gaussian release is recorded as
zCDP rho = mu^2/2 and, because every rho comes from Gaussian noise, the total
is converted with the *exact* Gaussian privacy profile (Balle & Wang 2018),
δ(ε; mu) = Φ(-ε/mu + mu/2) - e^ε Φ(-ε/mu - mu/2): about 7% more mu than the
generic zCDP bound ε = rho + 2 sqrt(rho ln(1/δ)) at ε = 1, δ = 1e-6. Noise is
calibrated with :func:`gaussian_mu`: a release at (ε, δ) has mu = ``gaussian_mu(ε, δ)``
and sigma = Δ / mu (:func:`gaussian_sigma`). Any other mechanism is recorded as
plain (ε, δ) and added by basic composition, so a source has spent::

    ε_spent = Σ ε_other + gaussian_epsilon(sqrt(2 Σ rho), δ_budget - Σ δ_other)

and a release is allowed while that stays ≤ ε_budget (and Σ δ_other ≤ δ_budget).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from edgepersona.sdk import InputError
from edgepersona.trainer.errors import BudgetExceededError

__all__ = ["TOLERANCE", "BudgetStatus", "Mechanism", "check_epsilon_delta", "gaussian_delta",
           "gaussian_epsilon", "gaussian_mu", "gaussian_sigma", "refuse_if_over"]

Mechanism = Literal["gaussian", "other"]
TOLERANCE = 1e-9  # relative slack on ε comparisons (float rounding of the conversions)


def _phi(x: float) -> float:
    """Standard normal CDF, accurate in the tails (erfc, no cancellation)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gaussian_delta(mu: float, epsilon: float) -> float:
    """The exact δ at which a μ-GDP (Gaussian) mechanism is ε-DP.

    Args:
        mu: the Gaussian-DP parameter (sensitivity / noise standard deviation).
        epsilon: ε ≥ 0.

    Returns:
        δ(ε; μ) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2).
    """
    if mu <= 0.0:
        return 0.0
    tail = _phi(-epsilon / mu - mu / 2.0)
    second = math.exp(epsilon + math.log(tail)) if tail > 0.0 else 0.0
    return max(0.0, _phi(-epsilon / mu + mu / 2.0) - second)


def _bisect(inside: Callable[[float], bool], lo: float, hi: float) -> tuple[float, float]:
    """Shrink [lo, hi] around the switch of a monotone predicate (true at lo)."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if inside(mid) else (lo, mid)
    return lo, hi


@functools.lru_cache(maxsize=1024)
def gaussian_mu(epsilon: float, delta: float) -> float:
    """The largest μ whose Gaussian mechanism is (ε, δ)-DP.

    Args:
        epsilon: ε > 0.
        delta: 0 < δ < 1.

    Returns:
        μ (rounded down, so the guarantee holds).

    Raises:
        InputError: ε or δ out of range (Gaussian noise needs δ > 0).
    """
    check_epsilon_delta(epsilon, delta)
    if delta == 0.0:
        raise InputError("Gaussian noise needs delta > 0 (e.g. 1e-6, well below 1/number of users)")
    hi = 1.0
    while gaussian_delta(hi, epsilon) <= delta:
        hi *= 2.0
    return _bisect(lambda mu: gaussian_delta(mu, epsilon) <= delta, 0.0, hi)[0]


def gaussian_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """The noise standard deviation of a Gaussian release at (ε, δ).

    Args:
        sensitivity: the release's L2 sensitivity Δ (> 0).
        epsilon: ε > 0.
        delta: 0 < δ < 1.

    Returns:
        sigma = Δ / gaussian_mu(ε, δ).

    Raises:
        InputError: a value out of range.
    """
    if not (math.isfinite(sensitivity) and sensitivity > 0.0):
        raise InputError(f"sensitivity must be a positive finite number, got {sensitivity!r}")
    return sensitivity / gaussian_mu(epsilon, delta)


def gaussian_epsilon(mu: float, delta: float) -> float:
    """The smallest ε at which a μ-GDP mechanism is (ε, δ)-DP.

    Args:
        mu: the Gaussian-DP parameter, ≥ 0.
        delta: δ; 0 or less gives infinity.

    Returns:
        ε (rounded up, so the guarantee holds).
    """
    if mu <= 0.0:
        return 0.0
    if delta <= 0.0:
        return math.inf
    if gaussian_delta(mu, 0.0) <= delta:
        return 0.0
    hi = 1.0
    while gaussian_delta(mu, hi) > delta:
        hi *= 2.0
    return _bisect(lambda eps: gaussian_delta(mu, eps) > delta, 0.0, hi)[1]


def check_epsilon_delta(epsilon: float, delta: float, mechanism: str = "other") -> None:
    """Check a release's parameters: ε positive and finite, δ in [0, 1), a known mechanism.

    Args:
        epsilon: ε.
        delta: δ.
        mechanism: ``"gaussian"`` or ``"other"``.

    Raises:
        InputError: a value is out of range.
    """
    if mechanism not in ("gaussian", "other"):
        raise InputError(f"mechanism must be 'gaussian' or 'other', got {mechanism!r}")
    if not (math.isfinite(epsilon) and epsilon > 0.0):
        raise InputError(f"epsilon must be a positive finite number, got {epsilon!r}")
    if not (math.isfinite(delta) and 0.0 <= delta < 1.0):
        raise InputError(f"delta must be in [0, 1), got {delta!r}")


@dataclass(frozen=True)
class BudgetStatus:
    """What one data source may spend and has spent.

    Attributes:
        source: the data source name.
        epsilon: the budget's ε (inf when no budget is set: nothing may be spent).
        delta: the budget's δ.
        rho: zCDP rho of the Gaussian releases so far (μ² / 2).
        other_epsilon: summed ε of non-Gaussian releases.
        other_delta: summed δ of non-Gaussian releases.
        releases: the number of spends recorded.
        has_budget: whether a budget entry exists for the source.
    """

    source: str
    epsilon: float
    delta: float
    rho: float = 0.0
    other_epsilon: float = 0.0
    other_delta: float = 0.0
    releases: int = 0
    has_budget: bool = True

    @property
    def spent_epsilon(self) -> float:
        """Total ε spent, stated at the budget's δ (see the module docstring)."""
        mu = math.sqrt(2.0 * self.rho)
        return self.other_epsilon + gaussian_epsilon(mu, self.delta - self.other_delta)

    def after(self, epsilon: float, delta: float, mechanism: Mechanism) -> BudgetStatus:
        """The status once a release of (ε, δ) is added.

        Args:
            epsilon: the release's ε.
            delta: the release's δ.
            mechanism: ``"gaussian"`` (composed in rho) or ``"other"`` (basic composition).

        Returns:
            The new status.

        Raises:
            InputError: ε or δ out of range, or an unknown mechanism.
        """
        check_epsilon_delta(epsilon, delta, mechanism)
        if mechanism == "gaussian":
            rho = gaussian_mu(epsilon, delta) ** 2 / 2.0
            return replace(self, rho=self.rho + rho, releases=self.releases + 1)
        return replace(self, other_epsilon=self.other_epsilon + epsilon,
                       other_delta=self.other_delta + delta, releases=self.releases + 1)

    def fits(self) -> bool:
        """Whether the spending is within the budget."""
        return (self.has_budget and self.other_delta <= self.delta * (1.0 + TOLERANCE)
                and self.spent_epsilon <= self.epsilon * (1.0 + TOLERANCE))

    def remaining_epsilon(self, delta: float) -> float:
        """The largest ε a further Gaussian release calibrated at ``delta`` may use.

        Args:
            delta: the δ the release would be calibrated at.

        Returns:
            ε, or 0 when nothing is left.
        """
        left_eps, left_delta = self.epsilon - self.other_epsilon, self.delta - self.other_delta
        if not self.has_budget or left_eps <= 0.0 or left_delta <= 0.0 or delta <= 0.0:
            return 0.0
        room = gaussian_mu(left_eps, left_delta) ** 2 - 2.0 * self.rho
        return gaussian_epsilon(math.sqrt(room), delta) if room > 0.0 else 0.0


def refuse_if_over(status: BudgetStatus, epsilon: float, delta: float, mechanism: Mechanism) -> None:
    """Refuse a release that does not fit a source's budget.

    Args:
        status: the source's status before the release.
        epsilon: the release's ε.
        delta: the release's δ.
        mechanism: ``"gaussian"`` or ``"other"``.

    Raises:
        BudgetExceededError: no budget is set, or the release would exceed it.
    """
    if not status.has_budget:
        raise BudgetExceededError(f"data source {status.source!r} has no privacy budget; set one"
                                  " with PrivacyLedger.set_budget before releasing anything")
    after = status.after(epsilon, delta, mechanism)
    if after.fits():
        return
    left = status.remaining_epsilon(delta)
    raise BudgetExceededError(
        f"privacy budget of source {status.source!r} would be exceeded: budget ε={status.epsilon:g},"
        f" δ={status.delta:g}; spent ε={status.spent_epsilon:.4g} over {status.releases} release(s);"
        f" this {mechanism} release asks ε={epsilon:g}, δ={delta:g}, which would make the total"
        f" ε={after.spent_epsilon:.4g}. At most ε={left:.4g} is left for a Gaussian release at"
        f" δ={delta:g}: ask for less, or stop releasing from this source")
