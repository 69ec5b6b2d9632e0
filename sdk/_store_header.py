"""Opening an encrypted store file: its header, the master key that opens it, and why not.

A store file's header (the ``meta`` table) holds the format version, the
store id and the key id of the master key it is under. Opening tells three
failures apart, each with its own next step:

* the key provider holds no key for an existing store (a key file missing or
  damaged): :class:`StoreError` saying where the key was expected; restore it
  from a backup. Not :class:`StoreCorruptError`: a reset would lose the state
  for good, and ``reset_if_corrupt`` must not do that behind the app's back;
* a key is held but not the one the store was written under:
  :class:`StoreCorruptError` ("written under another master key");
* the file is tampered with, truncated or damaged: :class:`StoreCorruptError`.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

from edgepersona.sdk import _store_sqlite as rows
from edgepersona.sdk._keystore import FileKeyProvider, KeyProvider, checked_key
from edgepersona.sdk._store_keys import (
    FORMAT_VERSION,
    STORE_ID_BYTES,
    MasterKeys,
    matching_master,
    new_master_key,
    new_store_id,
)
from edgepersona.sdk._store_sqlite import corrupt
from edgepersona.sdk.errors import StoreCorruptError, StoreError

__all__ = ["attach"]


def attach(conn: sqlite3.Connection, path: Path, provider: KeyProvider) -> tuple[bytes, MasterKeys]:
    """Lay out a new store, or check an existing one and find the master key that opens it.

    Args:
        conn: the open connection (no transaction in progress).
        path: the store file, named in the messages.
        provider: where the master key lives.

    Returns:
        The store id and the master keys.

    Raises:
        StoreError: the store was written by a newer SDK, or ``provider`` holds no key.
        StoreCorruptError: the file is damaged, or written under another key.
    """
    keys = [checked_key(key) for key in provider.load_keys()]
    with rows.transaction(conn, "EXCLUSIVE"):
        meta = rows.read_meta(conn, path)
        if meta is None:
            return _create(conn, keys, provider)
    version, store_id, key_id = _checked_meta(meta, path)
    master = matching_master(keys, store_id, key_id)
    if version != FORMAT_VERSION:
        if master is not None:  # our key id, so our format: the field itself was damaged
            raise corrupt(path, "its format record is damaged")
        raise StoreError(
            f"encrypted store {path} has format {version}, but this SDK reads format "
            f"{FORMAT_VERSION}; upgrade the SDK (the file is left unchanged)"
        )
    if master is None:
        raise wrong_key(path, provider) if keys else missing_key(path, provider)
    return store_id, master


def _checked_meta(meta: dict[object, object], path: Path) -> tuple[int, bytes, bytes]:
    """The format version, store id and key id, checked for shape."""
    version, store_id, key_id = (meta.get(n) for n in (b"format", b"store_id", b"key_id"))
    if not (isinstance(version, bytes) and isinstance(store_id, bytes)):
        raise corrupt(path, "its header records are damaged")
    if not isinstance(key_id, bytes) or len(version) != 4 or len(store_id) != STORE_ID_BYTES:
        raise corrupt(path, "its header records are damaged")
    return int.from_bytes(version, "big"), store_id, key_id


def _create(conn: sqlite3.Connection, keys: list[bytes], provider: KeyProvider) -> tuple[bytes, MasterKeys]:
    """Lay out a new store under the newest held key (or a fresh one)."""
    if keys:
        raw = keys[-1]
    else:
        raw = new_master_key()
        provider.add_key(raw)
    store_id = new_store_id()
    master = MasterKeys.derive(raw, store_id)
    meta = {"format": struct.pack(">I", FORMAT_VERSION), "store_id": store_id, "key_id": master.key_id}
    rows.create_schema(conn, meta)
    return store_id, master


def missing_key(path: Path, provider: KeyProvider) -> StoreError:
    """Return the error for an existing store whose key provider holds no key.

    Args:
        path: the store file.
        provider: the key provider that came back empty.

    Returns:
        A :class:`StoreError` that says where the key was expected and never advises a reset.
    """
    if isinstance(provider, FileKeyProvider):
        state = "is damaged (not a valid key file)" if provider.path.exists() else "is missing"
        where = f"its master key file {provider.path} {state}"
    else:
        where = f"its key provider {provider!r} holds no master key"
    return StoreError(
        f"encrypted store {path} cannot be opened: {where}. Restore the key the store was "
        "written with (from a backup or the platform keystore) and open it again; resetting "
        "the store instead would lose its local state for good."
    )


def wrong_key(path: Path, provider: KeyProvider) -> StoreCorruptError:
    """Return the error for a store written under a key the provider does not hold.

    Args:
        path: the store file.
        provider: the key provider whose keys do not match.

    Returns:
        A :class:`StoreCorruptError` naming the two ways out.
    """
    return StoreCorruptError(
        f"encrypted store {path} was written under another master key: no key of {provider!r} "
        "opens it. Open it with the key it was written with; if that key is lost, recover with "
        f"EncryptedStore.reset({str(path)!r}) or EncryptedStore.open(..., reset_if_corrupt=True) "
        "(its local state is lost and will be rebuilt)."
    )
