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

Drift gate: a persona whose centroid moves by more than ``threshold`` times
the median distance between the previous centroids, or whose share changes by
more than ``threshold`` relative to its previous share, or any vanished
persona, marks the new version *needs review*. It is signed but written with a
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

__all__ = [
    "REVIEW_MARKER",
    "DriftReport",
    "PersonaAggregates",
    "RefitPrivacy",
    "RefitResult",
    "approve_bundle",
    "noisy_aggregates",
    "refit_bundle",
    "write_refit",
]

F64 = npt.NDArray[np.float64]
REVIEW_MARKER = "NEEDS_REVIEW"


@dataclass(frozen=True)
class PersonaAggregates:
    """Per-persona sums of contributions in the model's transformed space.

    Attributes:
        counts: contributions per persona index, shape (k,).
        sums: per persona, the sum of contributed vectors, shape (k, d).
        sumsq: per persona, the sum of squared components, shape (k, d).
    """

    counts: F64
    sums: F64
    sumsq: F64


@dataclass(frozen=True)
class DriftReport:
    """What moved between two versions, and the gate's verdict."""

    ids: tuple[str, ...]
    moves: tuple[float, ...]
    shares_before: tuple[float, ...]
    shares_after: tuple[float, ...]
    vanished: tuple[str, ...]
    threshold: float
    needs_review: bool

    def to_markdown(self, before: int, after: int) -> str:
        """A readable diff for the reviewer.

        Args:
            before: the previous version.
            after: the new version.

        Returns:
            Markdown text.
        """
        verdict = "NEEDS REVIEW" if self.needs_review else "within threshold: published"
        lines = [f"# Drift v{before} → v{after}: {verdict}", "",
                 f"Threshold: {self.threshold:.0%} (centroid move relative to the median distance"
                 " between personas; share change relative to the previous share).", "",
                 "| persona | centroid move | share before | share after | flag |",
                 "| --- | ---: | ---: | ---: | --- |"]
        for pid, move, s0, s1 in zip(self.ids, self.moves, self.shares_before,
                                     self.shares_after, strict=True):
            flag = "moved" if move > self.threshold else ""
            if s0 > 0 and abs(s1 - s0) / s0 > self.threshold:
                flag = (flag + " share").strip()
            lines.append(f"| {pid} | {move:.1%} | {s0:.1%} | {s1:.1%} | {flag} |")
        lines += [f"| {pid} | vanished (< k-min contributions) | | | vanished |"
                  for pid in self.vanished]
        return "\n".join(lines) + "\n"


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


def _drift(previous: Manifest, old: F64, new: F64, keep: npt.NDArray[np.bool_],
           shares: F64, threshold: float) -> DriftReport:
    """Relative centroid moves and share changes of the surviving personas."""
    gaps = np.linalg.norm(old[:, None, :] - old[None, :, :], axis=2)
    reference = float(np.median(gaps[np.triu_indices(len(old), 1)])) or 1.0
    moves = np.linalg.norm(new - old[keep], axis=1) / reference
    before = np.array([previous.personas[i].share for i in np.flatnonzero(keep)])
    changes = np.abs(shares - before) / np.maximum(before, 1e-12)
    vanished = tuple(previous.personas[i].id for i in np.flatnonzero(~keep))
    review = bool((moves > threshold).any() or (changes > threshold).any() or vanished)
    return DriftReport(tuple(previous.personas[i].id for i in np.flatnonzero(keep)),
                       tuple(moves.tolist()), tuple(before.tolist()), tuple(shares.tolist()),
                       vanished, threshold, review)


@dataclass(frozen=True)
class RefitPrivacy:
    """Differential privacy for a refit: Gaussian noise on per-persona counts and sums.

    One contribution changes one persona's count by 1 and its sum, centred on the
    middle of the model-space bounds, by a vector of L2 norm at most
    ``R = ||(high - low) / 2||``. With ``μ = gaussian_mu(ε, δ)`` split evenly
    (``1/sigma_c² = R²/sigma_s² = μ²/2``) the release of all counts and sums is μ-GDP,
    hence (ε, δ)-DP per contribution; a device contributing m times in the
    window is protected at group size m.
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
    mu = gaussian_mu(privacy.epsilon, privacy.delta)
    sigma_count = math.sqrt(2.0) / mu
    sigma_sum = math.sqrt(2.0) * float(np.linalg.norm(half)) / mu
    rng = np.random.default_rng(secrets.randbits(128) if privacy.seed is None else privacy.seed)
    counts = np.asarray(aggregates.counts, dtype=np.float64)
    centred = np.asarray(aggregates.sums, dtype=np.float64) - counts[:, None] * middle
    noisy_counts = counts + rng.normal(0.0, sigma_count, size=counts.shape)
    noisy_centred = centred + rng.normal(0.0, sigma_sum, size=centred.shape)
    means = np.clip(noisy_centred / np.maximum(noisy_counts, 1.0)[:, None] + middle,
                    bounds[0], bounds[1])
    return PersonaAggregates(noisy_counts, means * np.maximum(noisy_counts, 1.0)[:, None],
                             np.full(centred.shape, np.nan))


def refit_bundle(previous: Manifest, aggregates: PersonaAggregates, key: Ed25519PrivateKey, *,
                 k_min: int = 10, threshold: float = 0.15, expires_days: float = 90.0,
                 now: datetime | None = None, privacy: RefitPrivacy | None = None) -> RefitResult:
    """Refit a model from collector aggregates and sign version ``previous.version + 1``.

    Args:
        previous: the verified manifest of the version devices assigned with.
        aggregates: per-persona sums of contributions made with that version.
        key: the bundle signing key.
        k_min: personas with fewer contributions are not released.
        threshold: the drift gate (0.15 = 15 %).
        expires_days: validity of the new version in days.
        now: creation time (default: the system clock).
        privacy: with a value, noise the counts and sums first (k-min then
            applies to noisy counts; spend the budget before publishing).

    Returns:
        The signed bundle files, its manifest and the drift report.

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
    if privacy is not None:
        noisy = noisy_aggregates(previous, PersonaAggregates(counts, sums, sumsq), privacy)
        counts, sums, sumsq = noisy.counts, noisy.sums, noisy.sumsq
    keep = counts >= k_min
    if keep.sum() < 2:
        raise InputError(f"only {int(keep.sum())} persona(s) have >= {k_min} contributions;"
                         " wait for more devices to sync before refitting")
    center, scale = np.asarray(params.center), np.asarray(params.scale)
    means = sums[keep] / counts[keep, None]
    new = (means - center) * scale
    shares = counts[keep] / counts[keep].sum()
    drift = _drift(previous, old, new, keep, shares, threshold)
    cards = _cards(previous, means, counts[keep], sums[keep], drift)
    assigner = params.model_copy(update={"centroids": tuple(tuple(c) for c in new.tolist())})
    fields = _manifest_fields(previous, cards, assigner, counts[keep], sums[keep], sumsq[keep],
                              drift, k_min, expires_days, now or datetime.now(UTC))
    if privacy is not None:
        fields["privacy"] = fields["privacy"].model_copy(update={  # type: ignore[attr-defined]
            "epsilon": privacy.epsilon, "delta": privacy.delta,
            "mechanism": "gaussian: noisy per-persona counts and centred sums (one Lloyd step)",
            "notes": ("neighbours: add or remove one contribution", "k-min applied to noisy counts",
                      "sums of squares are not released")})
        fields["metrics"] = {**fields["metrics"], "inertia": None,  # type: ignore[dict-item]
                             "n_users": max(0, round(float(counts[keep].sum())))}
    version = previous.version + 1
    onnx_bytes = build_onnx(assigner, model_id=previous.model_id, version=version)
    payload = {MODEL_NAME: onnx_bytes,
               "cards.md": cards_markdown(cards, f"{previous.model_id} v{version} personas").encode(),
               "cards.json": ("[" + ",".join(c.model_dump_json() for c in cards) + "]").encode()}
    files = sign_manifest(fields, payload, key)
    return RefitResult(files, parse_manifest(files[MANIFEST_NAME]), drift)


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
        "privacy": previous.privacy.model_copy(update={
            "k_min": k_min, "suppressed": tuple(f"{pid}: fewer than {k_min} contributions"
                                                for pid in drift.vanished)}),
        "metrics": {"n_users": int(counts.sum()), "k": len(new),
                    "k_selection": f"refit of v{previous.version} from collector aggregates",
                    "silhouette": None, "davies_bouldin": None, "stability_ari": None,
                    "inertia": inertia},
        "lineage": {"source": "collector aggregates", "previous_version": previous.version,
                    "contributions": int(counts.sum()),
                    "review": "needs review" if drift.needs_review else "within drift threshold"},
        "id_map": {pid: pid for pid in drift.ids},
    }


def write_refit(result: RefitResult, out: Path) -> Path:
    """Write a refit's bundle folder and zip, its drift report and, if held, the review marker.

    The marker and ``drift.md`` sit beside the bundle folder (``OUT.NEEDS_REVIEW``,
    ``OUT.drift.md``): inside it, they would break the bundle's exact file set.

    Args:
        result: the refit.
        out: the bundle folder to create.

    Returns:
        The bundle folder.
    """
    from edgepersona.trainer.release.export import write_bundle, zip_bundle

    write_bundle(out, result.files)
    report = result.drift.to_markdown(result.manifest.version - 1, result.manifest.version)
    out.with_name(f"{out.name}.drift.md").write_text(report, encoding="utf-8")
    if result.drift.needs_review:
        out.with_name(f"{out.name}.{REVIEW_MARKER}").write_text(report, encoding="utf-8")
    zip_bundle(result.files, out.with_name(f"{out.name}.zip"))
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
