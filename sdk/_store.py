"""The encrypted local store that keeps the device's state (a safe recipe).

It holds opaque ``bytes`` records per subject (serialised fold state) and a
few global records (pseudonym secret, trusted bundle version, sync queue)
under the reserved subject :attr:`EncryptedStore.GLOBAL`. It is a small
recipe over two lower layers: the key schedule and associated data
(:mod:`edgepersona.sdk._store_keys`: bytes in, bytes out, no IO) and the
SQLite file (:mod:`edgepersona.sdk._store_sqlite`: connection, pragmas,
transactions, rows).

Design
------
**Keys** (see :mod:`edgepersona.sdk._store_keys`). A 32-byte *master key*
lives outside the store file, in a :class:`KeyProvider` (an app keystore,
:class:`FileKeyProvider` for gateways, :class:`MemoryKeyProvider` for tests).
Each subject has its own random data key, wrapped under the master key; every
record is sealed with ChaCha20-Poly1305 under its subject's data key and bound
to its store, subject and name. Subject and record names never reach the
disk in clear: rows are found by keyed hashes.

**Durability: SQLite.** The file is SQLite (stdlib) in WAL mode with
``synchronous=FULL``; every ``put``/``put_many``/``delete``/``forget`` is one
transaction: after it returns it survives a crash or power loss (on storage
that honours fsync); a crash during it leaves the previous state. Chosen
over whole-file atomic replace because a write costs O(record), not O(store)
(a gateway holds many subjects), batches are atomic for free, and SQLite's
WAL recovery is far better tested than a new file format would be.

**Forgetting (crypto-shredding, then scrubbing).** :meth:`EncryptedStore.forget`
(1) has the provider durably add a fresh master key, (2) in one transaction
deletes the subject's rows and rewraps every other data key, re-keys the name
index and re-seals the names under the new master key, (3) rewrites the file
from its live rows (``VACUUM``, with ``secure_delete`` on) and truncates the
WAL, (4) has the provider destroy the old master key. So no byte the
subject's rows ever held (sealed values, wrapped key, row keys, sealed name)
is left in the store file or its side files. A crash at any point is finished
or undone by the next open; so is a failed ``forget``, which closes the store
(reopen it). The subject's data key exists only wrapped under a destroyed
key, so no copy of the store file, old or new, together with every current
key decrypts it, nor links the old rows to the subject's name.

What is **not** guaranteed:

* physical erasure of the old key or of overwritten pages on flash/SSD (wear
  levelling), copy-on-write or snapshotting file systems (btrfs, ZFS, APFS),
  or backups of the key file: keep the key in a hardware-backed keystore, or
  exclude it from backups;
* freshness: an attacker who can write the file can delete whole records or
  restore an older copy made since the last ``forget`` (each record is
  authentic, the set of records is not);
* secrecy of sizes, counts and write times, or of memory of a running app.

**Errors when opening** (see :mod:`edgepersona.sdk._store_header`): a key
provider with no key for an existing store is a :class:`StoreError` that says
where the key was expected (restore it; a reset would lose the state); a
store under another key, or damaged, is a :class:`StoreCorruptError` that
says which and names the recovery (:meth:`EncryptedStore.reset` or
``open(..., reset_if_corrupt=True)``). Records are authenticated when read.
Environment failures (missing directory, read-only, disk full, store open
elsewhere) raise :class:`StoreError` and keep the last committed state. A
missing or empty file is a new, empty store.

**Threads and processes.** One lock serialises every operation, so a store
may be shared by threads. A store file is opened by one ``EncryptedStore``
at a time (SQLite exclusive locking); a second open fails with StoreError.
Use one KeyProvider per store.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import ClassVar, Final, Self

from edgepersona.sdk import _store_sqlite as rows
from edgepersona.sdk._keystore import (
    KEY_BYTES,
    FileKeyProvider,
    KeyProvider,
    MemoryKeyProvider,
)
from edgepersona.sdk._store_header import attach
from edgepersona.sdk._store_keys import (
    REF_BYTES,
    AssociatedData,
    MasterKeys,
    SubjectKeys,
    new_master_key,
    open_subject_name,
    seal,
    unseal,
    unwrap_data_key,
    wrap_subject,
)
from edgepersona.sdk._store_sqlite import translated_errors
from edgepersona.sdk.errors import InputError, StoreCorruptError, StoreError

__all__ = ["EncryptedStore", "FileKeyProvider", "KeyProvider", "MemoryKeyProvider"]

_MAX_CACHED_SUBJECTS: Final = 1024  # unwrapped subject keys kept in memory


def _utf8(value: str, what: str, *, allow_empty: bool) -> bytes:
    """Validate a subject or record name and return its UTF-8 bytes."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value and not allow_empty:
        raise InputError(f"{what} must be a non-empty string")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{what} is not encodable as UTF-8 (lone surrogate?)") from None


class EncryptedStore:
    """Per-subject encrypted records in one SQLite file; see the module notes.

    Open it with :meth:`open`; use it as a context manager or call :meth:`close`.

    Args:
        path: the store file; its folder must exist.
        key_provider: where the master key lives.

    Raises:
        StoreError: the folder is missing, the file cannot be opened or
            written, it is in use, it was written by a newer SDK, or its
            master key is missing.
        StoreCorruptError: the file is tampered or truncated, or was written
            under another master key.
    """

    GLOBAL: ClassVar[str] = ""
    """The reserved subject of global records; never listed by :meth:`subjects`."""

    def __init__(self, path: str | os.PathLike[str], key_provider: KeyProvider) -> None:
        self._path = Path(path)
        self._provider = key_provider
        self._lock = threading.RLock()
        self._cache: dict[str, SubjectKeys] = {}
        if not self._path.parent.is_dir():
            raise StoreError(
                f"folder {self._path.parent} of the encrypted store does not exist; create it first"
            )
        self._conn: sqlite3.Connection | None = None
        with translated_errors(self._path):
            rows.create_file(self._path)
            conn = self._connect()
            try:
                self._store_id, self._master = self._attach(conn)
                self._ad = AssociatedData.for_store(self._store_id)
                if len(self._provider.load_keys()) > 1:  # a forget was interrupted: finish it
                    rows.scrub(conn)
                self._provider.destroy_other_keys(self._master.raw)
            except BaseException:
                conn.close()
                raise
            self._conn = conn

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        key_provider: KeyProvider,
        *,
        reset_if_corrupt: bool = False,
    ) -> Self:
        """Open (or create) the store at ``path``.

        Args:
            path: the store file; its folder must exist.
            key_provider: where the master key lives (one provider per store).
            reset_if_corrupt: if the store cannot be opened because it is
                corrupt or written under another key, delete it and start
                empty. A *missing* key is not corruption: the store is kept.

        Returns:
            The open store.

        Raises:
            StoreError: the folder is missing, the file cannot be opened or
                written, it is in use, it was written by a newer SDK, or the
                key provider holds no key for an existing store.
            StoreCorruptError: the file is corrupt and ``reset_if_corrupt`` is False.
        """
        try:
            return cls(path, key_provider)
        except StoreCorruptError:
            if not reset_if_corrupt:
                raise
        cls.reset(path)
        return cls(path, key_provider)

    @staticmethod
    def reset(path: str | os.PathLike[str], key_provider: KeyProvider | None = None) -> None:
        """Delete the store file (and its WAL); the next open starts an empty store.

        Call it only while no ``EncryptedStore`` has the file open.

        Args:
            path: the store file.
            key_provider: if given, its keys are replaced by a fresh one now, so
                any copy of the deleted store can no longer be decrypted.

        Raises:
            StoreError: a file cannot be deleted or a key cannot be replaced.
        """
        rows.delete_files(Path(path))
        if key_provider is not None:
            held = key_provider.load_keys()
            if held:
                key_provider.destroy_other_keys(held[-1])
            fresh = new_master_key()
            key_provider.add_key(fresh)
            key_provider.destroy_other_keys(fresh)

    @property
    def path(self) -> Path:
        """The store file."""
        return self._path

    def get(self, subject: str, name: str) -> bytes | None:
        """Return the record ``name`` of ``subject``, or None if absent.

        Args:
            subject: the subject, or :attr:`GLOBAL`.
            name: the record name.

        Returns:
            The record's bytes, or None.

        Raises:
            TypeError: ``subject`` or ``name`` is not a str.
            InputError: ``name`` is empty or either is not UTF-8 encodable.
            StoreCorruptError: the record failed authentication.
            StoreError: the store is closed or cannot be read.
        """
        subject_bytes = _utf8(subject, "subject", allow_empty=True)
        name_bytes = _utf8(name, "record name", allow_empty=False)
        with self._operation() as conn:
            keys = self._subject_keys(conn, subject, subject_bytes)
            sealed = None if keys is None else rows.get_record(conn, keys.ref, keys.record_id(name_bytes))
            if keys is None or sealed is None:
                return None
            return unseal(keys.aead, sealed, self._ad.record(subject_bytes, name_bytes))

    def put(self, subject: str, name: str, value: bytes) -> None:
        """Durably store ``value`` as the record ``name`` of ``subject`` (replacing it).

        Args:
            subject: the subject, or :attr:`GLOBAL`.
            name: the record name.
            value: the bytes to keep.

        Raises:
            TypeError: an argument has the wrong type.
            InputError: ``name`` is empty or a text is not UTF-8 encodable.
            StoreCorruptError: the subject's key failed authentication.
            StoreError: the store is closed or cannot be written; nothing changed.
        """
        self.put_many([(subject, name, value)])

    def put_many(self, records: Iterable[tuple[str, str, bytes]]) -> None:
        """Durably store several records in one atomic transaction: all or none.

        Args:
            records: ``(subject, name, value)`` triples.

        Raises:
            TypeError: an argument has the wrong type.
            InputError: a name is empty or a text is not UTF-8 encodable.
            StoreCorruptError: a subject's key failed authentication.
            StoreError: the store is closed or cannot be written; nothing changed.
        """
        checked = []
        for subject, name, value in records:
            if not isinstance(value, bytes):
                raise TypeError(f"record value must be bytes, got {type(value).__name__}")
            subject_bytes = _utf8(subject, "subject", allow_empty=True)
            checked.append((subject, subject_bytes, _utf8(name, "record name", allow_empty=False), value))
        with self._operation() as conn, self._transaction(conn):
            for subject, subject_bytes, name_bytes, value in checked:
                keys = self._subject_keys(conn, subject, subject_bytes) or self._new_subject_keys(
                    conn, subject, subject_bytes
                )
                sealed = seal(keys.aead, value, self._ad.record(subject_bytes, name_bytes))
                rows.put_record(conn, keys.ref, keys.record_id(name_bytes), sealed)

    def delete(self, subject: str, name: str) -> bool:
        """Delete one record (not a crypto-shred; use :meth:`forget` for a subject).

        Args:
            subject: the subject, or :attr:`GLOBAL`.
            name: the record name.

        Returns:
            True if a record was deleted.

        Raises:
            TypeError: an argument has the wrong type.
            InputError: ``name`` is empty or a text is not UTF-8 encodable.
            StoreError: the store is closed or cannot be written.
        """
        subject_bytes = _utf8(subject, "subject", allow_empty=True)
        name_bytes = _utf8(name, "record name", allow_empty=False)
        with self._operation() as conn, self._transaction(conn):
            keys = self._subject_keys(conn, subject, subject_bytes)
            return keys is not None and rows.delete_record(conn, keys.ref, keys.record_id(name_bytes))

    def subjects(self) -> list[str]:
        """Return the subjects that have a key in the store (not :attr:`GLOBAL`), sorted.

        Returns:
            The subject names.

        Raises:
            StoreCorruptError: a subject row failed authentication.
            StoreError: the store is closed or cannot be read.
        """
        with self._operation() as conn:
            names = [
                open_subject_name(self._master, self._ad, ref, sid, sealed_name)
                for ref, sid, _wrapped, sealed_name in rows.all_subjects(conn)
            ]
        return sorted(name.decode("utf-8") for name in names if name)

    def forget(self, subject: str) -> bool:
        """Forget ``subject``: crypto-shred its records, then scrub their pages.

        Rotates the master key and checkpoints the WAL (see the module notes);
        costs one pass over the subjects. Afterwards no byte of the subject's
        rows is left in the store file or its side files, and its records are
        undecryptable in every copy of the store.

        Args:
            subject: the subject to forget (not :attr:`GLOBAL`).

        Returns:
            True if the subject was in the store; False if there was nothing to forget.

        Raises:
            TypeError: ``subject`` is not a str.
            InputError: ``subject`` is :attr:`GLOBAL` or not UTF-8 encodable.
            StoreCorruptError: a subject row failed authentication.
            StoreError: the store is closed or cannot be written (the store is
                then closed: reopen it), the old key could not be destroyed
                (the next open retries), or the file could not be scrubbed
                (the records are shredded; call :meth:`scrub` again).
        """
        if subject == self.GLOBAL:
            raise InputError("the GLOBAL subject cannot be forgotten; delete its records instead")
        subject_bytes = _utf8(subject, "subject", allow_empty=False)
        with self._operation() as conn:
            ref = rows.subject_ref(conn, self._master.subject_id(subject_bytes))
            if ref is None:
                return False
            self._shred(conn, ref)
            self._cache.pop(subject, None)
            try:  # scrub while the old key is held: after a crash in between, open scrubs again
                rows.scrub(conn)
            except sqlite3.Error as exc:
                self._provider.destroy_other_keys(self._master.raw)
                raise StoreError(
                    f"encrypted store {self._path}: the subject is forgotten (its records can no "
                    f"longer be decrypted), but the file could not be scrubbed of its deleted pages "
                    f"({exc}); fix the cause (free disk space?) and call scrub()"
                ) from exc
            self._provider.destroy_other_keys(self._master.raw)
            return True

    def scrub(self) -> None:
        """Rewrite the file from its live rows and empty the WAL (what :meth:`forget` ends with).

        Afterwards no deleted record is left in the store file or its side
        files. Costs O(file size); needs free space for a second copy.

        Raises:
            StoreError: the store is closed, or the disk is full or read-only.
        """
        with self._operation() as conn:
            rows.scrub(conn)

    def close(self) -> None:
        """Close the store; further calls raise StoreError. Idempotent.

        Raises:
            StoreError: the final checkpoint failed (the data is still safe in the WAL).
        """
        with self._lock:
            conn, self._conn = self._conn, None
            self._cache.clear()
            if conn is not None:
                with translated_errors(self._path):
                    conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"EncryptedStore({str(self._path)!r}, {state})"

    # ----------------------------------------------------------------------- internals

    def _connect(self) -> sqlite3.Connection:
        """The SQLite connection (a method, so fault-injection tests can wrap it)."""
        return rows.connect(self._path)

    def _attach(self, conn: sqlite3.Connection) -> tuple[bytes, MasterKeys]:
        """Create the schema or check the file, and find the master key that opens it."""
        return attach(conn, self._path, self._provider)

    def _subject_keys(
        self, conn: sqlite3.Connection, subject: str, subject_bytes: bytes
    ) -> SubjectKeys | None:
        """The keys of an existing subject, from the cache or unwrapped from its row."""
        keys = self._cache.get(subject)
        if keys is None:
            row = rows.wrapped_key(conn, self._master.subject_id(subject_bytes))
            if row is None:
                return None
            ref, wrapped = row
            data_key = unwrap_data_key(self._master, self._ad, ref, subject_bytes, wrapped)
            keys = self._remember(subject, SubjectKeys.derive(ref, data_key))
        return keys

    def _new_subject_keys(self, conn: sqlite3.Connection, subject: str, subject_bytes: bytes) -> SubjectKeys:
        """Add a subject row with a fresh data key (inside the caller's transaction)."""
        ref, data_key = secrets.token_bytes(REF_BYTES), secrets.token_bytes(KEY_BYTES)
        row = wrap_subject(self._master, self._ad, ref, subject_bytes, data_key)
        rows.insert_subject(conn, ref, row.sid, row.wrapped, row.sealed_name)
        return self._remember(subject, SubjectKeys.derive(ref, data_key))

    def _remember(self, subject: str, keys: SubjectKeys) -> SubjectKeys:
        """Cache unwrapped subject keys, bounded, oldest out first."""
        if len(self._cache) >= _MAX_CACHED_SUBJECTS:
            self._cache.pop(next(iter(self._cache)))
        self._cache[subject] = keys
        return keys

    def _shred(self, conn: sqlite3.Connection, ref: bytes) -> None:
        """Delete a subject's rows and move every other row to a fresh master key, atomically."""
        new = MasterKeys.derive(new_master_key(), self._store_id)
        self._provider.add_key(new.raw)
        try:
            with self._transaction(conn):
                rows.delete_subject(conn, ref)
                self._rewrap_subjects(conn, self._master, new)
                rows.set_key_id(conn, new.key_id)
        except BaseException:
            # A failed COMMIT may still have landed: rather than guess which key the
            # file is under, close; the next open checks and destroys the other key.
            self._conn = None
            self._cache.clear()
            with suppress(sqlite3.Error):
                conn.close()
            raise
        self._master = new

    def _rewrap_subjects(self, conn: sqlite3.Connection, old: MasterKeys, new: MasterKeys) -> None:
        """Move every subject row from the old master key to the new one."""
        for ref, sid, wrapped, sealed_name in rows.all_subjects(conn):
            name = open_subject_name(old, self._ad, ref, sid, sealed_name)
            data_key = unwrap_data_key(old, self._ad, ref, name, wrapped)
            row = wrap_subject(new, self._ad, ref, name, data_key)
            rows.update_subject(conn, ref, row.sid, row.wrapped, row.sealed_name)

    @contextmanager
    def _operation(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock, refuse a closed store and translate every low-level error."""
        with self._lock:
            if self._conn is None:
                raise StoreError(f"encrypted store {self._path} is closed")
            with translated_errors(self._path):
                yield self._conn

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        """One atomic write transaction; on failure drop cached keys (they may be uncommitted)."""
        try:
            with rows.transaction(conn):
                yield
        except BaseException:
            self._cache.clear()
            raise
