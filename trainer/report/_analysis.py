"""The numbers behind the persona report: feature profiles, a 2-D map, version changes.

Centroids live in the weighted standardised space of the assigner: for feature
``j``, ``c_j = (t_j - center_j) * scale_j`` with ``scale_j = sqrt(w_j) / std_j``
(``t`` the clipped, transformed value, ``w`` the normalised clustering weight;
see :mod:`edgepersona.sdk.protocol.assign`). So ``c_j / sqrt(w_j) = (t_j - center_j) /
std_j`` is the persona's z-score on feature ``j``: how many population standard
deviations it sits above (or below) the population average.

Versions are compared in the previous version's space, as the drift gate of
:mod:`edgepersona.trainer.release.refit` does: a centroid is mapped back to the
transformed space (``c / scale + center``) and standardised with the previous
version's centre and scale, and a move is measured relative to the median
distance between the previous version's centroids. For a refit (same centre and
scale) the numbers are exactly the drift report's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import Manifest

__all__ = [
    "CentroidMap",
    "DriftSummary",
    "PersonaChange",
    "VersionChanges",
    "axis_phrase",
    "centroid_map",
    "compare_versions",
    "feature_z_scores",
    "parse_drift_markdown",
]

F64 = npt.NDArray[np.float64]


def feature_z_scores(manifest: Manifest) -> F64:
    """Each persona's z-score per feature, from its centroid.

    Args:
        manifest: a verified manifest.

    Returns:
        Shape (k, d): centroid coordinates divided by ``sqrt(normalised weight)``.
    """
    weights = np.asarray(manifest.spec.normalised_weights(), dtype=np.float64)
    return np.asarray(manifest.assigner.centroids, dtype=np.float64) / np.sqrt(weights)


@dataclass(frozen=True)
class CentroidMap:
    """Personas projected on the two directions along which they differ most.

    Attributes:
        coords: shape (k, 2), the origin is the share-weighted average (the average user).
        explained: the fraction of the spread between personas each axis shows.
        loadings: shape (2, d), each axis as a unit direction over the features.
    """

    coords: F64
    explained: tuple[float, float]
    loadings: F64


def centroid_map(z: F64, shares: F64) -> CentroidMap:
    """Principal components of the standardised centroids (numpy SVD).

    Args:
        z: z-score profiles, shape (k, d).
        shares: each persona's share of users, shape (k,).

    Returns:
        The 2-D map; axes beyond the data's rank (k = 2, or one feature) are zero.
    """
    weights = shares / shares.sum() if shares.sum() > 0 else np.full(len(z), 1 / len(z))
    centred = z - weights @ z
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    for axis in range(len(vt)):  # a fixed sign: the largest loading of each axis is positive
        if vt[axis, np.argmax(np.abs(vt[axis]))] < 0:
            vt[axis] = -vt[axis]
    total = float((singular**2).sum())
    loadings = np.zeros((2, z.shape[1]))
    explained = [0.0, 0.0]
    for axis in range(min(2, len(singular))):
        if total > 0 and singular[axis] > 1e-12 * max(1.0, float(singular[0])):
            loadings[axis] = vt[axis]
            explained[axis] = float(singular[axis] ** 2 / total)
    return CentroidMap(centred @ loadings.T, (explained[0], explained[1]), loadings)


def axis_phrase(loadings: F64, labels: list[str], top: int = 2) -> str:
    """The features that drive one map axis, e.g. ``higher orders, lower recency``.

    Args:
        loadings: one axis of :attr:`CentroidMap.loadings`.
        labels: feature labels, in spec order.
        top: how many features to name.

    Returns:
        A short phrase (empty when the axis is flat).
    """
    order = [j for j in np.argsort(-np.abs(loadings), kind="stable")[:top] if abs(loadings[j]) > 0.2]
    return ", ".join(f"{'higher' if loadings[j] > 0 else 'lower'} {labels[j]}" for j in order)


@dataclass(frozen=True)
class PersonaChange:
    """How one persona of this version relates to the previous version.

    Attributes:
        persona_id: the persona's id in this version.
        name: its name in this version.
        previous_id: the persona it continues (refit) or sits closest to (fresh fit).
        share_before: the previous persona's share, if there is one.
        share_after: the share in this version.
        move: the centroid move relative to the median distance between the
            previous personas (None when the versions cannot be compared).
    """

    persona_id: str
    name: str
    previous_id: str | None
    share_before: float | None
    share_after: float
    move: float | None


@dataclass(frozen=True)
class VersionChanges:
    """Everything that changed between two versions of one model.

    Attributes:
        before: the previous version number.
        after: this version number.
        carried_ids: ids were carried over by the refit (``id_map``); if False,
            this version was fitted afresh and personas are matched by distance.
        comparable: both versions have the same features and transforms, so
            centroids can be compared.
        rows: one entry per persona of this version, in index order.
        gone: (id, name, previous share) of previous personas nobody continues.
    """

    before: int
    after: int
    carried_ids: bool
    comparable: bool
    rows: tuple[PersonaChange, ...]
    gone: tuple[tuple[str, str, float], ...]


def _in_previous_space(previous: Manifest, manifest: Manifest) -> tuple[F64, F64]:
    """Both versions' centroids standardised with the previous version's centre and scale."""
    old = np.asarray(previous.assigner.centroids, dtype=np.float64)
    params = manifest.assigner
    transformed = (np.asarray(params.centroids) / np.asarray(params.scale)
                   + np.asarray(params.center))
    new = (transformed - np.asarray(previous.assigner.center)) * np.asarray(previous.assigner.scale)
    return old, new


def _comparable(previous: Manifest, manifest: Manifest) -> bool:
    """Same features, in the same order, with the same transforms."""
    return (previous.spec.names == manifest.spec.names
            and previous.assigner.log1p == manifest.assigner.log1p)


def compare_versions(previous: Manifest, manifest: Manifest) -> VersionChanges:
    """Match this version's personas to the previous version's and measure the changes.

    Args:
        previous: the previous version's verified manifest (same model id).
        manifest: this version's verified manifest.

    Returns:
        The changes; with ``id_map`` (a refit) personas are matched by id, else
        each persona is matched to the nearest previous centroid.
    """
    comparable = _comparable(previous, manifest)
    old_index = {p.id: p.index for p in previous.personas}
    distances: F64 | None = None
    nearest: list[int | None] = [None] * len(manifest.personas)
    if comparable:
        old, new = _in_previous_space(previous, manifest)
        gaps = np.linalg.norm(old[:, None, :] - old[None, :, :], axis=2)
        reference = float(np.median(gaps[np.triu_indices(len(old), 1)])) or 1.0
        distances = np.linalg.norm(new[:, None, :] - old[None, :, :], axis=2) / reference
        nearest = [int(i) for i in distances.argmin(axis=1)]
    if manifest.id_map:
        successor = {new_id: old_id for old_id, new_id in manifest.id_map.items()}
        matched = [old_index.get(successor.get(p.id, "")) for p in manifest.personas]
    else:
        matched = nearest
    rows = []
    for card, match in zip(manifest.personas, matched, strict=True):
        before = previous.personas[match] if match is not None else None
        move = (float(distances[card.index, match])
                if distances is not None and match is not None else None)
        rows.append(PersonaChange(card.id, card.name, before.id if before else None,
                                  before.share if before else None, card.share, move))
    continued = {r.previous_id for r in rows}
    gone = tuple((p.id, p.name, p.share) for p in previous.personas if p.id not in continued)
    return VersionChanges(previous.version, manifest.version, bool(manifest.id_map), comparable,
                          tuple(rows), gone)


@dataclass(frozen=True)
class DriftSummary:
    """The drift gate's report (``<bundle>.drift.md``), read back into parts.

    Attributes:
        verdict: the verdict as written (e.g. ``NEEDS REVIEW``), or empty if unknown.
        needs_review: the gate held the version back for a person to approve.
        threshold: the gate's threshold as a fraction, if stated.
        notes: the other prose lines.
        headers: the table's column headings.
        rows: the table's cells.
    """

    verdict: str
    needs_review: bool
    threshold: float | None
    notes: tuple[str, ...]
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _cells(line: str) -> tuple[str, ...]:
    """The cells of one Markdown table row."""
    return tuple(cell.strip() for cell in line.strip().strip("|").split("|"))


def parse_drift_markdown(text: str) -> DriftSummary:
    """Read the drift gate's Markdown (see ``DriftReport.to_markdown``).

    Unknown lines are kept as notes, so a report in another layout still shows.

    Args:
        text: the Markdown text.

    Returns:
        Its verdict, threshold, notes and table.
    """
    verdict, notes, table = "", [], []
    for line in (raw.strip() for raw in text.splitlines()):
        if line.startswith("# ") and not verdict:
            verdict = line[2:].rsplit(": ", 1)[-1].strip() if ": " in line else line[2:].strip()
        elif line.startswith("|"):
            if not re.fullmatch(r"\|[\s:|-]+\|", line):
                table.append(_cells(line))
        elif line:
            notes.append(line)
    found = re.search(r"Threshold:\s*([0-9.]+)\s*%", text)
    return DriftSummary(verdict, "NEEDS REVIEW" in verdict.upper(),
                        float(found.group(1)) / 100 if found else None, tuple(notes),
                        table[0] if table else (), tuple(table[1:]))
