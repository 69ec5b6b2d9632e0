"""Opening an aggregate store from a database URL (``--db``).

Supported URLs::

    sqlite:///relative/path.db     a file relative to the working directory
    sqlite:////absolute/path.db    an absolute path (four slashes, as SQLAlchemy)
    sqlite:///:memory:             a throw-away in-memory store (tests, demos)
    postgresql://user:password@host:port/database
                                   PostgreSQL, shared by several collector
                                   processes (``postgres://`` works too)

Error messages never repeat the URL: it may hold a password.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from edgepersona.sdk import InputError
from edgepersona.trainer.collector._aggregates import AggregateStore
from edgepersona.trainer.collector._queries import SMALL_CLOSED_CELLS, render
from edgepersona.trainer.collector._sqlite import SqliteAggregateStore

__all__ = ["open_store", "small_cells_at_rest"]

_SQLITE_PREFIX = "sqlite:///"


def open_store(url: str) -> AggregateStore:
    """Open (creating and migrating if needed) the store a URL names.

    Args:
        url: A database URL (see the module docstring).

    Returns:
        The store; the caller closes it.

    Raises:
        InputError: The URL has an unsupported scheme or no path, or the
            PostgreSQL server cannot be reached.
        SchemaError: The database's schema is newer than this code knows.
    """
    if not isinstance(url, str):
        raise InputError(f"the database URL must be a str, got {type(url).__name__}")
    if url.startswith(_SQLITE_PREFIX) and len(url) > len(_SQLITE_PREFIX):
        return SqliteAggregateStore(url[len(_SQLITE_PREFIX):])
    scheme = url.partition(":")[0]
    if scheme in {"postgres", "postgresql"}:
        try:
            from edgepersona.trainer.collector._postgres import (
                PostgresAggregateStore,  # the driver is in the server extra
            )
        except ModuleNotFoundError:
            raise InputError("PostgreSQL needs the psycopg driver: pip install 'edgepersona[server]'"
                             ) from None
        return PostgresAggregateStore(url)
    raise InputError(f"unsupported database URL scheme {scheme!r} (URL not shown: it may hold a"
                     " password); expected sqlite:///PATH, sqlite:////abs/path.db or"
                     " postgresql://user:password@host:port/database")


def small_cells_at_rest(url: str, k_min: int) -> list[tuple[int, int, int, int]]:
    """Closed aggregate cells below ``k_min`` in a collector database (the audit's check).

    A closed cell is one whose day is below the store's purge horizon: no
    contribution of it can arrive any more. The collector rolls such cells
    forward once a day; one that remains isolates too few contributions.

    A SQLite database is read in read-only mode (an audit changes nothing);
    a PostgreSQL one through the store, which migrates it first if it is older.

    Args:
        url: The collector's database URL.
        k_min: The release's k-min.

    Returns:
        (model version, persona index, day bucket, count) of each small closed cell.

    Raises:
        InputError: The URL is unusable, the SQLite file does not exist, or
            the server cannot be reached.
        SchemaError: The database's schema is newer than this code knows.
    """
    if isinstance(url, str) and url.startswith(_SQLITE_PREFIX):
        path = Path(url[len(_SQLITE_PREFIX):])
        if not path.is_file():
            raise InputError(f"no collector database at {path}; pass the --db URL the collector uses")
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            rows = conn.execute(render(SMALL_CLOSED_CELLS, "?"), (k_min,)).fetchall()
        return [(int(v), int(p), int(d), int(n)) for v, p, d, n in rows]
    store = open_store(url)
    try:
        return store.small_closed_cells(k_min)
    finally:
        store.close()
