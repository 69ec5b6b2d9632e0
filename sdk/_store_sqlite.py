"""The encrypted store's SQLite layer: one file, its pragmas, transactions and rows.

Holds no key and sees only opaque blobs (row keys, sealed values); the recipe
(:mod:`edgepersona.sdk._store`) decides what they mean. Every statement the
store runs is here, so the schema is read in one place.

The file is SQLite (stdlib) in WAL mode with ``synchronous=FULL`` and an
exclusive lock; ``secure_delete`` makes SQLite overwrite deleted content with
zeros, and :func:`scrub` moves every committed page into the main file and
truncates the WAL, so a deleted record leaves no copy in any of the files.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag

from edgepersona.sdk._keystore import os_errors
from edgepersona.sdk.errors import StoreCorruptError, StoreError

__all__ = [
    "SIDE_FILES",
    "connect",
    "corrupt",
    "create_file",
    "delete_files",
    "transaction",
    "translated_errors",
]

BUSY_TIMEOUT_S: Final = 2.0  # seconds to wait for a store held by someone else
SIDE_FILES: Final = ("", "-wal", "-shm", "-journal")
TABLES: Final = frozenset({b"meta", b"subjects", b"records"})  # text comes back as bytes
SCHEMA: Final = (
    "CREATE TABLE meta(name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE subjects(ref BLOB PRIMARY KEY, sid BLOB NOT NULL UNIQUE,"
    " wrapped BLOB NOT NULL, sealed_name BLOB NOT NULL)",
    "CREATE TABLE records(ref BLOB NOT NULL, rid BLOB NOT NULL, sealed BLOB NOT NULL, PRIMARY KEY(ref, rid))",
)
PRAGMAS: Final = (
    "locking_mode=EXCLUSIVE",
    "synchronous=FULL",
    "secure_delete=ON",
    "cell_size_check=ON",
    "trusted_schema=OFF",
)
# SQLite primary result codes that describe the environment, not the file's content.
ENVIRONMENT_CODES: Final = {
    3: "permission denied",
    5: "the store is open in another process or connection",
    6: "the store is locked by another connection",
    7: "out of memory",
    8: "the store or its directory is read-only",
    10: "disk I/O error",
    13: "the disk is full",
    14: "the store file cannot be opened (missing directory or permission)",
    23: "access denied",
}


def corrupt(path: Path, what: str) -> StoreCorruptError:
    """Return the corruption error for a damaged file, naming the documented recovery.

    Args:
        path: the store file.
        what: what was found damaged.

    Returns:
        The error to raise.
    """
    return StoreCorruptError(
        f"encrypted store {path} is unusable: {what} (the file was tampered with, truncated "
        f"or damaged). Recover with EncryptedStore.reset({str(path)!r}) or "
        "EncryptedStore.open(..., reset_if_corrupt=True); its local state is lost and will be rebuilt."
    )


@contextmanager
def translated_errors(path: Path) -> Iterator[None]:
    """Never let a raw sqlite3, cryptography or OS error reach the app.

    Args:
        path: the store file, named in the messages.

    Yields:
        Nothing; errors raised in the block are translated.

    Raises:
        StoreCorruptError: authentication failed or SQLite found the file damaged.
        StoreError: the environment failed (disk full, read-only, locked, ...).
    """
    try:
        yield
    except InvalidTag:
        raise corrupt(path, "a record or key failed authentication") from None
    except UnicodeDecodeError:  # SQLite quoting a damaged schema name in its message
        raise corrupt(path, "its schema is damaged") from None
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        reason = ENVIRONMENT_CODES.get(code & 0xFF) if isinstance(code, int) else None
        if reason is None and isinstance(code, int):
            raise corrupt(path, f"SQLite reports {exc}") from None
        raise StoreError(
            f"encrypted store {path}: {reason or exc}; the last committed state is kept"
        ) from exc
    except OSError as exc:
        raise StoreError(f"encrypted store {path}: {exc.strerror or exc}") from exc


def blobs(row: Sequence[object]) -> list[bytes]:
    """Row values as bytes; anything else means the file was edited (reported as corrupt)."""
    values = [value for value in row if isinstance(value, bytes)]
    if len(values) != len(row):
        raise InvalidTag
    return values


def create_file(path: Path) -> None:
    """Create the file owner-only (0600) if it is missing; the WAL inherits the mode."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def delete_files(path: Path) -> None:
    """Delete the store file and its WAL, shared-memory and journal files.

    Raises:
        StoreError: a file cannot be deleted.
    """
    with os_errors("delete store file"):
        for suffix in SIDE_FILES:
            path.with_name(path.name + suffix).unlink(missing_ok=True)


def connect(path: Path) -> sqlite3.Connection:
    """Open a connection with WAL, full fsync, exclusive lock and secure delete.

    Raises:
        StoreError: WAL mode is unavailable.
        sqlite3.Error: the file cannot be opened (translated by the caller).
    """
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.text_factory = bytes  # a damaged TEXT value must not fail to decode
    try:
        for pragma in PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != b"wal":
            raise StoreError(f"encrypted store {path}: WAL mode unavailable ({mode!r})")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    """One atomic transaction: committed when the block ends, rolled back if it raises.

    Args:
        conn: the connection.
        mode: ``IMMEDIATE`` (writes) or ``EXCLUSIVE`` (opening).

    Yields:
        Nothing.
    """
    conn.execute(f"BEGIN {mode}")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def scrub(conn: sqlite3.Connection) -> None:
    """Rewrite the file from its live rows, then truncate the WAL to zero bytes.

    ``secure_delete`` zeroes a deleted cell where it lies, but a page that
    SQLite rebalanced keeps stale copies of cells it moved in its unallocated
    gap, and the WAL keeps old page versions. ``VACUUM`` rebuilds every page
    from the live rows (and drops free pages); the checkpoint then copies the
    rebuilt pages over the old ones and empties the WAL. Costs O(file size).

    Raises:
        sqlite3.Error: the rewrite or the checkpoint could not complete (translated by the caller).
    """
    conn.execute("VACUUM")
    busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        raise sqlite3.OperationalError("the WAL checkpoint was blocked")


# ------------------------------------------------------------------------------- layout


def read_meta(conn: sqlite3.Connection, path: Path) -> dict[object, object] | None:
    """Return the header records, or None if the file is new (no tables).

    Raises:
        StoreCorruptError: the tables are not the store's or the file fails ``quick_check``.
    """
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None
    if tables != TABLES or conn.execute("PRAGMA quick_check").fetchall() != [(b"ok",)]:
        raise corrupt(path, "its structure is damaged")
    return dict(conn.execute("SELECT name, value FROM meta").fetchall())


def create_schema(conn: sqlite3.Connection, meta: dict[str, bytes]) -> None:
    """Create the tables and write the header records (inside the caller's transaction)."""
    for statement in SCHEMA:
        conn.execute(statement)
    conn.executemany("INSERT INTO meta(name, value) VALUES (?, ?)", list(meta.items()))


def set_key_id(conn: sqlite3.Connection, key_id: bytes) -> None:
    """Record which master key the file is now under."""
    conn.execute("UPDATE meta SET value = ? WHERE name = 'key_id'", (key_id,))


# ------------------------------------------------------------------------------- subjects


def subject_ref(conn: sqlite3.Connection, sid: bytes) -> bytes | None:
    """Return the row reference of the subject with row key ``sid``, if it exists."""
    row = conn.execute("SELECT ref FROM subjects WHERE sid = ?", (sid,)).fetchone()
    return None if row is None else blobs(row)[0]


def wrapped_key(conn: sqlite3.Connection, sid: bytes) -> tuple[bytes, bytes] | None:
    """Return ``(ref, wrapped data key)`` of the subject with row key ``sid``, if any."""
    row = conn.execute("SELECT ref, wrapped FROM subjects WHERE sid = ?", (sid,)).fetchone()
    if row is None:
        return None
    ref, wrapped = blobs(row)
    return ref, wrapped


def all_subjects(conn: sqlite3.Connection) -> list[list[bytes]]:
    """Return every subject row as ``[ref, sid, wrapped, sealed_name]``."""
    return [blobs(row) for row in conn.execute("SELECT ref, sid, wrapped, sealed_name FROM subjects")]


def insert_subject(
    conn: sqlite3.Connection, ref: bytes, sid: bytes, wrapped: bytes, sealed_name: bytes
) -> None:
    """Add a subject row."""
    conn.execute(
        "INSERT INTO subjects(ref, sid, wrapped, sealed_name) VALUES (?, ?, ?, ?)",
        (ref, sid, wrapped, sealed_name),
    )


def update_subject(
    conn: sqlite3.Connection, ref: bytes, sid: bytes, wrapped: bytes, sealed_name: bytes
) -> None:
    """Replace a subject row's row key, wrapped key and sealed name."""
    conn.execute(
        "UPDATE subjects SET sid = ?, wrapped = ?, sealed_name = ? WHERE ref = ?",
        (sid, wrapped, sealed_name, ref),
    )


def delete_subject(conn: sqlite3.Connection, ref: bytes) -> None:
    """Delete a subject row and all its records."""
    conn.execute("DELETE FROM records WHERE ref = ?", (ref,))
    conn.execute("DELETE FROM subjects WHERE ref = ?", (ref,))


# ------------------------------------------------------------------------------- records


def get_record(conn: sqlite3.Connection, ref: bytes, rid: bytes) -> bytes | None:
    """Return a record's sealed value, if it exists."""
    row = conn.execute("SELECT sealed FROM records WHERE ref = ? AND rid = ?", (ref, rid)).fetchone()
    return None if row is None else blobs(row)[0]


def put_record(conn: sqlite3.Connection, ref: bytes, rid: bytes, sealed: bytes) -> None:
    """Insert or replace a record's sealed value."""
    conn.execute(
        "INSERT INTO records(ref, rid, sealed) VALUES (?, ?, ?) "
        "ON CONFLICT(ref, rid) DO UPDATE SET sealed = excluded.sealed",
        (ref, rid, sealed),
    )


def delete_record(conn: sqlite3.Connection, ref: bytes, rid: bytes) -> bool:
    """Delete one record; return True if it existed."""
    return conn.execute("DELETE FROM records WHERE ref = ? AND rid = ?", (ref, rid)).rowcount > 0
