"""Where the encrypted store's master key lives: key providers and key files.

A :class:`KeyProvider` holds the store's master key(s) outside the store file,
so destroying a key (see ``EncryptedStore.forget``) makes every copy of the
data it wrapped unreadable. Apps should implement it over the platform
keystore; :class:`FileKeyProvider` (a 0600 file written atomically) suits
gateways, :class:`MemoryKeyProvider` tests.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final, Protocol

from edgepersona.sdk.errors import StoreError

__all__ = ["KEY_BYTES", "FileKeyProvider", "KeyProvider", "MemoryKeyProvider", "checked_key", "os_errors"]

KEY_BYTES: Final = 32  # bytes, master and subject keys
_KEY_BYTES: Final = KEY_BYTES
_KEY_FILE_MAGIC: Final = b"EPKEY\x00\x01\x00"
_KEY_FILE_CHECK_BYTES: Final = 8  # bytes of SHA-256 that detect a torn or shredded key file


class KeyProvider(Protocol):
    """Holds the store's master key(s) outside the store file.

    Normally one key is held; two while a rotation (``forget``) is in flight.
    Implementations must be durable: when a method returns, its effect
    survives a crash, and at every instant the key being kept stays loadable.
    """

    def load_keys(self) -> list[bytes]:
        """Return every master key held (32 bytes each), the most recently added last.

        Returns:
            The keys; empty if none was ever added.
        """
        ...

    def add_key(self, key: bytes) -> None:
        """Durably hold ``key`` in addition to the keys already held.

        Args:
            key: a fresh 32-byte master key.
        """
        ...

    def destroy_other_keys(self, keep: bytes) -> None:
        """Durably destroy every held key except ``keep``; a no-op if there is none.

        Args:
            keep: the key that must remain loadable.
        """
        ...


class MemoryKeyProvider:
    """A key provider in process memory, for tests and ephemeral stores.

    Args:
        key: an initial 32-byte master key, or None to start empty.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._keys = [] if key is None else [checked_key(key)]

    def load_keys(self) -> list[bytes]:
        """Return the held keys, most recently added last.

        Returns:
            A copy of the key list.
        """
        return list(self._keys)

    def add_key(self, key: bytes) -> None:
        """Hold ``key`` too.

        Args:
            key: a 32-byte master key.

        Raises:
            StoreError: a rotation is already pending (two keys held).
        """
        if len(self._keys) > 1:
            raise StoreError("a key rotation is already pending; reopen the store to finish it")
        self._keys.append(checked_key(key))

    def destroy_other_keys(self, keep: bytes) -> None:
        """Forget every key except ``keep``.

        Args:
            keep: the key to keep.

        Raises:
            StoreError: ``keep`` is not held.
        """
        if not any(hmac.compare_digest(keep, key) for key in self._keys):
            raise StoreError("the key to keep is not held by this MemoryKeyProvider")
        self._keys = [keep]

    def __repr__(self) -> str:
        return f"MemoryKeyProvider(keys={len(self._keys)})"


class FileKeyProvider:
    """Keeps the master key in a 0600 file, written atomically, shredded when replaced.

    The current key is in ``path``; a key added during a rotation goes to
    ``path + ".next"`` until the old one is destroyed: the old file is
    overwritten with zeros in place and fsynced, then the new file is renamed
    over it. Put the key file outside backed-up folders (see the module notes
    on what overwriting can and cannot erase).

    Args:
        path: the key file, e.g. ``store.db.key`` next to the store.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._next = self._path.with_name(self._path.name + ".next")

    @property
    def path(self) -> Path:
        """The key file (a rotation's pending key sits beside it, with ``.next`` appended)."""
        return self._path

    def load_keys(self) -> list[bytes]:
        """Read the current and any pending key; shredded or torn files are skipped.

        Returns:
            The valid keys, the pending one last.

        Raises:
            StoreError: a key file cannot be read.
        """
        with os_errors("read key file"):
            keys = [_read_key_file(self._path), _read_key_file(self._next)]
        return [key for key in keys if key is not None]

    def add_key(self, key: bytes) -> None:
        """Write ``key`` atomically as the current key, or as the pending one if a key exists.

        Args:
            key: a 32-byte master key.

        Raises:
            StoreError: a rotation is already pending, or the file cannot be written.
        """
        data = _KEY_FILE_MAGIC + checked_key(key)
        data += hashlib.sha256(data).digest()[:_KEY_FILE_CHECK_BYTES]
        with os_errors("write key file"):
            if _read_key_file(self._next) is not None:
                raise StoreError("a key rotation is already pending; reopen the store to finish it")
            target = self._path if _read_key_file(self._path) is None else self._next
            _write_atomically(target, data)

    def destroy_other_keys(self, keep: bytes) -> None:
        """Shred every key file except the one holding ``keep`` (and stray temp files).

        Args:
            keep: the key that must remain.

        Raises:
            StoreError: ``keep`` is not held, or a file cannot be rewritten.
        """
        with os_errors("destroy old key"):
            current, pending = _read_key_file(self._path), _read_key_file(self._next)
            if pending is not None and hmac.compare_digest(pending, keep):
                _shred(self._path)
                os.replace(self._next, self._path)
            elif current is not None and hmac.compare_digest(current, keep):
                _shred(self._next)
                self._next.unlink(missing_ok=True)
            else:
                raise StoreError(f"the key to keep is not held in {self._path}")
            for stray in self._path.parent.glob(f".{self._path.name}*.tmp"):
                _shred(stray)
                stray.unlink(missing_ok=True)
            _fsync_directory(self._path.parent)

    def __repr__(self) -> str:
        return f"FileKeyProvider({str(self._path)!r})"


def checked_key(key: bytes) -> bytes:
    """Keys cross a plug-in boundary (app keystores), so their shape is checked."""
    if not isinstance(key, bytes) or len(key) != _KEY_BYTES:
        raise StoreError(f"a master key must be {_KEY_BYTES} bytes")
    return key


def _read_key_file(path: Path) -> bytes | None:
    """The key in ``path``, or None if it is missing, shredded or torn."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    body, check = data[:-_KEY_FILE_CHECK_BYTES], data[-_KEY_FILE_CHECK_BYTES:]
    if len(body) != len(_KEY_FILE_MAGIC) + _KEY_BYTES or not body.startswith(_KEY_FILE_MAGIC):
        return None
    if not hmac.compare_digest(hashlib.sha256(body).digest()[:_KEY_FILE_CHECK_BYTES], check):
        return None
    return body[len(_KEY_FILE_MAGIC) :]


def _write_atomically(path: Path, data: bytes) -> None:
    """Temp file (0600) in the same folder, fsync, rename, fsync the folder."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(path.parent)


def _shred(path: Path) -> None:
    """Overwrite a file's bytes with zeros in place and fsync, before it is unlinked."""
    try:
        file = path.open("r+b")
    except FileNotFoundError:
        return
    with file:
        file.write(bytes(os.fstat(file.fileno()).st_size))
        file.flush()
        os.fsync(file.fileno())


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; folders cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def os_errors(action: str) -> Iterator[None]:
    """Turn OSError from key files into StoreError with the action and the reason."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"cannot {action}: {exc.strerror or exc} ({exc.filename})") from exc


# --------------------------------------------------------------------------- crypto core
