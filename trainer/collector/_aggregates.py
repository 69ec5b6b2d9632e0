"""What the collector stores, and the interface every storage backend implements.

The collector never stores a per-user row. An accepted contribution becomes an
:class:`Increment`: the running aggregates of one (model version, persona
index, day bucket) cell grow by one count, the features and their squares, and
the dedupe set gains one keyed hash (and the quota set one more), which says
nothing about the user without the collector's secret and expires after the
replay window. Closed day cells below k-min are rolled forward (see
:meth:`AggregateStore.roll_up_small_cells`), so none stays at rest.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "AddResult",
    "AggregateStore",
    "DailyAggregate",
    "Increment",
    "PersonaAggregate",
    "SummedAggregates",
    "rolled_forward",
]

FloatVector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Increment:
    """What one accepted contribution adds: nothing in it names the user.

    Attributes:
        dedupe_key: HMAC-SHA256 of (pseudonym, sequence) under the collector's
            dedupe secret, 32 bytes; a second increment with it is a replay.
        day_bucket: The contribution's day (whole UTC days since 1970-01-01).
        model_version: The model version it was assigned under.
        persona_index: The assigned persona.
        features: The clipped feature contribution.
        quota_keys: The pseudonym's quota slots for this (model version,
            day): keyed hashes tried in order, the first free one is taken;
            none free means the quota is spent. Empty: no quota.
    """

    dedupe_key: bytes
    day_bucket: int
    model_version: int
    persona_index: int
    features: tuple[float, ...]
    quota_keys: tuple[bytes, ...] = ()


class AddResult(enum.Enum):
    """What a store did with one increment."""

    ADDED = "added"  # aggregates grew and the dedupe key (and a quota slot) was recorded
    DUPLICATE = "duplicate"  # the dedupe set already held the key; nothing changed
    QUOTA_EXCEEDED = "quota_exceeded"  # every quota slot of its pseudonym and day is taken
    WIDTH_CONFLICT = "width_conflict"  # the model version's stored sums have another length
    STALE = "stale"  # its day is below the purge horizon: its key may be gone, refuse it


@dataclass(frozen=True, eq=False)
class PersonaAggregate:
    """Running sums of one persona's contributions (read-only arrays).

    Attributes:
        count: How many contributions were added.
        sums: Per-feature sums.
        sumsq: Per-feature sums of squares.
    """

    count: int
    sums: FloatVector
    sumsq: FloatVector

    @property
    def mean(self) -> FloatVector:
        """Per-feature mean (``sums / count``); all-NaN when ``count`` is 0."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.count

    @property
    def variance(self) -> FloatVector:
        """Per-feature population variance, clamped at 0 against rounding."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.maximum(self.sumsq / self.count - self.mean**2, 0.0)


@dataclass(frozen=True, eq=False)
class DailyAggregate:
    """The aggregate of one (persona, day bucket) cell of a model version.

    Attributes:
        day_bucket: Whole UTC days since 1970-01-01.
        persona_index: The persona.
        aggregate: Count, sums and sums of squares of that day.
    """

    day_bucket: int
    persona_index: int
    aggregate: PersonaAggregate


class AggregateStore(Protocol):
    """Storage for aggregates and the dedupe set (SQLite by default, PostgreSQL at scale).

    Implementations must make :meth:`add_increments` atomic: every dedupe key,
    quota slot and aggregate update of a call commits together, or none does.
    """

    def add_increments(self, increments: Sequence[Increment], *, purge_before_day: int
                       ) -> list[AddResult]:
        """Purge expired dedupe keys and quota slots, then add increments; one transaction.

        Args:
            increments: In order; a key repeated within the call is a duplicate.
            purge_before_day: Keys of day buckets below this are deleted.

        Returns:
            One result per increment, in order.
        """
        ...

    def aggregates(self, model_version: int, *, first_day: int | None = None,
                   last_day: int | None = None) -> dict[int, PersonaAggregate]:
        """Per-persona aggregates summed over the day buckets in a range.

        Args:
            model_version: The model version.
            first_day: The first day bucket included (default: all).
            last_day: The last day bucket included (default: all).

        Returns:
            Persona index → aggregate, for personas with contributions.
        """
        ...

    def daily_aggregates(self, model_version: int, *, first_day: int | None = None,
                         last_day: int | None = None) -> list[DailyAggregate]:
        """Per-(persona, day) aggregates, for refits that weigh days differently.

        Args:
            model_version: The model version.
            first_day: The first day bucket included (default: all).
            last_day: The last day bucket included (default: all).

        Returns:
            The cells, ordered by day bucket then persona index.
        """
        ...

    def model_versions(self) -> list[int]:
        """Model versions that have aggregates, ascending."""
        ...

    def dedupe_size(self) -> int:
        """Number of dedupe keys held (for metrics and expiry checks)."""
        ...

    def purge_dedupe(self, *, before_day: int) -> int:
        """Delete dedupe keys (and quota slots) of day buckets below ``before_day``.

        Args:
            before_day: The oldest day bucket kept.

        Returns:
            How many keys were deleted.
        """
        ...

    def spend_admission(self, token_key: bytes, *, expires_day: int, uses: int, quota: int) -> int:
        """Spend up to ``uses`` of an admission token's ``quota``, atomically.

        Args:
            token_key: The keyed hash of the token's id.
            expires_day: The token's last day; its row is purged after it.
            uses: How many uses this request asks for.
            quota: The token's total quota.

        Returns:
            How many uses were granted (0 when the quota is spent).
        """
        ...

    def roll_up_small_cells(self, k_min: Mapping[int, int], *, before_day: int) -> int:
        """Roll closed cells below k-min forward into the oldest open day.

        A day is closed once it is below the purge horizon (moved up to
        ``before_day`` first): no contribution of it can arrive any more. Per
        (model version, persona), every closed cell with a count below that
        version's k-min is deleted and its count and sums are added to the
        cell of the horizon day (created if needed), which still accepts
        contributions; if it closes below k-min it rolls on. So no closed cell
        below k-min stays at rest, nothing is lost, and a small remainder is
        dated later than its days (at most the contributions of fewer than
        k-min of them).

        Args:
            k_min: Model version → k-min; versions not listed are left alone.
            before_day: The oldest open day bucket.

        Returns:
            How many closed cells were rolled forward.
        """
        ...

    def small_closed_cells(self, k_min: int) -> list[tuple[int, int, int, int]]:
        """Closed cells (below the purge horizon) whose count is below ``k_min``.

        Args:
            k_min: The smallest count a closed cell may hold.

        Returns:
            (model version, persona index, day bucket, count) of each, sorted.
        """
        ...

    def close(self) -> None:
        """Release the connection; the store cannot be used afterwards."""
        ...


def freeze(values: Sequence[float] | FloatVector) -> FloatVector:
    """A read-only float64 copy, so aggregates handed out cannot be edited in place."""
    array = np.array(values, dtype=np.float64)
    array.setflags(write=False)
    return array


class SummedAggregates:
    """Mixin: :meth:`aggregates` from a store's own ``daily_aggregates`` (shared by the backends)."""

    def daily_aggregates(self, model_version: int, *, first_day: int | None = None,
                         last_day: int | None = None) -> list[DailyAggregate]:
        """Implemented by each backend."""
        raise NotImplementedError

    def aggregates(self, model_version: int, *, first_day: int | None = None,
                   last_day: int | None = None) -> dict[int, PersonaAggregate]:
        """Per-persona aggregates summed over the day buckets in a range.

        Args:
            model_version: The model version.
            first_day: The first day bucket included (default: all).
            last_day: The last day bucket included (default: all).

        Returns:
            Persona index → aggregate, for personas with contributions.
        """
        return summed(self.daily_aggregates(model_version, first_day=first_day, last_day=last_day))


def summed(model_cells: Sequence[DailyAggregate]) -> dict[int, PersonaAggregate]:
    """Sum daily cells per persona, in the given (day) order.

    Args:
        model_cells: Cells of one model version, ordered by day.

    Returns:
        Persona index → aggregate over those days.
    """
    totals: dict[int, tuple[int, FloatVector, FloatVector]] = {}
    for cell in model_cells:
        count, sums, sumsq = totals.get(cell.persona_index, (0, 0.0 * cell.aggregate.sums,
                                                            0.0 * cell.aggregate.sumsq))
        totals[cell.persona_index] = (count + cell.aggregate.count, sums + cell.aggregate.sums,
                                      sumsq + cell.aggregate.sumsq)
    return {persona: PersonaAggregate(count, freeze(sums), freeze(sumsq))
            for persona, (count, sums, sumsq) in sorted(totals.items())}


def rolled_forward(cells: Sequence[tuple[int, int, int, FloatVector, FloatVector]]
                   ) -> dict[int, tuple[int, FloatVector, FloatVector]]:
    """Sum small closed cells per persona: what a roll-up adds to each persona's open cell.

    Args:
        cells: (persona, day, count, sums, sumsq) of the closed cells rolled forward.

    Returns:
        Persona index → (count, sums, sumsq) to add.
    """
    totals: dict[int, tuple[int, FloatVector, FloatVector]] = {}
    for persona, _day, count, sums, sumsq in cells:
        if persona in totals:
            total, total_sums, total_sumsq = totals[persona]
            totals[persona] = (total + count, total_sums + sums, total_sumsq + sumsq)
        else:
            totals[persona] = (count, np.array(sums, dtype=np.float64), np.array(sumsq, dtype=np.float64))
    return totals
