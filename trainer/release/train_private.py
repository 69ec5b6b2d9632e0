"""Private releases: DP k-means from feature rows, spent from the budget ledger.

Under differential privacy only the final centroids and their noisy counts
are released. Everything in the bundle is computed from them (post-processing):
preprocessing from the declared bounds (never from data), persona cards from
the centroids mapped back to raw units with shares from the noisy counts, and
no data-dependent metrics (silhouette, Davies-Bouldin, stability and inertia
are left empty; the user count is the noisy total). The ledger is checked
before any noise is drawn and spent before the bundle exists.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import FeatureSpec, InputError, PersonaCard
from edgepersona.sdk.protocol.manifest import AssignerParams, OutcomeRate
from edgepersona.trainer.data.facts import UserFacts
from edgepersona.trainer.privacy.dp_kmeans import DPKMeans, PrivacyLeakWarning, declared_scaling
from edgepersona.trainer.privacy.ledger import PrivacyLedger
from edgepersona.trainer.release.cards import cards_from_stats, outcome_sentence

__all__ = ["MECHANISM", "OUTCOME_EPSILON_SHARE", "PrivateRelease", "fit_private",
           "private_outcomes", "raw_centroids"]

F64 = npt.NDArray[np.float64]
MECHANISM = "gaussian: DP-Lloyd with private bisecting-tree seeding"


def raw_centroids(params: AssignerParams) -> F64:
    """Centroids mapped back to raw feature units (inverse of scaling and log1p).

    Args:
        params: assigner parameters.

    Returns:
        Shape (k, d).
    """
    t: F64 = np.asarray(params.centroids) / np.asarray(params.scale) + np.asarray(params.center)
    mask = np.asarray(params.log1p, dtype=bool)
    t[:, mask] = np.expm1(t[:, mask])
    return t


def dp_cards(spec: FeatureSpec, params: AssignerParams, counts: F64) -> tuple[PersonaCard, ...]:
    """Persona cards from released centroids and noisy counts only.

    Traits are measured against the count-weighted spread of the released
    centroids (the population's own spread would need another release).

    Args:
        spec: the feature spec.
        params: assigner parameters holding the released centroids.
        counts: the noisy count of each persona.

    Returns:
        One card per persona.
    """
    centroids = np.asarray(params.centroids)
    shares = np.clip(counts, 0.0, None) / max(float(np.clip(counts, 0.0, None).sum()), 1e-12)
    population = shares @ centroids
    spread = np.sqrt(shares @ (centroids - population) ** 2)
    z = (centroids - population) / np.where(spread > 0, spread, 1.0)
    raw = raw_centroids(params)
    population_raw = raw_centroids(params.model_copy(update={"centroids": (tuple(population),
                                                                           tuple(population))}))[0]
    return cards_from_stats(spec, shares, z, raw, population_raw)


@dataclass(frozen=True)
class PrivateRelease:
    """The outputs of one private fit, ready for the manifest (all post-processing)."""

    params: AssignerParams
    counts: F64
    cards: tuple[PersonaCard, ...]
    privacy: dict[str, object]
    n_users: int
    suppressed: tuple[str, ...]
    source: str = ""
    ledger_id: str = ""
    head: tuple[int, str] = (-1, "")


def fit_private(rows: F64, spec: FeatureSpec, key: Ed25519PrivateKey, *, k: int, epsilon: float,
                delta: float, iterations: int, k_min: int, seed: int | None, ledger: Path | str,
                source: str | None, user_ids: Sequence[str], note: str, now: datetime,
                progress: Callable[[str], None], secret: Path | None = None) -> PrivateRelease:
    """Check the budget, fit DP k-means, spend the budget, describe the release.

    Args:
        rows: raw feature rows (one per user).
        spec: the feature spec (its declared bounds bound the sensitivity).
        key: the trainer's signing key (also signs ledger entries).
        k: number of personas (fixed: choosing k from the data would need budget too).
        epsilon: this release's ε.
        delta: this release's δ.
        iterations: DP-Lloyd rounds.
        k_min: personas whose noisy count is below it are not released.
        seed: random seed (tests and reproducible benchmarks only).
        ledger: the budget ledger file or database URL.
        source: an operator-chosen label for new people (None: the opaque sketch label);
            people the ledger already knows spend from their own source whatever this says.
        user_ids: the id of each row's user (only a keyed sketch of them is kept).
        note: recorded with the ledger entry (model id and version).
        now: the release time.
        progress: receives short messages.
        secret: the source secret's file (required for a database ledger).

    Returns:
        The release.

    Raises:
        BudgetExceededError: the source's budget cannot cover (ε, δ); nothing was drawn.
        InputError: bad parameters or no persona reaches k-min.
    """
    if len(user_ids) != len(rows):
        raise InputError(f"a private release needs one user id per row: got {len(user_ids)} ids"
                         f" for {len(rows)} rows")
    book = PrivacyLedger(ledger, key, secret=secret)
    sketch = book.sketch(user_ids)
    source = book.resolve(sketch, source)
    book.check(source, epsilon=epsilon, delta=delta, sketch=sketch)
    leaks = [f.name for f in spec.features if f.bounds_source == "data"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PrivacyLeakWarning)
        scaling = declared_scaling(spec)
    for warning in caught:  # re-emit to the caller: it always shows (PrivacyLeakWarning)
        warnings.warn(warning.message, PrivacyLeakWarning, stacklevel=2)
    model = DPKMeans(n_clusters=k, epsilon=epsilon, delta=delta, bounds=scaling.bounds,
                     iterations=iterations, k_min=k_min, random_state=seed)
    try:
        model.fit(scaling.transform(rows))
    finally:  # noise was drawn: a failure is an output too, so the budget is spent either way
        seq, digest = book.spend(source, epsilon=epsilon, delta=delta, note=note,
                                 now=now, sketch=sketch)
    progress(f"DP k-means at ε={epsilon:g}, δ={delta:g}: {model.n_clusters_} personas released,"
             f" {len(model.dropped_)} suppressed by k-min on noisy counts")
    if model.n_clusters_ < 2:
        raise InputError(f"only {model.n_clusters_} persona reached k-min {k_min} on noisy counts;"
                         " raise --epsilon, lower --k or --k-min, or use more users")
    params = scaling.assigner_params(model.cluster_centers_)
    status = book.status(source)
    notes = [f"mu={model.mu_:.6g}, zCDP rho={model.rho_:.6g}, exact Gaussian privacy profile",
             "neighbours: add or remove one user", "rows clipped to declared bounds; scaling"
             " from declared bounds only", "k-min applied to noisy counts",
             f"ledger {source!r} head {seq}:{digest}; spent ε={status.spent_epsilon:.4g}"
             f" of {status.epsilon:g}"]
    if leaks:
        notes.append(f"PrivacyLeakWarning: bounds of {leaks} were taken from data, not declared")
    privacy = {"epsilon": epsilon, "delta": delta, "mechanism": MECHANISM, "k_min": k_min,
               "suppressed": model.dropped_, "notes": tuple(notes)}
    return PrivateRelease(params, model.counts_, dp_cards(spec, params, model.counts_), privacy,
                          max(0, round(float(np.clip(model.counts_, 0, None).sum()))),
                          tuple(model.dropped_), source, book.ledger_id or "", (seq, digest))



OUTCOME_EPSILON_SHARE = 0.1  # the outcome rates' ε, as a share of the release's ε


def private_outcomes(release: PrivateRelease, facts: UserFacts, labels: npt.NDArray[np.int64],
                     ledger: Path | str | None, key: Ed25519PrivateKey, *,
                     user_ids: Sequence[str], secret: Path | None, epsilon: float,
                     seed: int | None, now: datetime, note: str) -> tuple[PersonaCard, ...]:
    """Add noisy outcome rates to a private release's cards, spent from the ledger.

    Each user is in one persona and reaches the outcome or not, so the per-persona
    outcome counts have L1 sensitivity 1: Laplace noise of scale ``1/ε_o`` with
    ``ε_o = OUTCOME_EPSILON_SHARE · ε`` makes them ε_o-DP (recorded as a pure-ε
    release). Rates divide by the release's noisy persona counts (post-processing).

    Args:
        release: the private release.
        facts: per-user facts holding the outcome flags.
        labels: each user's persona under the released centroids.
        ledger: the budget ledger file.
        key: the ledger's signing key.
        user_ids: the users the release is computed from (charged like the fit).
        secret: the ledger's source secret (None: beside the ledger).
        epsilon: the release's ε.
        seed: random seed (tests only); None draws from the OS.
        now: the release time.
        note: recorded with the ledger entry.

    Returns:
        The cards with their outcome rates.

    Raises:
        BudgetExceededError: the budget cannot pay for the outcome rates.
        InputError: there is no ledger or no outcome.
    """
    if ledger is None or facts.outcome is None or facts.outcome_name is None:
        raise InputError("private outcome rates need a ledger and an outcome")
    share = OUTCOME_EPSILON_SHARE * epsilon
    book = PrivacyLedger(ledger, key, secret=secret)
    sketch = book.sketch(user_ids)
    source = release.source or book.resolve(sketch)
    book.check(source, epsilon=share, delta=0.0, mechanism="other", sketch=sketch)
    k = len(release.cards)
    rng = np.random.default_rng(secrets.randbits(128) if seed is None else seed)
    hits = np.bincount(labels[facts.outcome], minlength=k)[:k].astype(np.float64)
    noisy = hits + rng.laplace(0.0, 1.0 / share, k)
    book.spend(source, epsilon=share, delta=0.0, mechanism="other",
               note=f"{note} outcome rates", now=now, sketch=sketch)
    sizes = np.clip(np.asarray(release.counts[:k], dtype=np.float64), 1.0, None)
    population = float(np.clip(noisy.sum() / sizes.sum(), 0.0, 1.0))
    cards = []
    for card, count, size in zip(release.cards, noisy, sizes, strict=True):
        rate = OutcomeRate(name=facts.outcome_name, rate=float(np.clip(count / size, 0.0, 1.0)),
                           population=population, noised=True)
        cards.append(card.model_copy(update={
            "outcome": rate, "description": f"{card.description} {outcome_sentence(rate)}"}))
    return tuple(cards)
