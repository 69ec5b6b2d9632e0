"""The encrypted local store that keeps the device's state (a safe recipe).

It holds opaque ``bytes`` records per subject (serialised fold state) and a
few global records (pseudonym secret, trusted bundle version, sync queue)
under the reserved subject :attr:`EncryptedStore.GLOBAL`.

Design
------
**Keys.** A 32-byte *master key* lives outside the store file, in a
:class:`KeyProvider` (an app keystore, :class:`FileKeyProvider` for gateways,
:class:`MemoryKeyProvider` for tests). Each subject has its own random data
key, stored *wrapped* (encrypted) under a key derived from the master key.
Every record is sealed with ChaCha20-Poly1305 (fast in software on ARM) under
its subject's data key, with a fresh random 96-bit nonce per write (safe for
about 2**32 writes per subject key); the
associated data binds the store id, the format version, the subject and the
record name, so a record moved to another subject or name, or to another
store, fails to open.

**No names in clear.** A subject's row key is ``HMAC(index key, subject)``
and its name is kept sealed (for :meth:`EncryptedStore.subjects`); a record's
row key is ``HMAC(subject key, name)``. Both keys are derived from secrets.

**Durability: SQLite.** The file is SQLite (stdlib) in WAL mode with
``synchronous=FULL``; every ``put``/``put_many``/``delete``/``forget`` is one
transaction: after it returns it survives a crash or power loss (on storage
that honours fsync); a crash during it leaves the previous state. Chosen
over whole-file atomic replace because a write costs O(record), not O(store)
(a gateway holds many subjects), batches are atomic for free, and SQLite's
WAL recovery is far better tested than a new file format would be.

**Forgetting (crypto-shredding).** :meth:`EncryptedStore.forget` (1) has the
provider durably add a fresh master key, (2) in one transaction deletes the
subject's rows and rewraps every other data key, re-keys the name index and
re-seals the names under the new master key, (3) has the provider destroy the
old master key. A crash at any point is finished or undone by the next open;
so is a failed ``forget``, which closes the store (reopen it).
Afterwards the subject's data key exists only wrapped under a destroyed key,
so no copy of the store file, old or new, together with every current key
decrypts it, nor links the old rows to the subject's name.

What is **not** guaranteed:

* physical erasure of the old key on flash/SSD (wear levelling), copy-on-write
  or snapshotting file systems (btrfs, ZFS, APFS), or backups of the key file:
  keep the key in a hardware-backed keystore, or exclude it from backups;
* freshness: an attacker who can write the file can delete whole records or
  restore an older copy made since the last ``forget`` (each record is
  authentic, the set of records is not);
* secrecy of sizes, counts and write times, or of memory of a running app.

**Corruption.** Opening runs SQLite's ``quick_check`` and checks the master
key; a record is authenticated when read. Tampering, truncation and a wrong
key raise :class:`StoreCorruptError`, whose message names the recovery:
:meth:`EncryptedStore.reset` or ``open(..., reset_if_corrupt=True)``.
Environment failures (missing directory, read-only, disk full, store open
elsewhere) raise :class:`StoreError` and keep the last committed state. A
missing or empty file is a new, empty store.

**Threads and processes.** One lock serialises every operation, so a store
may be shared by threads. A store file is opened by one ``EncryptedStore``
at a time (SQLite exclusive locking); a second open fails with StoreError.
Use one KeyProvider per store.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Final, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from edgepersona.sdk._keystore import (
    KEY_BYTES,
    FileKeyProvider,
    KeyProvider,
    MemoryKeyProvider,
    checked_key,
    os_errors,
)
from edgepersona.sdk.errors import InputError, StoreCorruptError, StoreError

__all__ = ["EncryptedStore", "FileKeyProvider", "KeyProvider", "MemoryKeyProvider"]

FORMAT_VERSION: Final = 1
_LABEL: Final = b"edgepersona/store/v1"
_KEY_BYTES: Final = KEY_BYTES  # bytes, master and subject keys
_NONCE_BYTES: Final = 12  # bytes, ChaCha20-Poly1305 nonce
_STORE_ID_BYTES: Final = 16  # bytes
_BUSY_TIMEOUT_S: Final = 2.0  # seconds to wait for a store held by someone else
_MAX_CACHED_SUBJECTS: Final = 1024  # unwrapped subject keys kept in memory
_SIDE_FILES: Final = ("", "-wal", "-shm", "-journal")
_TABLES: Final = frozenset({b"meta", b"subjects", b"records"})  # text comes back as bytes
_SCHEMA: Final = (
    "CREATE TABLE meta(name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE subjects(ref BLOB PRIMARY KEY, sid BLOB NOT NULL UNIQUE,"
    " wrapped BLOB NOT NULL, sealed_name BLOB NOT NULL)",
    "CREATE TABLE records(ref BLOB NOT NULL, rid BLOB NOT NULL, sealed BLOB NOT NULL, PRIMARY KEY(ref, rid))",
)
# SQLite primary result codes that describe the environment, not the file's content.
_ENVIRONMENT_CODES: Final = {
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


def _encode_fields(*fields: bytes) -> bytes:
    """Length-prefix each field so that no two field tuples share an encoding."""
    return b"".join(struct.pack(">I", len(field)) + field for field in fields)


def _hmac_sha256(key: bytes, *fields: bytes) -> bytes:
    """HMAC-SHA256 over unambiguously encoded fields (key derivation and row keys)."""
    return hmac.digest(key, _encode_fields(_LABEL, *fields), hashlib.sha256)


def _seal(aead: ChaCha20Poly1305, plaintext: bytes, aad: bytes) -> bytes:
    """Nonce || ciphertext+tag, with a fresh random nonce per call."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + aead.encrypt(nonce, plaintext, aad)


def _unseal(aead: ChaCha20Poly1305, sealed: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`_seal`; raises InvalidTag on any tampering or wrong key."""
    if not isinstance(sealed, bytes) or len(sealed) < _NONCE_BYTES + 16:
        raise InvalidTag
    return aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], aad)


def _blobs(row: Sequence[object]) -> list[bytes]:
    """Row values as bytes; anything else means the file was edited (reported as corrupt)."""
    blobs = [value for value in row if isinstance(value, bytes)]
    if len(blobs) != len(row):
        raise InvalidTag
    return blobs


@dataclass(frozen=True, slots=True)
class _MasterKeys:
    """Everything derived from one master key for one store."""

    raw: bytes
    key_id: bytes  # stored in clear; only the right master key reproduces it
    index: bytes  # HMAC key of subject row keys
    wrap: ChaCha20Poly1305  # seals subject keys and subject names

    @classmethod
    def derive(cls, raw: bytes, store_id: bytes) -> _MasterKeys:
        wrap = ChaCha20Poly1305(_hmac_sha256(raw, b"wrap", store_id))
        return cls(
            raw=raw,
            key_id=_hmac_sha256(raw, b"key-id", store_id, struct.pack(">I", FORMAT_VERSION)),
            index=_hmac_sha256(raw, b"index", store_id),
            wrap=wrap,
        )

    def subject_id(self, subject: bytes) -> bytes:
        return _hmac_sha256(self.index, b"subject", subject)


@dataclass(frozen=True, slots=True)
class _SubjectKeys:
    """A subject's stable row reference and the keys derived from its data key."""

    ref: bytes
    aead: ChaCha20Poly1305
    rid_key: bytes

    @classmethod
    def derive(cls, ref: bytes, data_key: bytes) -> _SubjectKeys:
        aead = ChaCha20Poly1305(_hmac_sha256(data_key, b"record"))
        return cls(ref=ref, aead=aead, rid_key=_hmac_sha256(data_key, b"record-id"))

    def record_id(self, name: bytes) -> bytes:
        return _hmac_sha256(self.rid_key, b"name", name)


def _matching_master(keys: list[bytes], store_id: bytes, key_id: bytes) -> _MasterKeys | None:
    """The held master key whose key id the store file names, if any."""
    for raw in keys:
        master = _MasterKeys.derive(raw, store_id)
        if hmac.compare_digest(master.key_id, key_id):
            return master
    return None


# --------------------------------------------------------------------------- the store


def _corrupt(path: Path, what: str) -> StoreCorruptError:
    """The one corruption error, naming the documented recovery."""
    return StoreCorruptError(
        f"encrypted store {path} is unusable: {what} (tampered, truncated or another key). "
        f"Recover with EncryptedStore.reset({str(path)!r}) or EncryptedStore.open(..., "
        "reset_if_corrupt=True); its local state is lost and will be rebuilt."
    )


@contextmanager
def _translated_errors(path: Path) -> Iterator[None]:
    """Never let a raw sqlite3/cryptography/OS error reach the app."""
    try:
        yield
    except InvalidTag:
        raise _corrupt(path, "a record or key failed authentication") from None
    except UnicodeDecodeError:  # SQLite quoting a damaged schema name in its message
        raise _corrupt(path, "its schema is damaged") from None
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        reason = _ENVIRONMENT_CODES.get(code & 0xFF) if isinstance(code, int) else None
        if reason is None and isinstance(code, int):
            raise _corrupt(path, f"SQLite reports {exc}") from None
        raise StoreError(
            f"encrypted store {path}: {reason or exc}; the last committed state is kept"
        ) from exc
    except OSError as exc:
        raise StoreError(f"encrypted store {path}: {exc.strerror or exc}") from exc


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
            written, it is in use, or it was written by a newer SDK.
        StoreCorruptError: the file is tampered or truncated, or no key of
            ``key_provider`` opens it.
    """

    GLOBAL: ClassVar[str] = ""
    """The reserved subject of global records; never listed by :meth:`subjects`."""

    def __init__(self, path: str | os.PathLike[str], key_provider: KeyProvider) -> None:
        self._path = Path(path)
        self._provider = key_provider
        self._lock = threading.RLock()
        self._cache: dict[str, _SubjectKeys] = {}
        if not self._path.parent.is_dir():
            raise StoreError(
                f"folder {self._path.parent} of the encrypted store does not exist; create it first"
            )
        self._conn: sqlite3.Connection | None = None
        with _translated_errors(self._path):
            with suppress(FileExistsError):  # owner-only from the start; the WAL inherits it
                os.close(os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            conn = self._connect()
            try:
                self._store_id, self._context, self._master = self._attach(conn)
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
                corrupt or no key opens it, delete it and start empty.

        Returns:
            The open store.

        Raises:
            StoreError: the folder is missing, the file cannot be opened or
                written, it is in use, or it was written by a newer SDK.
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
        base = Path(path)
        with os_errors("delete store file"):
            for suffix in _SIDE_FILES:
                base.with_name(base.name + suffix).unlink(missing_ok=True)
        if key_provider is not None:
            held = key_provider.load_keys()
            if held:
                key_provider.destroy_other_keys(held[-1])
            fresh = secrets.token_bytes(_KEY_BYTES)
            key_provider.add_key(fresh)
            key_provider.destroy_other_keys(fresh)

    @property
    def path(self) -> Path:
        """The store file."""
        return self._path

    def get(self, subject: str, name: str) -> bytes | None:
        """Return the record ``name`` of ``subject``, or None if there is none.

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
            if keys is None:
                return None
            row = conn.execute(
                "SELECT sealed FROM records WHERE ref = ? AND rid = ?",
                (keys.ref, keys.record_id(name_bytes)),
            ).fetchone()
            if row is None:
                return None
            (sealed,) = _blobs(row)
            return _unseal(keys.aead, sealed, self._record_aad(subject_bytes, name_bytes))

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
                sealed = _seal(keys.aead, value, self._record_aad(subject_bytes, name_bytes))
                conn.execute(
                    "INSERT INTO records(ref, rid, sealed) VALUES (?, ?, ?) "
                    "ON CONFLICT(ref, rid) DO UPDATE SET sealed = excluded.sealed",
                    (keys.ref, keys.record_id(name_bytes), sealed),
                )

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
            if keys is None:
                return False
            cursor = conn.execute(
                "DELETE FROM records WHERE ref = ? AND rid = ?",
                (keys.ref, keys.record_id(name_bytes)),
            )
            return cursor.rowcount > 0

    def subjects(self) -> list[str]:
        """Return the subjects that have a key in the store (not :attr:`GLOBAL`), sorted.

        Returns:
            The subject names.

        Raises:
            StoreCorruptError: a subject row failed authentication.
            StoreError: the store is closed or cannot be read.
        """
        with self._operation() as conn:
            rows = conn.execute("SELECT ref, sid, sealed_name FROM subjects").fetchall()
            names = [self._subject_name(self._master, *_blobs(row)) for row in rows]
        return sorted(name.decode("utf-8") for name in names if name)

    def forget(self, subject: str) -> bool:
        """Crypto-shred ``subject``: its records become undecryptable in every copy of the store.

        Rotates the master key (see the module notes); costs one pass over the subjects.

        Args:
            subject: the subject to forget (not :attr:`GLOBAL`).

        Returns:
            True if the subject was in the store; False if there was nothing to forget.

        Raises:
            TypeError: ``subject`` is not a str.
            InputError: ``subject`` is :attr:`GLOBAL` or not UTF-8 encodable.
            StoreCorruptError: a subject row failed authentication.
            StoreError: the store is closed or cannot be written (the store is
                then closed: reopen it), or the old key could not be destroyed
                (the next open retries).
        """
        if subject == self.GLOBAL:
            raise InputError("the GLOBAL subject cannot be forgotten; delete its records instead")
        subject_bytes = _utf8(subject, "subject", allow_empty=False)
        with self._operation() as conn:
            row = conn.execute(
                "SELECT ref FROM subjects WHERE sid = ?", (self._master.subject_id(subject_bytes),)
            ).fetchone()
            if row is None:
                return False
            old = self._master
            new = _MasterKeys.derive(secrets.token_bytes(_KEY_BYTES), self._store_id)
            self._provider.add_key(new.raw)
            try:
                with self._transaction(conn):
                    conn.execute("DELETE FROM records WHERE ref = ?", row)
                    conn.execute("DELETE FROM subjects WHERE ref = ?", row)
                    self._rewrap_subjects(conn, old, new)
                    conn.execute("UPDATE meta SET value = ? WHERE name = 'key_id'", (new.key_id,))
            except BaseException:
                # A failed COMMIT may still have landed: rather than guess which key the
                # file is under, close; the next open checks and destroys the other key.
                self._conn = None
                self._cache.clear()
                with suppress(sqlite3.Error):
                    conn.close()
                raise
            self._master = new
            self._cache.pop(subject, None)
            self._provider.destroy_other_keys(new.raw)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # defence in depth only
            return True

    def close(self) -> None:
        """Close the store; further calls raise StoreError. Idempotent.

        Raises:
            StoreError: the final checkpoint failed (the data is still safe in the WAL).
        """
        with self._lock:
            conn, self._conn = self._conn, None
            self._cache.clear()
            if conn is not None:
                with _translated_errors(self._path):
                    conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"EncryptedStore({str(self._path)!r}, {state})"

    # ----------------------------------------------------------------------- internals

    def _connect(self) -> sqlite3.Connection:
        """SQLite connection with WAL, full fsync, exclusive lock and secure delete."""
        conn = sqlite3.connect(
            self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.text_factory = bytes  # a damaged TEXT value must not fail to decode
        try:
            for pragma in (
                "locking_mode=EXCLUSIVE",
                "synchronous=FULL",
                "secure_delete=ON",
                "cell_size_check=ON",
                "trusted_schema=OFF",
            ):
                conn.execute(f"PRAGMA {pragma}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != b"wal":
                raise StoreError(f"encrypted store {self._path}: WAL mode unavailable ({mode!r})")
        except BaseException:
            conn.close()
            raise
        return conn

    def _attach(self, conn: sqlite3.Connection) -> tuple[bytes, bytes, _MasterKeys]:
        """Create the schema or check the file, and find the master key that opens it."""
        keys = [checked_key(key) for key in self._provider.load_keys()]
        with self._transaction(conn, "EXCLUSIVE"):
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                return self._create(conn, keys)
            if tables != _TABLES or conn.execute("PRAGMA quick_check").fetchall() != [(b"ok",)]:
                raise _corrupt(self._path, "its structure is damaged")
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        version, store_id, key_id = self._checked_meta(meta)
        master = _matching_master(keys, store_id, key_id)
        if version != FORMAT_VERSION:
            if master is not None:  # our key id, so our format: the field itself was damaged
                raise _corrupt(self._path, "its format record is damaged")
            raise StoreError(
                f"encrypted store {self._path} has format {version}, but this SDK reads format "
                f"{FORMAT_VERSION}; upgrade the SDK (the file is left unchanged)"
            )
        if master is None:
            raise _corrupt(self._path, "no key of the key provider opens it")
        return store_id, self._context_for(store_id), master

    def _checked_meta(self, meta: dict[object, object]) -> tuple[int, bytes, bytes]:
        """The format version, store id and key id, checked for shape."""
        version, store_id, key_id = (meta.get(n) for n in (b"format", b"store_id", b"key_id"))
        if not (isinstance(version, bytes) and isinstance(store_id, bytes)):
            raise _corrupt(self._path, "its header records are damaged")
        if not isinstance(key_id, bytes) or len(version) != 4 or len(store_id) != _STORE_ID_BYTES:
            raise _corrupt(self._path, "its header records are damaged")
        return int.from_bytes(version, "big"), store_id, key_id

    def _create(self, conn: sqlite3.Connection, keys: list[bytes]) -> tuple[bytes, bytes, _MasterKeys]:
        """Lay out a new store under the newest held key (or a fresh one)."""
        if keys:
            raw = keys[-1]
        else:
            raw = secrets.token_bytes(_KEY_BYTES)
            self._provider.add_key(raw)
        store_id = secrets.token_bytes(_STORE_ID_BYTES)
        master = _MasterKeys.derive(raw, store_id)
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO meta(name, value) VALUES (?, ?)",
            [
                ("format", struct.pack(">I", FORMAT_VERSION)),
                ("store_id", store_id),
                ("key_id", master.key_id),
            ],
        )
        return store_id, self._context_for(store_id), master

    @staticmethod
    def _context_for(store_id: bytes) -> bytes:
        """Associated-data prefix binding every sealed value to this store and format."""
        return _encode_fields(_LABEL, store_id, struct.pack(">I", FORMAT_VERSION))

    def _record_aad(self, subject: bytes, name: bytes) -> bytes:
        return _encode_fields(self._context, b"record", subject, name)

    def _dek_aad(self, ref: bytes, subject: bytes) -> bytes:
        return _encode_fields(self._context, b"data-key", ref, subject)

    def _name_aad(self, ref: bytes, sid: bytes) -> bytes:
        return _encode_fields(self._context, b"subject-name", ref, sid)

    def _subject_name(self, master: _MasterKeys, ref: bytes, sid: bytes, sealed: bytes) -> bytes:
        """Unseal a subject's name and check that it hashes to its row key."""
        name = _unseal(master.wrap, sealed, self._name_aad(ref, sid))
        if not hmac.compare_digest(master.subject_id(name), sid):
            raise InvalidTag
        return name

    def _subject_keys(
        self, conn: sqlite3.Connection, subject: str, subject_bytes: bytes
    ) -> _SubjectKeys | None:
        """The keys of an existing subject, from the cache or unwrapped from its row."""
        keys = self._cache.get(subject)
        if keys is None:
            sid = self._master.subject_id(subject_bytes)
            row = conn.execute("SELECT ref, wrapped FROM subjects WHERE sid = ?", (sid,)).fetchone()
            if row is None:
                return None
            ref, wrapped = _blobs(row)
            data_key = _unseal(self._master.wrap, wrapped, self._dek_aad(ref, subject_bytes))
            keys = self._remember(subject, _SubjectKeys.derive(ref, data_key))
        return keys

    def _new_subject_keys(self, conn: sqlite3.Connection, subject: str, subject_bytes: bytes) -> _SubjectKeys:
        """Add a subject row with a fresh data key (inside the caller's transaction)."""
        ref, data_key = secrets.token_bytes(16), secrets.token_bytes(_KEY_BYTES)
        sid = self._master.subject_id(subject_bytes)
        conn.execute(
            "INSERT INTO subjects(ref, sid, wrapped, sealed_name) VALUES (?, ?, ?, ?)",
            (
                ref,
                sid,
                _seal(self._master.wrap, data_key, self._dek_aad(ref, subject_bytes)),
                _seal(self._master.wrap, subject_bytes, self._name_aad(ref, sid)),
            ),
        )
        return self._remember(subject, _SubjectKeys.derive(ref, data_key))

    def _remember(self, subject: str, keys: _SubjectKeys) -> _SubjectKeys:
        """Cache unwrapped subject keys, bounded, oldest out first."""
        if len(self._cache) >= _MAX_CACHED_SUBJECTS:
            self._cache.pop(next(iter(self._cache)))
        self._cache[subject] = keys
        return keys

    def _rewrap_subjects(self, conn: sqlite3.Connection, old: _MasterKeys, new: _MasterKeys) -> None:
        """Move every subject row from the old master key to the new one."""
        rows = conn.execute("SELECT ref, sid, wrapped, sealed_name FROM subjects").fetchall()
        for ref, sid, wrapped, sealed_name in map(_blobs, rows):
            name = self._subject_name(old, ref, sid, sealed_name)
            data_key = _unseal(old.wrap, wrapped, self._dek_aad(ref, name))
            new_sid = new.subject_id(name)
            conn.execute(
                "UPDATE subjects SET sid = ?, wrapped = ?, sealed_name = ? WHERE ref = ?",
                (
                    new_sid,
                    _seal(new.wrap, data_key, self._dek_aad(ref, name)),
                    _seal(new.wrap, name, self._name_aad(ref, new_sid)),
                    ref,
                ),
            )

    @contextmanager
    def _operation(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock, refuse a closed store and translate every low-level error."""
        with self._lock:
            if self._conn is None:
                raise StoreError(f"encrypted store {self._path} is closed")
            with _translated_errors(self._path):
                yield self._conn

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
        """One atomic SQLite transaction; on failure roll back and drop cached keys."""
        conn.execute(f"BEGIN {mode}")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            self._cache.clear()
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
