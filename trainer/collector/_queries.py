"""The SQL both aggregate stores run, written once.

SQLite and PostgreSQL share table and column names (see :mod:`._sqlite` and
:mod:`._postgres`); only the parameter marker differs (``?`` against ``%s``).
Each statement is written here with ``{p}`` for a parameter and rendered for a
backend by :func:`render`. Statements whose text must differ (vector
arithmetic, ``unnest`` batches, migrations) stay in their backend module.

The table ``dedupe_ledger`` and its column ``ledger_key`` keep their schema-1
names (renaming them would need a migration for no gain); in the Python API
and the docs they are the *dedupe set* and its *dedupe keys*, so "ledger"
means only the privacy budget ledger.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "DAILY_CELLS",
    "DEDUPE_SIZE",
    "DELETE_CELL",
    "HORIZON",
    "LOCK_ADMISSION",
    "MODEL_VERSIONS",
    "PURGE_ADMISSION",
    "PURGE_DEDUPE",
    "PURGE_SLOTS",
    "SET_ADMISSION",
    "SMALL_CLOSED_CELLS",
    "SMALL_CLOSED_OF_VERSION",
    "render",
]

DAILY_CELLS: Final = (
    "SELECT day_bucket, persona_index, count, sums, sumsq FROM aggregates"
    " WHERE model_version = {p} AND day_bucket BETWEEN {p} AND {p}"
    " ORDER BY day_bucket, persona_index")
MODEL_VERSIONS: Final = "SELECT DISTINCT model_version FROM aggregates ORDER BY model_version"
DEDUPE_SIZE: Final = "SELECT COUNT(*) FROM dedupe_ledger"
PURGE_DEDUPE: Final = "DELETE FROM dedupe_ledger WHERE day_bucket < {p}"
PURGE_SLOTS: Final = "DELETE FROM quota_slots WHERE day_bucket < {p}"
PURGE_ADMISSION: Final = "DELETE FROM admission_uses WHERE expires_day < {p}"
HORIZON: Final = "SELECT day_bucket FROM ledger_horizon"
SMALL_CLOSED_CELLS: Final = (
    "SELECT a.model_version, a.persona_index, a.day_bucket, a.count"
    " FROM aggregates a JOIN ledger_horizon h ON a.day_bucket < h.day_bucket"
    " WHERE a.count < {p} ORDER BY a.model_version, a.persona_index, a.day_bucket")
SMALL_CLOSED_OF_VERSION: Final = (
    "SELECT persona_index, day_bucket, count, sums, sumsq FROM aggregates"
    " WHERE model_version = {p} AND day_bucket < {p} AND count < {p}"
    " ORDER BY persona_index, day_bucket")
DELETE_CELL: Final = (
    "DELETE FROM aggregates WHERE model_version = {p} AND persona_index = {p} AND day_bucket = {p}")
LOCK_ADMISSION: Final = (  # creates the row at 0 uses, or locks it; returns the uses so far
    "INSERT INTO admission_uses AS u (token_key, expires_day, uses) VALUES ({p}, {p}, 0)"
    " ON CONFLICT (token_key) DO UPDATE SET uses = u.uses RETURNING uses")
SET_ADMISSION: Final = "UPDATE admission_uses SET uses = {p} WHERE token_key = {p}"


def render(statement: str, marker: Literal["?", "%s"]) -> str:
    """A statement with every ``{p}`` replaced by the backend's parameter marker.

    Args:
        statement: One of this module's statements.
        marker: ``?`` (sqlite3) or ``%s`` (psycopg).

    Returns:
        The SQL text.
    """
    return statement.replace("{p}", marker)
