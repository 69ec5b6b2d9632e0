"""Where the privacy ledger's lines live: a file, SQLite or PostgreSQL (IO only).

Every store holds the same signed, hash-chained lines (:mod:`.ledger` makes
and verifies them); a store only reads them all and appends one under a lock
that makes check-and-append atomic:

* :class:`FileStore`: one line per entry, an exclusive ``flock``, ``fsync``
  (a torn last line is cut off by the next append).
* :class:`SQLiteStore` and :class:`PostgresStore`: a table
  ``privacy_ledger(seq PRIMARY KEY, line)``, written in one transaction
  (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``LOCK TABLE … IN EXCLUSIVE MODE``).
  Append-only in the database itself: triggers refuse ``UPDATE``, ``DELETE``
  (and ``TRUNCATE`` on PostgreSQL), and an insert whose ``seq`` is not the
  last one plus one. There is no code path that updates or deletes a row.
  Someone who may drop triggers or the table can still rewrite history: that
  is what the audit's head check (:mod:`.ledger_audit`) is for.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psycopg
from psycopg.rows import TupleRow

from edgepersona.sdk import InputError

__all__ = ["Appended", "FileStore", "LedgerStore", "PostgresStore", "SQLiteStore", "open_store"]


@dataclass(frozen=True)
class Appended:
    """One new line: it becomes entry ``seq``; a file keeps its first ``keep`` bytes before it."""

    keep: int
    seq: int
    line: bytes


Build = Callable[[bytes], Appended]


class LedgerStore(Protocol):
    """What the ledger needs from a place to keep its lines."""

    def read(self) -> bytes:
        """Every line, each ending in a newline (a file may end in a torn line)."""
        ...

    def append(self, build: Build) -> None:
        """Under an exclusive lock: read, let ``build`` check and make a line, write it."""
        ...


def open_store(where: str | os.PathLike[str]) -> LedgerStore:
    """The store for a path or a database URL.

    Args:
        where: a file path, ``sqlite:///path.db`` or ``postgresql://…``.

    Returns:
        The store.
    """
    text = os.fspath(where)
    if text.startswith("sqlite:///"):
        return SQLiteStore(Path(text[len("sqlite:///"):]))
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresStore(text)
    return FileStore(Path(text))


class FileStore:
    """The ledger as one file of lines (created on first append, mode 0600).

    Args:
        path: the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> bytes:
        """The file's bytes, under a shared lock (empty when it does not exist).

        Returns:
            The bytes.
        """
        if not self.path.exists():
            return b""
        with self.path.open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            return handle.read()

    def append(self, build: Build) -> None:
        """Under an exclusive lock: read, build, cut a torn tail, write one line, fsync.

        Args:
            build: checks the current bytes and returns the line to add.
        """
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            new = build(data)
            fix = b"\n" if new.keep and data[new.keep - 1:new.keep] != b"\n" else b""
            os.ftruncate(fd, new.keep)
            _write_all(fd, fix + new.line + b"\n", new.keep)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.path.parent)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    """Write every byte at ``offset`` (a crash part-way leaves a torn tail)."""
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_ledger (
    seq INTEGER PRIMARY KEY CHECK (seq >= 0), line TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS privacy_ledger_no_update BEFORE UPDATE ON privacy_ledger
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS privacy_ledger_no_delete BEFORE DELETE ON privacy_ledger
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS privacy_ledger_next_seq BEFORE INSERT ON privacy_ledger
WHEN NEW.seq != (SELECT COALESCE(MAX(seq), -1) + 1 FROM privacy_ledger)
BEGIN SELECT RAISE(ABORT, 'the privacy ledger sequence must grow by one'); END;
"""


def _joined(rows: list[tuple[int, str]]) -> bytes:
    """Rows as the file form's bytes (a gap in seq shows up as a broken chain)."""
    return b"".join(line.encode("ascii") + b"\n" for _, line in rows)


class SQLiteStore:
    """The ledger as an append-only SQLite table (the collector's driver, sqlite3).

    Args:
        path: the database file (created with the table and its triggers).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as conn:
            conn.executescript(_SQLITE_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        """A connection in autocommit mode (transactions are explicit)."""
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def read(self) -> bytes:
        """Every line in seq order.

        Returns:
            The lines as bytes.
        """
        conn = self._connect()
        try:
            return _joined(conn.execute("SELECT seq, line FROM privacy_ledger ORDER BY seq").fetchall())
        finally:
            conn.close()

    def append(self, build: Build) -> None:
        """In one ``BEGIN IMMEDIATE`` transaction: read, build, insert.

        Args:
            build: checks the current lines and returns the line to add.
        """
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute("SELECT seq, line FROM privacy_ledger ORDER BY seq").fetchall()
                new = build(_joined(rows))
                conn.execute("INSERT INTO privacy_ledger (seq, line) VALUES (?, ?)",
                             (new.seq, new.line.decode("ascii")))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()


_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_ledger (
    seq BIGINT PRIMARY KEY CHECK (seq >= 0), line TEXT NOT NULL);
CREATE OR REPLACE FUNCTION privacy_ledger_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the privacy ledger is append-only'; END $$;
CREATE OR REPLACE FUNCTION privacy_ledger_next_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.seq <> (SELECT COALESCE(MAX(seq), -1) + 1 FROM privacy_ledger) THEN
    RAISE EXCEPTION 'the privacy ledger sequence must grow by one';
  END IF;
  RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER privacy_ledger_no_change BEFORE UPDATE OR DELETE ON privacy_ledger
  FOR EACH ROW EXECUTE FUNCTION privacy_ledger_refuse();
CREATE OR REPLACE TRIGGER privacy_ledger_no_truncate BEFORE TRUNCATE ON privacy_ledger
  FOR EACH STATEMENT EXECUTE FUNCTION privacy_ledger_refuse();
CREATE OR REPLACE TRIGGER privacy_ledger_seq BEFORE INSERT ON privacy_ledger
  FOR EACH ROW EXECUTE FUNCTION privacy_ledger_next_seq();
"""


class PostgresStore:
    """The ledger as an append-only PostgreSQL table (the collector's driver, psycopg).

    Args:
        url: the database URL (its password is never put in a message).

    Raises:
        InputError: the server cannot be reached.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('edgepersona.privacy_ledger'))")
            row = conn.execute("SELECT to_regclass('privacy_ledger')").fetchone()
            if row is None or row[0] is None:  # an auditor's read-only role never runs DDL
                conn.execute(_POSTGRES_SCHEMA.encode())

    def _connect(self) -> psycopg.Connection[TupleRow]:
        """A connection, or one clear error without the URL."""
        try:
            return psycopg.connect(self._url, autocommit=True)
        except psycopg.OperationalError:
            raise InputError("cannot connect to the PostgreSQL privacy ledger; check the URL and"
                             " that the server is up") from None

    def read(self) -> bytes:
        """Every line in seq order.

        Returns:
            The lines as bytes.
        """
        with self._connect() as conn:
            return _joined(conn.execute("SELECT seq, line FROM privacy_ledger ORDER BY seq").fetchall())

    def append(self, build: Build) -> None:
        """In one transaction holding the table's exclusive lock: read, build, insert.

        Args:
            build: checks the current lines and returns the line to add.
        """
        with self._connect() as conn, conn.transaction():
            conn.execute("LOCK TABLE privacy_ledger IN EXCLUSIVE MODE")
            rows = conn.execute("SELECT seq, line FROM privacy_ledger ORDER BY seq").fetchall()
            new = build(_joined(rows))
            conn.execute("INSERT INTO privacy_ledger (seq, line) VALUES (%s, %s)",
                         (new.seq, new.line.decode("ascii")))
