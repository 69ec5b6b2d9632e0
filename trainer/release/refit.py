"""Dynamic personas: refit from collector aggregates, keep ids stable, gate drift.

Devices assign with version ``v`` and contribute their features in the model's
bounded space ``t = transform(clip(x))`` (never raw values). The collector
keeps per-persona count ``n``, sum ``S`` and sum of squares ``Q`` of ``t``.
A refit is one Lloyd step run by the population: each persona's new centroid
is the mean of its members, ``(S / n - center) * scale``, in the previous
version's standardised space (center and scale are kept, so distances and ids
stay comparable between versions).

Stable ids: a persona's new centroid comes from its own members, so its id
carries over (``id_map`` maps every surviving id to itself). A persona with
fewer than ``k_min`` contributions is not released in the new version and is
reported as vanished; this refit never invents personas (a fresh
``edgepersona train`` does).

Aggregates: plain per-persona sums (:class:`PersonaAggregates`), or daily cells
of several versions decayed and bounded per day
(:mod:`edgepersona.trainer.release.refit_cells`), which also carry the evidence
the drift report explains moves with.

Convergence: every refit records its moves in the manifest's lineage
(``history``), so the drift report shows the largest move per round;
:meth:`RefitPlan.converged` says when a round moved nothing beyond a
threshold, and the schedule then proposes no version.

Drift gate (:mod:`edgepersona.trainer.release.refit_drift`): a persona whose
centroid moves by more than ``threshold`` times the median distance between
the previous centroids, or whose share changes by more than ``threshold``
relative to its previous share, any vanished persona, or a concentrated move
(few contributions moving a lot) marks the new version *needs review*. It is signed but written with a
``NEEDS_REVIEW`` marker and a readable ``drift.md``; the collector does not
serve it until ``edgepersona approve`` removes the marker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import InputError, Manifest, PersonaCard
from edgepersona.sdk.protocol.assign import model_space
from edgepersona.sdk.protocol.bundle import MANIFEST_NAME, MODEL_NAME
from edgepersona.sdk.protocol.manifest import AssignerParams, parse_manifest
from edgepersona.trainer.release.cards import cards_from_stats, cards_markdown
from edgepersona.trainer.release.export import sign_manifest
from edgepersona.trainer.release.export_onnx import build_onnx
from edgepersona.trainer.release.refit_cells import PersonaAggregates, WeightedAggregates
from edgepersona.trainer.release.refit_drift import (
    DriftReport,
    history_entry,
    measure_drift,
    spread_of,
)

__all__ = [
    "REVIEW_MARKER",
    "DriftReport",
    "PersonaAggregates",
    "RefitPlan",
    "RefitPrivacy",
    "RefitResult",
    "RefitSpend",
    "approve_bundle",
    "noisy_aggregates",
    "plan_refit",
    "refit_bundle",
    "sign_refit",
    "write_refit",
]

F64 = npt.NDArray[np.float64]
REVIEW_MARKER = "NEEDS_REVIEW"
NON_PRIVATE = ("non-private release: exact aggregates, no noise added and no privacy budget"
               " spent (k-min still applies)")


@dataclass(frozen=True)
class RefitResult:
    """The signed new version and its drift report."""

    files: Mapping[str, bytes]
    manifest: Manifest
    drift: DriftReport


def _typical_raw(previous: Manifest, t: F64) -> F64:
    """Map transformed-space values back to raw units (inverse of log1p where used)."""
    raw = np.array(t, dtype=np.float64)
    mask = np.asarray(previous.assigner.log1p, dtype=bool)
    raw[..., mask] = np.expm1(raw[..., mask])
    return raw


@dataclass(frozen=True)
class RefitPrivacy:
    """Differential privacy for a refit: Gaussian noise on per-persona counts and sums.

    The sums are noised in the model's *standardised* space (``(t - middle) * scale``,
    the space the centroids and the drift gate measure in), so each feature gets
    noise in proportion to how much it counts in a distance, not to its raw range.
    One contribution changes one persona's count by 1 and its standardised, centred
    sum by a vector of L2 norm at most ``R = ||(high - low) / 2 * scale||``. With
    ``μ = gaussian_mu(ε, δ)`` split evenly (``1/sigma_c² = R²/sigma_s² = μ²/2``) the
    release of all counts and sums is μ-GDP, hence (ε, δ)-DP per contribution (the
    way back to model units is post-processing); a device contributing m times in
    the window is protected at group size m. Decayed aggregates weigh every
    contribution by at most 1, so the same calibration holds for them.
    """

    epsilon: float
    delta: float = 1e-6
    seed: int | None = None


def noisy_aggregates(previous: Manifest, aggregates: PersonaAggregates,
                     privacy: RefitPrivacy) -> PersonaAggregates:
    """Counts and sums with calibrated Gaussian noise (sums of squares are not released).

    Args:
        previous: the manifest whose bounds bound each contribution.
        aggregates: the exact aggregates.
        privacy: ε, δ and an optional seed (tests only).

    Returns:
        Noisy counts and sums; ``sumsq`` is all NaN (never released).
    """
    import secrets

    from edgepersona.trainer.privacy.accounting import gaussian_mu

    params = previous.assigner
    bounds = model_space(params, np.array([params.lower, params.upper], dtype=np.float64))
    middle, half = (bounds[0] + bounds[1]) / 2.0, (bounds[1] - bounds[0]) / 2.0
    scale = np.asarray(params.scale, dtype=np.float64)
    mu = gaussian_mu(privacy.epsilon, privacy.delta)
    sigma_count = math.sqrt(2.0) / mu
    sigma_sum = math.sqrt(2.0) * float(np.linalg.norm(half * scale)) / mu  # standardised units
    rng = np.random.default_rng(secrets.randbits(128) if privacy.seed is None else privacy.seed)
    counts = np.asarray(aggregates.counts, dtype=np.float64)
    centred = np.asarray(aggregates.sums, dtype=np.float64) - counts[:, None] * middle
    noisy_counts = counts + rng.normal(0.0, sigma_count, size=counts.shape)
    noisy_centred = centred + rng.normal(0.0, sigma_sum, size=centred.shape) / scale
    means = np.clip(noisy_centred / np.maximum(noisy_counts, 1.0)[:, None] + middle,
                    bounds[0], bounds[1])
    return PersonaAggregates(noisy_counts, means * np.maximum(noisy_counts, 1.0)[:, None],
                             np.full(centred.shape, np.nan))


@dataclass(frozen=True)
class RefitSpend:
    """The ledger entry that paid for a private refit, recorded in its manifest's lineage.

    Attributes:
        source: the ledger source it was charged to (the model line's people).
        ledger_id: the SHA-256 of the ledger's entry 0.
        seq: the spend's sequence number.
        head: the spend's SHA-256 (the ledger head right after it).
    """

    source: str
    ledger_id: str
    seq: int
    head: str


@dataclass(frozen=True)
class RefitPlan:
    """A measured refit, not yet signed: the new centroids, shares and drift report.

    Attributes:
        previous: the manifest devices assigned with.
        keep: which previous personas have at least k-min contributions.
        counts: the survivors' (weighted, maybe noisy) counts.
        sums: their sums (model space).
        sumsq: their sums of squares (NaN for a private refit).
        centroids: their new centroids (standardised space).
        drift: the drift report.
        k_min: the k-min applied.
        privacy: the refit's privacy, if any.
        lineage: what the new manifest's lineage adds (weighting, spread, history).
    """

    previous: Manifest
    keep: npt.NDArray[np.bool_]
    counts: F64
    sums: F64
    sumsq: F64
    centroids: F64
    drift: DriftReport
    k_min: int
    privacy: RefitPrivacy | None
    lineage: dict[str, str | int | float | None]

    def converged(self, min_move: float) -> bool:
        """Whether this round moved nothing beyond ``min_move`` (no version worth proposing).

        Args:
            min_move: the largest centroid move (relative, as the drift gate) and
                share change (absolute) that still counts as "nothing moved".

        Returns:
            True when every move and share change is below ``min_move`` and no
            persona vanished.
        """
        drift = self.drift
        shares = np.abs(np.subtract(drift.shares_after, drift.shares_before))
        return not drift.vanished and drift.max_move < min_move and \
            float(shares.max(initial=0.0)) < min_move


def plan_refit(previous: Manifest, aggregates: PersonaAggregates, *, k_min: int = 10,
               threshold: float = 0.15, privacy: RefitPrivacy | None = None,
               weighting: str = "") -> RefitPlan:
    """Measure a refit: one Lloyd step from the aggregates, and its drift report.

    Args:
        previous: the verified manifest of the version devices assigned with.
        aggregates: per-persona sums of contributions (weighted aggregates from
            :func:`~edgepersona.trainer.release.refit_cells.weigh_cells` also
            explain the drift and apply k-min to raw contributions).
        k_min: personas with fewer contributions are not released.
        threshold: the drift gate (0.15 = 15 %).
        privacy: with a value, noise the counts and sums first (k-min then
            applies to noisy counts; spend the budget before publishing).
        weighting: how the days were weighed, in words (for the report).

    Returns:
        The plan; :func:`sign_refit` turns it into a bundle.

    Raises:
        InputError: aggregates of the wrong shape, or fewer than two personas
            with at least ``k_min`` contributions.
    """
    params = previous.assigner
    old = np.asarray(params.centroids)
    counts, sums, sumsq = (np.asarray(a, dtype=np.float64) for a in
                           (aggregates.counts, aggregates.sums, aggregates.sumsq))
    if counts.shape != (len(old),) or sums.shape != old.shape or sumsq.shape != old.shape:
        raise InputError(f"aggregates must cover {len(old)} personas x {old.shape[1]} features"
                         f" of v{previous.version}; got counts {counts.shape}, sums {sums.shape}")
    evidence = aggregates if isinstance(aggregates, WeightedAggregates) else None
    raw = evidence.contributions if evidence is not None else counts
    if privacy is not None:
        noisy = noisy_aggregates(previous, PersonaAggregates(counts, sums, sumsq), privacy)
        counts, sums, sumsq, raw, evidence = noisy.counts, noisy.sums, noisy.sumsq, noisy.counts, None
    keep = raw >= k_min
    if keep.sum() < 2:
        raise InputError(f"only {int(keep.sum())} persona(s) have >= {k_min} contributions;"
                         " wait for more devices to sync before refitting")
    center, scale = np.asarray(params.center), np.asarray(params.scale)
    new = (sums[keep] / counts[keep, None] - center) * scale
    drift = measure_drift(previous, new, keep, counts[keep] / counts[keep].sum(), threshold,
                          evidence, weighting)
    lineage: dict[str, str | int | float | None] = {"weighting": weighting or None}
    if evidence is not None:
        lineage["spread"] = spread_of(evidence, scale, [c.id for c in previous.personas], keep)
    return RefitPlan(previous, keep, counts[keep], sums[keep], sumsq[keep], new, drift, k_min,
                     privacy, lineage)


def sign_refit(plan: RefitPlan, key: Ed25519PrivateKey, *, expires_days: float = 90.0,
               now: datetime | None = None, spend: RefitSpend | None = None) -> RefitResult:
    """Sign a planned refit as version ``previous.version + 1``.

    A refit without privacy records no ε (its notes say it is a non-private
    release), whatever the previous version spent. A private refit should be
    spent first (:func:`~edgepersona.trainer.release.refit_ledger.spend_refit`):
    its ``spend`` is then recorded like a private train's (``lineage.source``,
    ``ledger_id``, ``ledger_seq``, ``ledger_head``), so the audit holds the
    ledger to it.

    Args:
        plan: the measured refit.
        key: the bundle signing key.
        expires_days: validity of the new version in days.
        now: creation time (default: the system clock).
        spend: the ledger entry that paid for a private plan.

    Returns:
        The signed bundle files, its manifest and the drift report.

    Raises:
        InputError: a spend given for a plan without privacy.
    """
    if spend is not None and plan.privacy is None:
        raise InputError("a ledger spend was given for a non-private refit; plan it with privacy")
    previous, drift, privacy = plan.previous, plan.drift, plan.privacy
    now = now or datetime.now(UTC)
    means = plan.sums / plan.counts[:, None]
    cards = _cards(previous, means, plan.counts, plan.sums, drift)
    assigner = previous.assigner.model_copy(update={
        "centroids": tuple(tuple(c) for c in plan.centroids.tolist())})
    fields = _manifest_fields(previous, cards, assigner, plan.counts, plan.sums, plan.sumsq,
                              drift, plan.k_min, expires_days, now)
    version = previous.version + 1
    fields["lineage"] = {**fields["lineage"], **plan.lineage,  # type: ignore[dict-item]
                         "history": history_entry(previous, drift, version, now,
                                                  drift.contributions or max(0, round(float(
                                                      plan.counts.sum()))))}
    if privacy is not None:
        fields["privacy"] = fields["privacy"].model_copy(update={  # type: ignore[attr-defined]
            "epsilon": privacy.epsilon, "delta": privacy.delta,
            "mechanism": "gaussian: noisy per-persona counts and centred sums (one Lloyd step)",
            "notes": ("neighbours: add or remove one contribution", "k-min applied to noisy counts",
                      "sums of squares are not released")})
        if spend is not None:
            fields["lineage"] = {**fields["lineage"], "source": spend.source,  # type: ignore[dict-item]
                                 "ledger_id": spend.ledger_id, "ledger_seq": spend.seq,
                                 "ledger_head": spend.head}
        fields["metrics"] = {**fields["metrics"], "inertia": None,  # type: ignore[dict-item]
                             "n_users": max(0, round(float(plan.counts.sum())))}
    onnx_bytes = build_onnx(assigner, model_id=previous.model_id, version=version)
    payload = {MODEL_NAME: onnx_bytes,
               "cards.md": cards_markdown(cards, f"{previous.model_id} v{version} personas").encode(),
               "cards.json": ("[" + ",".join(c.model_dump_json() for c in cards) + "]").encode()}
    files = sign_manifest(fields, payload, key)
    return RefitResult(files, parse_manifest(files[MANIFEST_NAME]), drift)


def refit_bundle(previous: Manifest, aggregates: PersonaAggregates, key: Ed25519PrivateKey, *,
                 k_min: int = 10, threshold: float = 0.15, expires_days: float = 90.0,
                 now: datetime | None = None, privacy: RefitPrivacy | None = None,
                 weighting: str = "") -> RefitResult:
    """Refit a model from collector aggregates and sign version ``previous.version + 1``.

    Args:
        previous: the verified manifest of the version devices assigned with.
        aggregates: per-persona sums of contributions made with that version
            (or weighted aggregates of several versions' daily cells).
        key: the bundle signing key.
        k_min: personas with fewer contributions are not released.
        threshold: the drift gate (0.15 = 15 %).
        expires_days: validity of the new version in days.
        now: creation time (default: the system clock).
        privacy: with a value, noise the counts and sums first (k-min then
            applies to noisy counts; spend the budget before publishing).
        weighting: how the days were weighed, in words (for the report).

    Returns:
        The signed bundle files, its manifest and the drift report.

    Raises:
        InputError: aggregates of the wrong shape, or fewer than two personas
            with at least ``k_min`` contributions.
    """
    plan = plan_refit(previous, aggregates, k_min=k_min, threshold=threshold, privacy=privacy,
                      weighting=weighting)
    return sign_refit(plan, key, expires_days=expires_days, now=now)


def _cards(previous: Manifest, means: F64, counts: F64, sums: F64,
           drift: DriftReport) -> tuple[PersonaCard, ...]:
    """Persona cards from the aggregates, in the previous version's standardised units."""
    params = previous.assigner
    std = np.sqrt(np.asarray(previous.spec.normalised_weights())) / np.asarray(params.scale)
    population_t = sums.sum(axis=0) / counts.sum()
    return cards_from_stats(previous.spec, counts / counts.sum(),
                            (means - np.asarray(params.center)) / std,
                            _typical_raw(previous, means), _typical_raw(previous, population_t),
                            list(drift.ids))


def _manifest_fields(previous: Manifest, cards: tuple[PersonaCard, ...], assigner: AssignerParams,
                     counts: F64, sums: F64, sumsq: F64, drift: DriftReport, k_min: int,
                     expires_days: float, now: datetime) -> dict[str, object]:
    """Everything the new manifest says besides its file digests."""
    new = np.asarray(assigner.centroids)
    within = (sumsq - sums**2 / counts[:, None]) * np.asarray(assigner.scale) ** 2
    inertia = float(np.maximum(within, 0.0).sum()) if np.isfinite(within).all() else None
    return {
        "model_id": previous.model_id, "version": previous.version + 1, "created_at": now,
        "expires_at": now + timedelta(days=expires_days), "spec": previous.spec,
        "personas": cards, "assigner": assigner,
        "privacy": previous.privacy.model_copy(update={  # nothing of the previous spend
            "epsilon": None, "delta": None, "mechanism": None, "notes": (NON_PRIVATE,),
            "k_min": k_min, "suppressed": tuple(f"{pid}: fewer than {k_min} contributions"
                                                for pid in drift.vanished)}),
        "metrics": {"n_users": int(counts.sum()), "k": len(new),
                    "k_selection": f"refit of v{previous.version} from collector aggregates",
                    "silhouette": None, "davies_bouldin": None, "stability_ari": None,
                    "inertia": inertia},
        "lineage": {"source": _line_source(previous), "data": "collector aggregates",
                    "previous_version": previous.version,
                    "contributions": int(counts.sum()),
                    "review": "needs review" if drift.needs_review else "within drift threshold"},
        "id_map": {pid: pid for pid in drift.ids},
    }


def _line_source(previous: Manifest) -> str:
    """The model line's source label, carried from version to version (never a file name here)."""
    source = previous.lineage.get("source")
    return source if isinstance(source, str) and source else "collector aggregates"


def write_refit(result: RefitResult, out: Path) -> Path:
    """Write a refit's bundle folder and zip, its drift report and, if held, the review marker.

    The marker and ``drift.md`` sit beside the bundle folder (``OUT.NEEDS_REVIEW``,
    ``OUT.drift.md``): inside it, they would break the bundle's exact file set.
    The marker is written *first* and the folder and zip appear by rename, so a
    collector scanning the folder never sees a held version without its marker
    nor a half-written bundle.

    Args:
        result: the refit.
        out: the bundle folder to create.

    Returns:
        The bundle folder.
    """
    import os

    from edgepersona.trainer.release.export import write_bundle, zip_bundle

    report = result.drift.to_markdown(result.manifest.version - 1, result.manifest.version)
    if result.drift.needs_review:
        out.with_name(f"{out.name}.{REVIEW_MARKER}").write_text(report, encoding="utf-8")
    out.with_name(f"{out.name}.drift.md").write_text(report, encoding="utf-8")
    write_bundle(out, result.files)  # staged in a hidden folder, then renamed
    staging = out.with_name(f".{out.name}.zip.staging")  # not a served name (the shelf wants a letter first)
    zip_bundle(result.files, staging)
    os.replace(staging, out.with_name(f"{out.name}.zip"))
    return out


def approve_bundle(folder: Path) -> bool:
    """Approve a version that the drift gate held back (removes its marker).

    Args:
        folder: the bundle folder written by a refit.

    Returns:
        True if it was waiting for review, False if it was already approved.

    Raises:
        InputError: the folder is not a bundle.
    """
    if not (folder / MANIFEST_NAME).is_file():
        raise InputError(f"{folder} is not a bundle folder (no {MANIFEST_NAME})")
    marker = folder.parent / f"{folder.name}.{REVIEW_MARKER}"
    if not marker.exists():
        return False
    marker.unlink()
    return True
