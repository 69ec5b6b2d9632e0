"""Canary membership-inference audit: empirical ε lower bounds for the private releases.

    python benchmarks/canary.py [--trials N] [--seed S]

Method (the auditing literature: Jagielski et al. 2020, Nasr et al. 2021).
A *canary* row is placed at the corner of the declared bounds farthest from
the data, so it moves a release as much as one row can. The mechanism runs
``N`` times on D and ``N`` times on D + canary (fixed D, fresh seeded noise
each run), and a scalar score of each released output says how strongly it
suggests the canary was in. For every threshold, guessing "in" above it (and,
separately, below it) gives false-positive and false-negative counts; their
one-sided 95% Clopper-Pearson upper bounds FPR⁺ and FNR⁺ give::

    ε_lb = max over thresholds and both directions of log((1 - FNR⁺ - δ) / FPR⁺)

For one fixed threshold an (ε, δ)-DP mechanism gives ε_lb > ε with
probability at most 10% (two 5% bounds). Taking the best threshold and the
best of several scores on the same trials makes ε_lb optimistic (it favours
finding leakage), which is the demanding direction for a check that ε_lb
stays at or below the configured ε; the check is not a proof of privacy.

Scores, each higher when the canary looks present:

* ``nearest``: minus the distance from the canary to its nearest released
  centroid (black box: only the centroids).
* ``cell``: the Neyman-Pearson score of the canary's cell: its noisy count and
  its noisy centred sum projected on the canary direction, weighted as the
  mechanism splits its budget (public: d and the bounds).
* ``total``: the same over all cells (DP k-means only: the canary's final
  cell need not be the one nearest to it).

Releases audited: :class:`DPKMeans` (n = 300 rows, d = 8, k = 3, δ = 1e-6) and
the private refit's :func:`noisy_aggregates` (one contribution is the unit).
Negative controls, which must show leakage: scikit-learn's KMeans, DPKMeans at
ε = 1000 (noise practically off), DPKMeans claiming ε = 1 with 8x too little
noise, and the refit on exact aggregates.

The ``ideal`` column is what the most powerful test typically reaches (the
median of 51 simulated audits, same N, same estimator) against a Gaussian
mechanism spending exactly the budget (μ-GDP, μ = ``gaussian_mu(ε, δ)``): a
figure well below it means the scores see only part of the budget (DP k-means
releases only its last round directly), not that the release is more private.
With a few hundred trials per world the bound is loose (even perfect
separation gives at most 4.19 with 200 runs, 6.50 with 2,000): the figures say
the audit found no leakage beyond ε, not that the releases are exactly ε-DP.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from unittest import mock

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scipy.stats import beta
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from edgepersona.sdk import Feature, FeatureSpec, Manifest
from edgepersona.sdk.protocol.assign import model_space, numpy_assign
from edgepersona.trainer.privacy import dp_kmeans as dp
from edgepersona.trainer.privacy.accounting import gaussian_mu
from edgepersona.trainer.privacy.dp_kmeans import DPKMeans
from edgepersona.trainer.release.refit import PersonaAggregates, RefitPrivacy, noisy_aggregates
from edgepersona.trainer.release.train import TrainOptions, train_bundle

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Scores = dict[str, float]
Release = Callable[[F64, int], tuple[F64, F64]]  # (rows, seed) -> (centroids, counts)

DELTA = 1e-6
EPSILONS = (0.5, 1.0, 2.0)
N_ROWS, DIM, K = 300, 8, 3
CONFIDENCE = 0.95
LOWER, UPPER = np.zeros(DIM), np.ones(DIM)


# --- the estimator ---------------------------------------------------------------------------

def clopper_pearson_upper(hits: I64, trials: int, confidence: float = CONFIDENCE) -> F64:
    """One-sided upper confidence bound of a binomial rate, for each count of hits.

    Args:
        hits: observed counts (0..trials).
        trials: the number of trials behind each count.
        confidence: the one-sided level.

    Returns:
        The upper bounds (1 where every trial hit).
    """
    hits = np.asarray(hits, dtype=np.int64)
    out = np.ones(hits.shape)
    some = hits < trials
    out[some] = beta.ppf(confidence, hits[some] + 1, trials - hits[some])
    return out


def _log_ratio(numerator: F64, denominator: F64) -> F64:
    """log(numerator / denominator), -inf where the numerator is not positive."""
    out = np.full(numerator.shape, -math.inf)
    ok = numerator > 0
    out[ok] = np.log(numerator[ok] / denominator[ok])
    return out


def epsilon_lower_bound(out_scores: F64, in_scores: F64, delta: float = DELTA) -> float:
    """The empirical ε lower bound of the best threshold on a score (0 if none beats chance).

    Args:
        out_scores: the score of each run without the canary.
        in_scores: the score of each run with the canary.
        delta: the release's δ.

    Returns:
        max over thresholds t and both rules ("in" when score >= t, or < t) of
        log((1 - FNR⁺ - δ) / FPR⁺), Clopper-Pearson one-sided 95% bounds.
    """
    outs, ins = np.sort(out_scores), np.sort(in_scores)
    thresholds = np.unique(np.concatenate([outs, ins, [math.inf]]))
    above_out = len(outs) - np.searchsorted(outs, thresholds, side="left")  # out runs >= t
    below_in = np.searchsorted(ins, thresholds, side="left")  # in runs < t
    fpr_hi = clopper_pearson_upper(above_out, len(outs))  # "in" when score >= t
    fnr_hi = clopper_pearson_upper(below_in, len(ins))
    swapped_fpr = clopper_pearson_upper(len(outs) - above_out, len(outs))  # "in" when < t
    swapped_fnr = clopper_pearson_upper(len(ins) - below_in, len(ins))
    bound = max(_log_ratio(1.0 - fnr_hi - delta, fpr_hi).max(),
                _log_ratio(1.0 - swapped_fnr - delta, swapped_fpr).max())
    return max(0.0, float(bound))


@dataclass(frozen=True)
class Audit:
    """One audited release: ε lower bounds per score, from ``trials`` runs per world."""

    release: str
    epsilon: float | None  # the configured (for a control: claimed) ε; None: not private
    trials: int
    bounds: dict[str, float]
    control: bool = False  # a negative control: the audit must find leakage

    @property
    def passed(self) -> bool:
        """A release stays at or below its ε; a control goes above it (or above every budget)."""
        limit = max(EPSILONS) if self.epsilon is None else self.epsilon
        return self.best[1] > limit if self.control else self.best[1] <= limit

    @property
    def best(self) -> tuple[str, float]:
        """The score that gave the largest lower bound, and that bound."""
        name = max(self.bounds, key=self.bounds.__getitem__)
        return name, self.bounds[name]


def _audit(release: str, epsilon: float | None, runs: Callable[[bool, int], Scores], trials: int,
           seed: int, control: bool) -> Audit:
    """Score ``trials`` seeded runs per world (distinct seeds) and bound ε for every score."""
    seeds = np.random.SeedSequence(seed).generate_state(2 * trials).astype(np.int64)
    worlds = [[runs(planted, int(s)) for s in half]
              for planted, half in ((False, seeds[:trials]), (True, seeds[trials:]))]
    names = worlds[0][0].keys()
    bounds = {name: epsilon_lower_bound(np.array([r[name] for r in worlds[0]]),
                                        np.array([r[name] for r in worlds[1]])) for name in names}
    return Audit(release, epsilon, trials, bounds, control)


def ideal_bound(epsilon: float, trials: int, seed: int, delta: float = DELTA,
                repeats: int = 51) -> float:
    """The estimator on the most powerful test against μ-GDP spending exactly (ε, δ).

    Args:
        epsilon: the budget.
        trials: runs per world.
        seed: the sampling seed.
        delta: the budget's δ.
        repeats: independent audits of the ideal test; their median is returned.

    Returns:
        The median empirical ε lower bound of N(0, 1) against N(μ, 1) samples.
    """
    rng = np.random.default_rng(seed)
    mu = gaussian_mu(epsilon, delta)
    return float(np.median([epsilon_lower_bound(rng.normal(0.0, 1.0, trials),
                                                rng.normal(mu, 1.0, trials), delta)
                            for _ in range(repeats)]))


def ceiling(trials: int, delta: float = DELTA) -> float:
    """The largest bound the estimator can give with ``trials`` runs per world (no errors at all)."""
    return epsilon_lower_bound(np.zeros(trials), np.ones(trials), delta)


# --- the data and the canary -----------------------------------------------------------------

def planted_clusters(seed: int = 0, n: int = N_ROWS) -> F64:
    """k = 3 tight clusters inside [0.2, 0.6]^8, well inside the declared box [0, 1]^8."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.2, 0.6, size=(K, DIM))
    rows: F64 = np.clip(centres[rng.integers(0, K, n)] + rng.normal(0.0, 0.05, (n, DIM)), 0.0, 1.0)
    return rows


def farthest_corner(lower: F64, upper: F64, points: F64) -> F64:
    """The corner of the box whose nearest point is farthest away (2^d corners).

    Args:
        lower: the box's lower bounds.
        upper: its upper bounds.
        points: the points to keep away from (rows or centroids).

    Returns:
        The corner, shape (d,).
    """
    corners: F64 = np.array(list(itertools.product(*zip(lower, upper, strict=True))), dtype=np.float64)
    gaps = ((corners[:, None, :] - points[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    corner: F64 = corners[int(np.argmax(gaps))]
    return corner


def _projection(centred: F64, canary: F64, middle: F64) -> F64:
    """Centred sums projected on the canary direction, in units of R = |canary - middle|."""
    direction = canary - middle
    return centred @ direction / float(direction @ direction)


# --- DP k-means and the non-private baselines --------------------------------------------------

def centroid_scores(centres: F64, counts: F64, canary: F64, lower: F64, upper: F64) -> Scores:
    """The scores of one released set of centroids and counts (see the module docstring)."""
    middle = (lower + upper) / 2.0
    gaps = np.linalg.norm(centres - canary, axis=1)
    share = 1.0 / (1.0 + math.sqrt(len(canary)))  # the counts' part of each round's budget
    weighted = share * counts + (1.0 - share) * _projection(counts[:, None] * (centres - middle),
                                                            canary, middle)
    return {"nearest": -float(gaps.min()), "cell": float(weighted[int(np.argmin(gaps))]),
            "total": float(weighted.sum())}


def dp_kmeans_release(epsilon: float) -> Release:
    """DPKMeans at ε with the declared box [0, 1]^d; every centroid released (no k-min)."""
    def release(rows: F64, seed: int) -> tuple[F64, F64]:
        model = DPKMeans(n_clusters=K, epsilon=epsilon, delta=DELTA, bounds=(LOWER, UPPER),
                         k_min=-math.inf, random_state=seed).fit(rows)
        return model.cluster_centers_, model.counts_

    return release


def kmeans_release(rows: F64, seed: int) -> tuple[F64, F64]:
    """scikit-learn's KMeans: exact centroids and cluster sizes (not private)."""
    model = KMeans(n_clusters=K, n_init=1, random_state=seed).fit(rows)
    return model.cluster_centers_, np.bincount(model.labels_, minlength=K).astype(np.float64)


def audit_centroids(release: Release, name: str, epsilon: float | None, rows: F64, trials: int,
                    seed: int, *, control: bool = False) -> Audit:
    """Canary audit of a centroid release on ``rows`` against ``rows`` + the farthest corner.

    Args:
        release: runs the mechanism once for (rows, seed).
        name: the release's label.
        epsilon: its configured ε (None if not private).
        rows: the dataset D in [0, 1]^d.
        trials: runs per world.
        seed: the root seed.
        control: a negative control (the audit must find leakage).

    Returns:
        The audit.
    """
    canary = farthest_corner(LOWER, UPPER, rows)
    planted_rows = np.vstack([rows, canary])

    def run(planted: bool, run_seed: int) -> Scores:
        centres, counts = release(planted_rows if planted else rows, run_seed)
        return centroid_scores(centres, counts, canary, LOWER, UPPER)

    return _audit(name, epsilon, run, trials, seed, control)


# --- the private refit ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RefitCanary:
    """What a refit audit needs: the exact aggregates and the canary's contribution."""

    previous: Manifest
    aggregates: PersonaAggregates
    persona: int  # the persona the canary's device assigns to (public: the previous model)
    contribution: F64  # the canary's contribution in the model's transformed space


def refit_canary(previous: Manifest, rows: F64) -> RefitCanary:
    """Devices' exact contributions from raw rows, and a canary at the farthest corner.

    Args:
        previous: the manifest the devices assigned with.
        rows: one raw feature row per device.

    Returns:
        The aggregates and the canary (its raw corner assigned as a device would).
    """
    params = previous.assigner
    labels = numpy_assign(params, rows)[0]
    t = model_space(params, np.array(rows, dtype=np.float64))
    k = len(params.centroids)
    sums = np.zeros((k, t.shape[1]))
    squares = np.zeros((k, t.shape[1]))
    np.add.at(sums, labels, t)
    np.add.at(squares, labels, t**2)
    aggregates = PersonaAggregates(np.bincount(labels, minlength=k).astype(np.float64), sums, squares)
    corners = np.array(list(itertools.product(*zip(params.lower, params.upper, strict=True))))
    persona, _, distances = numpy_assign(params, corners)  # in the model's standardised space
    far = int(np.argmax(distances.min(axis=1)))
    return RefitCanary(previous, aggregates, int(persona[far]), model_space(params, corners[far:far + 1])[0])


def refit_scores(canary: RefitCanary, released: PersonaAggregates) -> Scores:
    """The scores of one released set of per-persona counts and sums."""
    params = canary.previous.assigner
    bounds = model_space(params, np.array([params.lower, params.upper], dtype=np.float64))
    middle = (bounds[0] + bounds[1]) / 2.0
    j = canary.persona
    count = float(released.counts[j])
    mass = max(count, 1.0)  # noisy_aggregates releases sums as clipped means times this
    mean = released.sums[j] / mass
    gap = np.linalg.norm((mean - canary.contribution) * np.asarray(params.scale))
    scale = np.asarray(params.scale)  # the sums are noised in the standardised space
    centred = _projection((released.sums[j] - mass * middle) * scale, canary.contribution * scale,
                          middle * scale)
    return {"nearest": -float(gap), "cell": count + float(centred)}  # equal budget halves


def audit_refit(canary: RefitCanary, epsilon: float | None, trials: int, seed: int,
                name: str = "refit noisy_aggregates", *, control: bool = False) -> Audit:
    """Canary audit of the private refit (``epsilon`` None: the exact aggregates).

    Args:
        canary: the aggregates and the canary.
        epsilon: the refit's ε, or None for the non-private release of exact aggregates.
        trials: runs per world.
        seed: the root seed.
        name: the release's label.
        control: a negative control (the audit must find leakage).

    Returns:
        The audit.
    """
    base = canary.aggregates
    one = np.zeros_like(base.counts)
    one[canary.persona] = 1.0
    planted = PersonaAggregates(base.counts + one, base.sums + one[:, None] * canary.contribution,
                                base.sumsq + one[:, None] * canary.contribution**2)

    def run(with_canary: bool, run_seed: int) -> Scores:
        exact = planted if with_canary else base
        if epsilon is None:
            return refit_scores(canary, exact)
        privacy = RefitPrivacy(epsilon=epsilon, delta=DELTA, seed=run_seed)
        return refit_scores(canary, noisy_aggregates(canary.previous, exact, privacy))

    return _audit(name, epsilon, run, trials, seed, control)


def previous_bundle(rows: F64) -> Manifest:
    """A non-private v1 over the declared box [0, 1]^d (its centroids are public to a refit)."""
    spec = FeatureSpec(features=tuple(
        Feature(name=f"f{j}", event=f"e{j}", property="value", aggregate="sum", bounds=(0.0, 1.0))
        for j in range(rows.shape[1])))
    options = TrainOptions(model_id="canary-audit", k=K, k_min=5, seed=0, stability_rounds=1)
    return train_bundle(rows, spec, Ed25519PrivateKey.generate(), options,
                        lineage={"source": "planted clusters"},
                        now=datetime(2025, 1, 1, tzinfo=UTC)).manifest


# --- the report ------------------------------------------------------------------------------------

def run_all(trials: int, seed: int) -> list[Audit]:
    """Every audit of the README table, with ``trials`` runs per world."""
    rows = planted_clusters(seed)
    canary = refit_canary(previous_bundle(rows), rows)
    audits: list[Audit] = []
    for epsilon in EPSILONS:
        audits.append(audit_centroids(dp_kmeans_release(epsilon), "DPKMeans", epsilon, rows,
                                      trials, seed))
        audits.append(audit_refit(canary, epsilon, trials, seed))
    audits.append(audit_centroids(kmeans_release, "control: scikit-learn KMeans", None, rows,
                                  trials, seed, control=True))
    audits.append(audit_centroids(dp_kmeans_release(1000.0), "control: DPKMeans at ε=1000", None,
                                  rows, trials, seed, control=True))
    with mock.patch.object(dp, "gaussian_mu", lambda e, d: 8.0 * gaussian_mu(e, d)):
        audits.append(audit_centroids(dp_kmeans_release(1.0),
                                      "control: DPKMeans with 8x too little noise", 1.0, rows,
                                      trials, seed, control=True))
    audits.append(audit_refit(canary, None, trials, seed, "control: refit on exact aggregates",
                              control=True))
    return audits


def table(audits: Sequence[Audit], seed: int) -> str:
    """The audits as a Markdown table."""
    lines = ["| release | configured ε | N per world | empirical ε lower bound (95%) | best score"
             " | ideal test at N | verdict |", "| --- | ---: | ---: | ---: | --- | ---: | --- |"]
    for audit in audits:
        name, bound = audit.best
        ideal = ("" if audit.epsilon is None or audit.control
                 else f"{ideal_bound(audit.epsilon, audit.trials, seed):.2f}")
        configured = "none" if audit.epsilon is None else f"{audit.epsilon:g}"
        if audit.control:
            configured += " (claimed)" if audit.epsilon is not None else ""
            verdict = "leak detected" if audit.passed else "NOT DETECTED"
        else:
            verdict = "≤ ε" if audit.passed else "ABOVE ε"
        lines.append(f"| {audit.release} | {configured} | {audit.trials:,} | {bound:.2f} | {name}"
                     f" | {ideal} | {verdict} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/canary.py",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000, help="runs per world (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with threadpool_limits(limits=1):
        audits = run_all(args.trials, args.seed)
    print(f"Canary audit: n={N_ROWS} rows, d={DIM}, k={K}, δ={DELTA:g}, {args.trials:,} seeded runs"
          f" per world, seed {args.seed}; one-sided 95% Clopper-Pearson bounds; the largest"
          f" bound {args.trials:,} runs can show is {ceiling(args.trials):.2f}.\n")
    print(table(audits, args.seed))
    failed = [a.release for a in audits if not a.passed]
    print(f"\n{len(audits) - len(failed)} of {len(audits)} audits as expected"
          f"{': check ' + ', '.join(failed) if failed else ''}; {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
