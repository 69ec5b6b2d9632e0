"""What the collector stores, and the interface every storage backend implements.

The collector never stores a per-user row. An accepted contribution becomes an
:class:`Increment`: the running aggregates of one (model version, persona
index, day bucket) cell grow by one count, the features and their squares, and
the dedupe ledger gains one keyed hash, which says nothing about the user
without the collector's secret and expires after the replay window.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
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
]

FloatVector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Increment:
    """What one accepted contribution adds: nothing in it names the user.

    Attributes:
        ledger_key: HMAC-SHA256 of (pseudonym, sequence) under the collector's
            ledger secret, 32 bytes; a second increment with it is a replay.
        day_bucket: The contribution's day (whole UTC days since 1970-01-01).
        model_version: The model version it was assigned under.
        persona_index: The assigned persona.
        features: The clipped feature contribution.
    """

    ledger_key: bytes
    day_bucket: int
    model_version: int
    persona_index: int
    features: tuple[float, ...]


class AddResult(enum.Enum):
    """What a store did with one increment."""

    ADDED = "added"  # aggregates grew and the ledger key was recorded
    DUPLICATE = "duplicate"  # the ledger already held the key; nothing changed
    WIDTH_CONFLICT = "width_conflict"  # the model version's stored sums have another length
    STALE = "stale"  # its day is below the ledger's purge horizon: its key may be gone, refuse it


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
    """Storage for aggregates and the dedupe ledger (SQLite by default, PostgreSQL at scale).

    Implementations must make :meth:`add_increments` atomic: every ledger
    insert and aggregate update of a call commits together, or none does.
    """

    def add_increments(self, increments: Sequence[Increment], *, purge_before_day: int
                       ) -> list[AddResult]:
        """Purge expired ledger keys, then add increments; one transaction.

        Args:
            increments: In order; a key repeated within the call is a duplicate.
            purge_before_day: Ledger keys of day buckets below this are deleted.

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

    def ledger_size(self) -> int:
        """Number of ledger keys held (for metrics and expiry checks)."""
        ...

    def purge_ledger(self, *, before_day: int) -> int:
        """Delete ledger keys of day buckets below ``before_day``.

        Args:
            before_day: The oldest day bucket kept.

        Returns:
            How many keys were deleted.
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
