"""Combining the collector's daily cells into refit aggregates: decay across rounds, robustly.

The collector keeps one cell per (model version, persona, day): a count, the
sums and the sums of squares of the contributions, in the model's transformed
space. A refit reads the cells of the current version *and of earlier ones*
(persona ids carry over between refits, so a cell of v1's ``P2`` counts for
v3's ``P2``), and weighs each day with the same kernel vocabulary as the
feature spec (:class:`~edgepersona.sdk.FeatureSpec` windows):

* ``all_time``: every day weighs the same (the refit of old);
* ``half_life``: a day ``Δ`` days older than the newest one weighs ``2^(-Δ/h)``;
* ``blend``: ``Σ_j c_j 2^(-Δ/h_j)``, e.g. 60 % of a 7-day and 40 % of a 90-day
  half-life: personas move with behaviour but keep their history.

Every weight is at most 1, so one contribution still changes a weighted count by
at most 1 and a weighted sum by at most the bound radius (the private refit's
calibration holds). Robustness bounds the influence of one day:

* a **day cap**: a persona's day counts at most ``day_cap`` times its median
  day (a burst of contributions on one day is scaled down, its mean kept);
* a **trimmed mean** of the daily means (``trim`` of the day weight dropped
  from each tail, per feature), off by default because it also delays a real
  shift, whose newest days are the extreme ones.

Neither bounds a small group spread evenly over every day: that group moves a
mean by at most its share times the distance it can claim (the collector's
bounds and consistency check limit that distance); the drift report estimates
how concentrated a move is (:mod:`edgepersona.trainer.release.refit_drift`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import InputError
from edgepersona.sdk.protocol.spec import Window
from edgepersona.trainer.collector import DailyAggregate

__all__ = [
    "CellWeighting",
    "DayCells",
    "PersonaAggregates",
    "VersionCells",
    "WeightedAggregates",
    "parse_window",
    "stack_cells",
    "weigh_cells",
]

F64 = npt.NDArray[np.float64]


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
class CellWeighting:
    """How a refit weighs the days it reads.

    Attributes:
        window: the decay kernel over day age (all time, half-life or blend).
        day_cap: a persona's day weighs at most this many times its median day
            (by contributions); ``None`` turns the cap off.
        trim: fraction of the day weight trimmed from each tail, per feature,
            before the daily means are averaged (0 = plain weighted mean).
    """

    window: Window = field(default_factory=Window)
    day_cap: float | None = 3.0  # times the persona's median daily count
    trim: float = 0.0  # fraction per tail, 0 <= trim < 0.5

    def __post_init__(self) -> None:
        """Refuse parameters that cannot bound anything."""
        if self.day_cap is not None and not self.day_cap >= 1.0:
            raise InputError(f"day_cap must be >= 1 (times the median day), got {self.day_cap}")
        if not 0.0 <= self.trim < 0.5:
            raise InputError(f"trim must be in [0, 0.5), got {self.trim}")

    def describe(self) -> str:
        """One line for manifests and logs, e.g. ``blend 60% 7 d + 40% 90 d, day cap 3x``."""
        parts = [_window_text(self.window)]
        if self.day_cap is not None:
            parts.append(f"day cap {self.day_cap:g}x median")
        if self.trim:
            parts.append(f"trimmed {self.trim:.0%} per tail")
        return ", ".join(parts)


def _window_text(window: Window) -> str:
    """The kernel in words."""
    if window.kind == "all_time":
        return "all days equal"
    if window.kind == "half_life":
        return f"half-life {window.half_lives_days[0]:g} d"
    return "blend " + " + ".join(f"{c:.0%} {h:g} d" for c, h in window.components())


def parse_window(text: str) -> Window:
    """Read a decay window from the command line.

    Forms: ``all``, ``half-life:14`` (days), ``blend:0.6@7,0.4@90``
    (coefficient ``@`` half-life in days; coefficients sum to 1).

    Args:
        text: the option's value.

    Returns:
        The window.

    Raises:
        InputError: the text is not one of the forms above.
    """
    kind, _, rest = text.strip().partition(":")
    try:
        if kind in {"all", "all_time"} and not rest:
            return Window()
        if kind in {"half-life", "half_life"}:
            return Window.half_life(float(rest))
        if kind == "blend":
            pairs = [part.split("@") for part in rest.split(",")]
            return Window.blend(*((float(c), float(h)) for c, h in pairs))
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot read decay window {text!r}: {exc}".split("\n")[0]) from None
    raise InputError(f"unknown decay window {text!r}; expected all, half-life:DAYS or"
                     " blend:C1@DAYS1,C2@DAYS2 (e.g. blend:0.6@7,0.4@90)")


@dataclass(frozen=True)
class VersionCells:
    """The daily cells of one model version, with that version's persona ids by index."""

    version: int
    persona_ids: tuple[str, ...]
    cells: tuple[DailyAggregate, ...]


@dataclass(frozen=True)
class DayCells:
    """Daily cells of several versions, stacked by day and by the target version's personas.

    Attributes:
        days: the day buckets, ascending, shape (D,).
        counts: contributions per day and persona, shape (D, k).
        sums: sums per day and persona, shape (D, k, d).
        sumsq: sums of squares per day and persona, shape (D, k, d).
    """

    days: npt.NDArray[np.int64]
    counts: F64
    sums: F64
    sumsq: F64


def stack_cells(history: Sequence[VersionCells], target_ids: Sequence[str], width: int) -> DayCells:
    """Stack cells of several versions onto the target version's personas (by persona id).

    Cells of a persona id the target version no longer has are left out.

    Args:
        history: the versions' cells (any order).
        target_ids: the target version's persona ids, by index.
        width: the number of features.

    Returns:
        The stacked cells (no days when nothing matched).

    Raises:
        InputError: a cell's feature width differs from ``width``.
    """
    where = {pid: i for i, pid in enumerate(target_ids)}
    picked = [(cell, where[part.persona_ids[cell.persona_index]]) for part in history
              for cell in part.cells if cell.persona_index < len(part.persona_ids)
              and part.persona_ids[cell.persona_index] in where]
    days = np.array(sorted({cell.day_bucket for cell, _ in picked}), dtype=np.int64)
    row = {int(day): i for i, day in enumerate(days)}
    k = len(target_ids)
    counts, sums, sumsq = np.zeros((len(days), k)), np.zeros((len(days), k, width)), \
        np.zeros((len(days), k, width))
    for cell, p in picked:
        if cell.aggregate.sums.shape != (width,):
            raise InputError(f"a cell of day {cell.day_bucket} has {cell.aggregate.sums.shape[0]}"
                             f" features; the model has {width}")
        i = row[cell.day_bucket]
        counts[i, p] += cell.aggregate.count
        sums[i, p] += cell.aggregate.sums
        sumsq[i, p] += cell.aggregate.sumsq
    return DayCells(days, counts, sums, sumsq)


@dataclass(frozen=True)
class WeightedAggregates(PersonaAggregates):
    """Refit aggregates with the evidence behind them (for k-min and the drift report).

    ``counts``, ``sums`` and ``sumsq`` are weighted (effective) values; the
    means ``sums / counts`` are the robust ones.

    Attributes:
        contributions: raw contributions per persona, shape (k,): k-min applies to these.
        days: the day buckets, shape (D,).
        day_weight: each day's effective weight per persona (decay x cap x count), (D, k).
        day_means: each day's mean per persona (NaN where empty), (D, k, d).
        day_var: each day's within variance per persona and feature, (D, k, d).
    """

    contributions: F64
    days: npt.NDArray[np.int64]
    day_weight: F64
    day_means: F64
    day_var: F64


def _decay(window: Window, days: npt.NDArray[np.int64]) -> F64:
    """Each day's kernel weight, by age from the newest day (the newest weighs 1)."""
    if days.size == 0:
        return np.zeros(0)
    age = (days.max() - days).astype(np.float64)
    return np.asarray(sum(c * (np.ones_like(age) if np.isinf(h) else np.exp2(-age / h))
                          for c, h in window.components()), dtype=np.float64)


def _caps(counts: F64, day_cap: float | None) -> F64:
    """Per (day, persona) scale factors <= 1 that hold a day to ``day_cap`` x the median day."""
    if day_cap is None or counts.size == 0:
        return np.ones_like(counts)
    median = np.array([float(np.median(column[column > 0])) if (column > 0).any() else 1.0
                       for column in counts.T])
    limit = day_cap * median
    return np.where(counts > limit, limit / np.maximum(counts, 1e-12), 1.0)


def _trimmed(means: F64, weights: F64, trim: float) -> F64:
    """Per-feature weighted trimmed mean of daily means (D, d) with day weights (D,)."""
    out = np.empty(means.shape[1])
    total = weights.sum()
    for j in range(means.shape[1]):
        order = np.argsort(means[:, j], kind="stable")
        w, m = weights[order], means[order, j]
        upper = np.cumsum(w)
        lower = upper - w
        kept = np.clip(np.minimum(upper, (1 - trim) * total) - np.maximum(lower, trim * total),
                       0.0, None)
        out[j] = float((kept * m).sum() / kept.sum()) if kept.sum() > 0 else float(m.mean())
    return out


def weigh_cells(cells: DayCells, weighting: CellWeighting) -> WeightedAggregates:
    """Decay, cap and (optionally) trim the daily cells into refit aggregates.

    Args:
        cells: the stacked cells.
        weighting: the kernel and the robustness bounds.

    Returns:
        The weighted aggregates and their per-day evidence.
    """
    decay = _decay(weighting.window, cells.days)[:, None]
    scale = decay * _caps(cells.counts, weighting.day_cap)
    counts = (scale * cells.counts).sum(axis=0)
    sums = (scale[:, :, None] * cells.sums).sum(axis=0)
    sumsq = (scale[:, :, None] * cells.sumsq).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        day_means = cells.sums / cells.counts[:, :, None]
        day_var = np.maximum(cells.sumsq / cells.counts[:, :, None] - day_means**2, 0.0)
    if weighting.trim > 0:
        for p in range(counts.shape[0]):
            present = cells.counts[:, p] > 0
            if present.sum() >= 3:
                sums[p] = counts[p] * _trimmed(day_means[present, p], (scale * cells.counts)[present, p],
                                               weighting.trim)
    return WeightedAggregates(counts, sums, sumsq, contributions=cells.counts.sum(axis=0),
                              days=cells.days, day_weight=scale * cells.counts,
                              day_means=day_means, day_var=np.nan_to_num(day_var))
