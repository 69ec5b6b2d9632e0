"""The drift gate: what moved between two versions, why, and whether a person must look.

Moves are measured in the previous version's standardised space, relative to
the median distance between its personas (a move of 100 % is as far as two
typical personas are apart). For each persona that moved the report says:

* **which traits** moved (the features with the largest standardised change,
  in raw units, before → after);
* **how many contributions** over how many days stand behind it;
* **how concentrated** the move is, two ways:

  - *over days*: the share of the move that the single heaviest day carries
    (a burst on one day is suspicious when that share is also more than twice
    the day's share of the weight; a trend spreads over days);
  - *in numbers*: a persona whose share of contributions grew at least
    twofold in one round (a surge of newcomers);
  - *over contributions*: if a share ``f`` of contributions moves by a
    distance ``D`` while the rest stays, the mean moves by ``δ = f·D`` and the
    within-persona variance grows by ``f(1-f)·D²``, so
    ``f ≈ δ² / (δ² + Δvar)``. Many contributions moving a little give
    ``f ≈ 1`` (variance unchanged); a few moving a lot give a small ``f``.
    The movers then lie ``D = (δ² + Δvar) / δ`` from the old centre: more than
    three of the persona's spreads out is far outside its members.
    ``Δvar`` is measured against the spread the previous version recorded
    (``lineage.spread``), or, without one, the median daily spread (which only
    sees bursts). A private refit releases no spread, so it has no estimate.

A persona is *concentrated* when its move is beyond sampling noise (more than
three standard errors of its mean) and few contributions moved a lot, the
movers lie far outside the persona, one day carries most of the move, or its
share surged: check for forged contributions,
whatever the size of the move. Otherwise it is *steady* (moved under half the threshold) or
*broad* (many moved a little: behaviour changed). The gate holds the version
for review when a persona moves or changes share beyond the threshold,
vanishes, or moves in a concentrated way.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import Manifest
from edgepersona.sdk.protocol.assign import model_space
from edgepersona.trainer.release.refit_cells import WeightedAggregates

__all__ = [
    "CONCENTRATED_BELOW",
    "DriftReport",
    "PersonaDrift",
    "history_entry",
    "measure_drift",
    "recorded_history",
    "spread_of",
]

F64 = npt.NDArray[np.float64]
CONCENTRATED_BELOW = 0.25  # estimated share of contributions behind a move
TOP_DAY_ABOVE = 0.5  # share of a move carried by one day (with >= 3 days) ...
BURST_RATIO = 2.0  # ... and at least this many times that day's share of the weight
FAR_OUT_SPREADS = 3.0  # the movers would lie this many spreads from the old centre
SURGE_AT_LEAST = 2.0  # the persona's share of contributions grew this many times


@dataclass(frozen=True)
class PersonaDrift:
    """One persona's move, explained.

    Attributes:
        id: persona id.
        name: persona name (previous version).
        move: centroid move relative to the median persona gap.
        share_before: share in the previous version.
        share_after: share now.
        contributions: raw contributions behind the new centroid.
        days: days with contributions.
        top_day_share: share of the move carried by the heaviest day (None: < 3 days).
        concentration: estimated share of contributions behind the move (None: no estimate).
        kind: ``steady``, ``broad`` or ``concentrated``.
        traits: the features that moved most, in raw units.
        influence_bound: the most any 1 % of contributions could move it (same unit as ``move``).
        reach: how far out the movers would lie, in spreads of the persona before (None: no estimate).
    """

    id: str
    name: str
    move: float
    share_before: float
    share_after: float
    contributions: int
    days: int
    top_day_share: float | None
    concentration: float | None
    kind: str
    traits: tuple[str, ...]
    influence_bound: float
    reach: float | None = None

    def sentence(self, threshold: float) -> str:
        """The reviewer's line for this persona."""
        gate = "over" if self.move > threshold else "under"
        head = (f"**{self.id} · {self.name}** moved {self.move:.1%} ({gate} the {threshold:.0%} gate),"
                f" share {self.share_before:.1%} → {self.share_after:.1%}")
        evidence = f"{self.contributions:,} contributions over {self.days} day(s)"
        if self.kind == "steady":
            return f"{head}: steady ({evidence})."
        parts = [evidence]
        if self.concentration is not None:
            far = (f", lying ≈ {self.reach:.1f} spreads from its old centre"
                   if self.reach is not None else "")
            parts.append(f"the move is consistent with ≈ {self.concentration:.0%} of them moving{far}")
        if self.top_day_share is not None:
            parts.append(f"the heaviest day carries {self.top_day_share:.0%} of the move")
        if self.share_before > 0 and self.share_after >= SURGE_AT_LEAST * self.share_before:
            parts.append(f"its share of contributions grew {self.share_after / self.share_before:.1f}x")
        what = ("concentrated, few contributions moved a lot; check for forged contributions"
                " before approving" if self.kind == "concentrated"
                else "broad, many contributions moved a little; behaviour changed")
        traits = f" Traits: {'; '.join(self.traits)}." if self.traits else ""
        return (f"{head}: {what} ({', '.join(parts)}).{traits} Any 1% of contributions could move"
                f" it at most {self.influence_bound:.1%}.")


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
    personas: tuple[PersonaDrift, ...] = ()
    rounds: tuple[float, ...] = ()  # largest move of each refit so far, this one last
    weighting: str = ""
    contributions: int = 0

    @property
    def suspect(self) -> bool:
        """Whether any persona moved in a concentrated way (possible poisoning)."""
        return any(p.kind == "concentrated" for p in self.personas)

    @property
    def max_move(self) -> float:
        """The largest centroid move of this refit."""
        return max(self.moves, default=0.0)

    def verdict(self) -> str:
        """``within threshold: published`` or ``NEEDS REVIEW``."""
        return "NEEDS REVIEW" if self.needs_review else "within threshold: published"

    def reason(self) -> str:
        """Why the gate held the version, in words (empty when it passed)."""
        if not self.needs_review:
            return ""
        if self.suspect:
            return "concentrated move, few contributions moved a lot: possible poisoning"
        if self.vanished and self.max_move <= self.threshold:
            return "a persona vanished (fewer than k-min contributions)"
        return "broad drift, many contributions moved a little: behaviour changed"

    def to_markdown(self, before: int, after: int) -> str:
        """A readable diff for the reviewer.

        Args:
            before: the previous version.
            after: the new version.

        Returns:
            Markdown text.
        """
        lines = [f"# Drift v{before} → v{after}: {self.verdict()}", ""]
        if self.needs_review:
            lines += [f"Why held: {self.reason()}.", ""]
        lines += [
                 f"Threshold: {self.threshold:.0%} (centroid move relative to the median distance"
                 " between personas; share change relative to the previous share).", ""]
        if self.weighting:
            lines += [f"Weighting: {self.weighting}; {self.contributions:,} contributions.", ""]
        if len(self.rounds) > 1:
            lines += ["Convergence (largest move per refit): "
                      + " → ".join(f"{m:.1%}" for m in self.rounds) + " (this refit last).", ""]
        lines += ["| persona | centroid move | share before | share after | flag |",
                  "| --- | ---: | ---: | ---: | --- |"]
        kinds = {p.id: p.kind for p in self.personas}
        for pid, move, s0, s1 in zip(self.ids, self.moves, self.shares_before,
                                     self.shares_after, strict=True):
            flag = "moved" if move > self.threshold else ""
            if s0 > 0 and abs(s1 - s0) / s0 > self.threshold:
                flag = (flag + " share").strip()
            if kinds.get(pid) == "concentrated":
                flag = (flag + " concentrated").strip()
            lines.append(f"| {pid} | {move:.1%} | {s0:.1%} | {s1:.1%} | {flag} |")
        lines += [f"| {pid} | vanished (< k-min contributions) | | | vanished |"
                  for pid in self.vanished]
        moving = [p for p in self.personas if p.kind != "steady"]
        if moving:
            lines += ["", "## What moved and why", ""]
            lines += [f"- {p.sentence(self.threshold)}" for p in moving]
        return "\n".join(lines) + "\n"


def recorded_history(manifest: Manifest) -> list[dict[str, object]]:
    """The refit history a manifest's lineage carries (oldest first; empty for a trained v1).

    Args:
        manifest: a verified manifest.

    Returns:
        One entry per refit: ``v``, ``created``, ``n``, ``move``, ``moves``, ``shares``.
    """
    raw = manifest.lineage.get("history")
    try:
        entries = json.loads(raw) if isinstance(raw, str) else []
    except ValueError:
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def history_entry(manifest: Manifest, drift: DriftReport, version: int, now: datetime,
                  contributions: int) -> str:
    """The lineage ``history`` of a new version: the previous one's plus this refit (last 24)."""
    entries = recorded_history(manifest)
    entries.append({"v": version, "created": now.astimezone(UTC).isoformat(timespec="seconds"),
                    "n": contributions, "move": round(drift.max_move, 6),
                    "moves": {pid: round(m, 6) for pid, m in zip(drift.ids, drift.moves, strict=True)},
                    "shares": {pid: round(s, 6) for pid, s in
                               zip(drift.ids, drift.shares_after, strict=True)}})
    return json.dumps(entries[-24:], separators=(",", ":"), sort_keys=True)


def _baseline_spread(previous: Manifest, evidence: WeightedAggregates, scale: F64) -> F64:
    """Per persona (previous index) within variance before the move, standardised."""
    recorded = previous.lineage.get("spread")
    try:
        spread = json.loads(recorded) if isinstance(recorded, str) else {}
    except ValueError:
        spread = {}
    spread = spread if isinstance(spread, dict) else {}
    daily = np.where(evidence.day_weight[:, :, None] > 0, evidence.day_var, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a persona without days has no median
        median_day = np.nanmedian((daily * scale**2).sum(axis=2), axis=0)
    return np.array([float(spread.get(card.id, median_day[i])) for i, card in
                     enumerate(previous.personas)])


def spread_of(evidence: WeightedAggregates, scale: F64, persona_ids: list[str],
              keep: npt.NDArray[np.bool_]) -> str:
    """Per surviving persona, within variance around its new centroid (standardised), as JSON."""
    mean = evidence.sums / np.maximum(evidence.counts, 1e-12)[:, None]
    var = (np.maximum(evidence.sumsq / np.maximum(evidence.counts, 1e-12)[:, None] - mean**2, 0.0)
           * scale**2).sum(axis=1)
    return json.dumps({pid: round(float(v), 9) for pid, v, kept in
                       zip(persona_ids, var, keep, strict=True) if kept}, sort_keys=True)


def measure_drift(previous: Manifest, new: F64, keep: npt.NDArray[np.bool_], shares: F64,
                  threshold: float, evidence: WeightedAggregates | None = None,
                  weighting: str = "") -> DriftReport:
    """Relative centroid moves and share changes of the surviving personas, explained.

    Args:
        previous: the previous version's manifest.
        new: the surviving personas' new centroids (standardised), shape (kept, d).
        keep: which previous personas survive.
        shares: the survivors' new shares.
        threshold: the gate (0.15 = 15 %).
        evidence: the weighted aggregates and their days (None for a private
            refit or bare aggregates: moves and shares only).
        weighting: how days were weighed, in words.

    Returns:
        The report.
    """
    params = previous.assigner
    old = np.asarray(params.centroids)
    gaps = np.linalg.norm(old[:, None, :] - old[None, :, :], axis=2)
    reference = float(np.median(gaps[np.triu_indices(len(old), 1)])) or 1.0
    moves = np.linalg.norm(new - old[keep], axis=1) / reference
    before = np.array([previous.personas[i].share for i in np.flatnonzero(keep)])
    changes = np.abs(shares - before) / np.maximum(before, 1e-12)
    vanished = tuple(previous.personas[i].id for i in np.flatnonzero(~keep))
    ids = tuple(previous.personas[i].id for i in np.flatnonzero(keep))
    personas: tuple[PersonaDrift, ...] = ()
    if evidence is not None:
        personas = tuple(_explain(previous, evidence, int(i), new[n], moves[n], changes[n],
                                  before[n], shares[n], threshold, reference)
                         for n, i in enumerate(np.flatnonzero(keep)))
    suspect = any(p.kind == "concentrated" for p in personas)
    review = bool((moves > threshold).any() or (changes > threshold).any() or vanished or suspect)
    past = [float(e.get("move", 0.0)) for e in recorded_history(previous)]  # type: ignore[arg-type]
    rounds = (*past, float(moves.max(initial=0.0)))
    total = int(evidence.contributions.sum()) if evidence is not None else 0
    return DriftReport(ids, tuple(moves.tolist()), tuple(before.tolist()), tuple(shares.tolist()),
                       vanished, threshold, review, personas, rounds, weighting, total)


def _explain(previous: Manifest, evidence: WeightedAggregates, i: int, new: F64, move: float,
             change: float, share_before: float, share_after: float, threshold: float,
             reference: float) -> PersonaDrift:
    """One persona's evidence: traits, days, concentration, the influence bound."""
    params = previous.assigner
    center, scale = np.asarray(params.center), np.asarray(params.scale)
    old = np.asarray(params.centroids)[i]
    weight = evidence.day_weight[:, i]
    present = weight > 0
    day = _top_day_share(evidence, i, old, new, center, scale) if present.sum() >= 3 else None
    top_day = day[0] if day is not None else None
    burst = day is not None and day[0] > TOP_DAY_ABOVE and day[0] > BURST_RATIO * day[1]
    concentration, reach = _concentration(previous, evidence, i, old, new, center, scale)
    significant = _significant(previous, evidence, i, old, new, scale)
    surge = share_after >= SURGE_AT_LEAST * share_before
    suspicious = significant and ((concentration is not None and concentration < CONCENTRATED_BELOW)
                                  or (reach is not None and reach > FAR_OUT_SPREADS)
                                  or burst or surge)
    steady = move <= threshold / 2 and change <= threshold
    kind = "concentrated" if suspicious else "steady" if steady else "broad"
    box = model_space(params, np.array([params.lower, params.upper], dtype=np.float64))
    diagonal = float(np.linalg.norm((box[1] - box[0]) * scale))
    n = float(evidence.contributions[i])
    return PersonaDrift(previous.personas[i].id, previous.personas[i].name, float(move),
                        float(share_before), float(share_after), int(n), int(present.sum()),
                        top_day, concentration, kind, _traits(previous, old, new),
                        0.01 * diagonal / reference, reach)


def _significant(previous: Manifest, evidence: WeightedAggregates, i: int, old: F64, new: F64,
                 scale: F64) -> bool:
    """Whether the move is beyond sampling noise: ``δ² > 9 · var / n`` (three standard errors).

    ``var`` is the smaller of the spread now and the spread before, so that a
    few far contributions cannot hide their move by inflating the noise.
    """
    n = float(evidence.contributions[i])
    if n <= 1 or not np.isfinite(evidence.sumsq[i]).all():
        return False
    mean = evidence.sums[i] / evidence.counts[i]
    var = float((np.maximum(evidence.sumsq[i] / evidence.counts[i] - mean**2, 0.0) * scale**2).sum())
    baseline = float(_baseline_spread(previous, evidence, scale)[i])
    if np.isfinite(baseline):
        var = min(var, baseline)
    return float(np.sum((new - old) ** 2)) > 9.0 * var / n


def _top_day_share(evidence: WeightedAggregates, i: int, old: F64, new: F64, center: F64,
                   scale: F64) -> tuple[float, float] | None:
    """The share of the move (projected on its direction) the heaviest day carries, and its weight.

    A day that carries most of the move only because it carries most of the
    weight (the newest day under a short half-life) is not a burst; the caller
    compares the two.
    """
    direction = new - old
    norm = float(np.linalg.norm(direction))
    if norm == 0:
        return None
    weight = evidence.day_weight[:, i]
    present = weight > 0
    z = (evidence.day_means[present, i] - center) * scale
    pushes = weight[present] * ((z - old) @ (direction / norm))
    total = float(pushes.sum())
    if total <= 0:
        return None
    top = int(pushes.argmax())
    return (float(np.clip(pushes[top] / total, 0.0, 1.0)),
            float(weight[present][top] / weight[present].sum()))


def _concentration(previous: Manifest, evidence: WeightedAggregates, i: int, old: F64, new: F64,
                   center: F64, scale: F64) -> tuple[float | None, float | None]:
    """``f ≈ δ² / (δ² + Δvar)`` and ``D / spread``: how many moved, and how far out they lie.

    ``D = (δ² + Δvar) / δ`` is the distance the movers would have to lie from the
    old centre, in units of the persona's spread before (its RMS radius).
    """
    counts = float(evidence.counts[i])
    if counts <= 0 or not np.isfinite(evidence.sumsq[i]).all():
        return None, None
    weight = evidence.day_weight[:, i]
    present = weight > 0
    mean_t = (weight[present, None] * evidence.day_means[present, i]).sum(axis=0) / weight.sum()
    variance = float((np.maximum(evidence.sumsq[i] / counts - mean_t**2, 0.0) * scale**2).sum())
    baseline = float(_baseline_spread(previous, evidence, scale)[i])
    if not np.isfinite(baseline):
        return None, None
    delta2 = float(np.sum(((mean_t - center) * scale - old) ** 2))
    grown = max(variance - baseline, 0.0)
    if delta2 + grown == 0:
        return 1.0, 0.0
    reach = (delta2 + grown) / np.sqrt(delta2) / np.sqrt(baseline) if delta2 > 0 and baseline > 0 \
        else None
    return delta2 / (delta2 + grown), reach


def _traits(previous: Manifest, old: F64, new: F64) -> tuple[str, ...]:
    """The two features whose standardised value moved most, in raw units before → after."""
    params = previous.assigner
    center, scale = np.asarray(params.center), np.asarray(params.scale)
    step = np.abs(new - old)
    raw = np.array([(old / scale) + center, (new / scale) + center])
    mask = np.asarray(params.log1p, dtype=bool)
    raw[:, mask] = np.expm1(raw[:, mask])
    out = []
    for j in np.argsort(-step, kind="stable")[:2]:
        if step[j] > 0:
            label = previous.spec.features[int(j)].display_label()
            out.append(f"{label} {raw[0, j]:,.3g} → {raw[1, j]:,.3g}")
    return tuple(out)
