"""The transaction bodies of the PostgreSQL store (how they stay exact: :mod:`._postgres`).

Each function runs inside one READ COMMITTED transaction the store opens and
retries; :class:`RerunError` asks for a rerun after another transaction won a
race this one cannot resolve in place (a new model version's width, a quota slot).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import psycopg
from psycopg.rows import TupleRow

from edgepersona.trainer.collector import _queries as q
from edgepersona.trainer.collector._aggregates import AddResult, FloatVector, Increment, rolled_forward

__all__ = ["Connection", "RerunError", "add", "roll_up"]

Connection = psycopg.Connection[TupleRow]
_INSERT_KEYS: Final = (
    "INSERT INTO dedupe_ledger (ledger_key, day_bucket)"
    " SELECT key, day FROM unnest(%s::bytea[], %s::bigint[]) AS batch (key, day) ORDER BY key"
    " ON CONFLICT DO NOTHING RETURNING ledger_key")
_CLAIM_WIDTHS: Final = (
    "INSERT INTO model_widths (model_version, feature_count)"
    " SELECT * FROM unnest(%s::bigint[], %s::integer[]) ORDER BY 1"
    " ON CONFLICT DO NOTHING RETURNING model_version")
_UPSERT: Final = (  # the vectors add element-wise, in order, in the database
    "INSERT INTO aggregates AS a (model_version, persona_index, day_bucket, count, sums, sumsq)"
    " VALUES (%s, %s, %s, %s, %s::float8[], %s::float8[])"
    " ON CONFLICT (model_version, persona_index, day_bucket) DO UPDATE SET count = a.count + excluded.count,"
    " sums = ARRAY(SELECT s + x FROM unnest(a.sums, excluded.sums) WITH ORDINALITY AS t (s, x, i)"
    " ORDER BY i),"
    " sumsq = ARRAY(SELECT s + x FROM unnest(a.sumsq, excluded.sumsq) WITH ORDINALITY AS t (s, x, i)"
    " ORDER BY i)")

class RerunError(Exception):
    """Another transaction stored a new model version's width (or took a quota slot) first; rerun."""


def add(conn: Connection, increments: Sequence[Increment], purge_before_day: int
         ) -> list[AddResult]:
    """The body of one ``add_increments`` transaction (steps 1 to 4 of :mod:`._postgres`).

    The purge horizon row is locked first (every writer takes it, so it also
    orders them): it only moves forward, and a contribution of a day below it
    is refused as stale, because its dedupe key may already be purged.
    """
    horizon = _advance_horizon(conn, purge_before_day)
    fresh = [i for i in increments if i.day_bucket >= horizon]
    added = iter(_add_fresh(conn, fresh))
    return [next(added) if i.day_bucket >= horizon else AddResult.STALE for i in increments]


def _advance_horizon(conn: Connection, before_day: int) -> int:
    """Lock the purge horizon row, move it forward, purge below it; returns the horizon."""
    row = conn.execute("UPDATE ledger_horizon SET day_bucket = GREATEST(day_bucket, %s)"
                       " RETURNING day_bucket", (before_day,)).fetchone()
    horizon = int(row[0]) if row is not None else before_day
    for statement in (q.PURGE_DEDUPE, q.PURGE_SLOTS, q.PURGE_ADMISSION):
        conn.execute(q.render(statement, "%s"), (horizon,))
    return horizon


def roll_up(conn: Connection, k_min: Mapping[int, int], before_day: int) -> int:
    """The body of one ``roll_up_small_cells`` transaction."""
    horizon, rolled = _advance_horizon(conn, before_day), 0
    for version, k in sorted(k_min.items()):
        rows = conn.execute(q.render(q.SMALL_CLOSED_OF_VERSION, "%s") + " FOR UPDATE",
                            (version, horizon, k)).fetchall()
        cells = [(int(p), int(d), int(n), np.array(s, dtype=np.float64), np.array(sq, dtype=np.float64))
                 for p, d, n, s, sq in rows]
        for persona, day, *_ in cells:
            conn.execute(q.render(q.DELETE_CELL, "%s"), (version, persona, day))
        with conn.cursor() as cursor:
            cursor.executemany(_UPSERT, [(version, persona, horizon, count, sums.tolist(), sumsq.tolist())
                                         for persona, (count, sums, sumsq) in rolled_forward(cells).items()])
        rolled += len(cells)
    return rolled


def _add_fresh(conn: Connection, increments: Sequence[Increment]) -> list[AddResult]:
    """Steps 2 to 4 for increments at or above the purge horizon."""
    if not increments:
        return []
    versions = sorted({increment.model_version for increment in increments})
    widths: dict[int, int] = {int(version): int(width) for version, width in conn.execute(
        "SELECT model_version, feature_count FROM model_widths WHERE model_version = ANY(%s::bigint[])",
        (versions,)).fetchall()}
    candidates = [i for i in increments if widths.get(i.model_version, len(i.features)) == len(i.features)]
    inserted: set[bytes] = {bytes(row[0]) for row in conn.execute(_INSERT_KEYS, (
        [i.dedupe_key for i in candidates], [i.day_bucket for i in candidates])).fetchall()}
    results, claimed, new_widths = _resolve(increments, widths, inserted)
    claimed -= _take_slots(conn, increments, results)
    if orphans := inserted - claimed:  # keys of contributions that lost a width claimed in this call
        conn.execute("DELETE FROM dedupe_ledger WHERE ledger_key = ANY(%s::bytea[])", (sorted(orphans),))
    if new_widths:
        stored = conn.execute(_CLAIM_WIDTHS, (list(new_widths), list(new_widths.values()))).fetchall()
        if len(stored) != len(new_widths):
            raise RerunError("another collector stored a new model version's width first")
    cells: dict[tuple[int, int, int], tuple[int, FloatVector, FloatVector]] = {}
    for increment, result in zip(increments, results, strict=True):
        if result is AddResult.ADDED:  # folded in arrival order from zeros, as SQLite folds a new cell
            key = (increment.model_version, increment.persona_index, increment.day_bucket)
            features = np.array(increment.features, dtype=np.float64)
            count, sums, sumsq = cells.get(key, (0, np.zeros(len(features)), np.zeros(len(features))))
            cells[key] = (count + 1, sums + features, sumsq + features * features)
    with conn.cursor() as cursor:
        cursor.executemany(_UPSERT, [(*key, count, sums.tolist(), sumsq.tolist())
                                     for key, (count, sums, sumsq) in sorted(cells.items())])
    return results


def _resolve(increments: Sequence[Increment], widths: dict[int, int], inserted: set[bytes]
             ) -> tuple[list[AddResult], set[bytes], dict[int, int]]:
    """Decide each increment in arrival order exactly as SQLite's one-at-a-time loop would.

    Returns:
        The results, the dedupe keys the added increments own, and the widths
        of model versions first seen in this call.
    """
    widths = dict(widths)
    results: list[AddResult] = []
    claimed: set[bytes] = set()
    new_widths: dict[int, int] = {}
    for increment in increments:
        width = widths.get(increment.model_version)
        if width is not None and width != len(increment.features):
            results.append(AddResult.WIDTH_CONFLICT)
        elif increment.dedupe_key not in inserted or increment.dedupe_key in claimed:
            results.append(AddResult.DUPLICATE)
        else:
            claimed.add(increment.dedupe_key)
            if width is None:
                widths[increment.model_version] = new_widths[increment.model_version] = len(
                    increment.features)
            results.append(AddResult.ADDED)
    return results, claimed, new_widths


def _take_slots(conn: Connection, increments: Sequence[Increment], results: list[AddResult]
                ) -> set[bytes]:
    """Give each added increment with a quota its first free slot; the rest exceed the quota.

    Turns the results of increments without a free slot into QUOTA_EXCEEDED (in
    place) and returns their dedupe keys, which the caller deletes.

    Raises:
        RerunError: Another transaction took a chosen slot first (rerun the call).
    """
    wanted = sorted({key for i, r in zip(increments, results, strict=True)
                     if r is AddResult.ADDED for key in i.quota_keys})
    if not wanted:
        return set()
    taken = {bytes(row[0]) for row in conn.execute(
        "SELECT slot_key FROM quota_slots WHERE slot_key = ANY(%s::bytea[])", (wanted,)).fetchall()}
    chosen: dict[bytes, int] = {}
    refused: set[bytes] = set()
    for index, increment in enumerate(increments):
        if results[index] is not AddResult.ADDED or not increment.quota_keys:
            continue
        free = next((k for k in increment.quota_keys if k not in taken and k not in chosen), None)
        if free is None:
            results[index] = AddResult.QUOTA_EXCEEDED
            refused.add(increment.dedupe_key)
        else:
            chosen[free] = increment.day_bucket
    keys = sorted(chosen)
    stored = conn.execute("INSERT INTO quota_slots (slot_key, day_bucket)"
                          " SELECT * FROM unnest(%s::bytea[], %s::bigint[]) ON CONFLICT DO NOTHING"
                          " RETURNING slot_key", (keys, [chosen[k] for k in keys])).fetchall()
    if len(stored) != len(keys):
        raise RerunError("another collector took a quota slot first")
    return refused
