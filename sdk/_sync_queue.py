"""The sync queue as records of the device's store: envelopes, their subject tags, counters.

Shared by :class:`~edgepersona.sdk.SyncAgent` (which appends and settles) and
``PersonaClient.forget`` (which drops a forgotten subject's envelopes), without
the agent's network code. Every queued envelope has a 16-byte keyed tag of its
subject in a parallel record, in queue order; a queue written before tags
existed has none, and its envelopes are never dropped by ``forget``.
"""

from __future__ import annotations

import json
from typing import Final

from edgepersona.sdk._store import EncryptedStore
from edgepersona.sdk.errors import InputError, StoreCorruptError
from edgepersona.sdk.protocol.framing import decode_batch, encode_batch

__all__ = ["UNKNOWN_TAG", "drop_queued", "load_queue", "save_queue"]

_GLOBAL = EncryptedStore.GLOBAL
_QUEUE = "sync_queue"
_COUNTERS = "sync_counters"
_TAGS = "sync_queue_tags"  # one keyed subject tag per queued envelope, in queue order
_TAG_BYTES: Final = 16  # bytes
UNKNOWN_TAG: Final = bytes(_TAG_BYTES)  # an envelope queued before tags existed


def load_queue(store: EncryptedStore) -> tuple[list[bytes], list[bytes], dict[str, int]]:
    """Read the queue.

    Args:
        store: the client's store.

    Returns:
        The queued envelopes, their subject tags (:data:`UNKNOWN_TAG` when not
        known) and the counters.

    Raises:
        StoreCorruptError: the queue or counters record is unreadable.
    """
    raw, raw_tags = store.get(_GLOBAL, _QUEUE), store.get(_GLOBAL, _TAGS) or b""
    counters = store.get(_GLOBAL, _COUNTERS)
    try:
        queue = decode_batch(raw) if raw else []
        parsed = {k: int(v) for k, v in json.loads(counters).items()} if counters else {}
    except (InputError, ValueError, AttributeError):
        raise StoreCorruptError("the sync queue record is unreadable; reset the store") from None
    tags = [raw_tags[i:i + _TAG_BYTES] for i in range(0, len(raw_tags), _TAG_BYTES)]
    if len(tags) != len(queue):  # queued before tags existed: no subject is known
        tags = [UNKNOWN_TAG] * len(queue)
    return queue, tags, parsed


def save_queue(store: EncryptedStore, queue: list[bytes], tags: list[bytes],
                counters: dict[str, int], extra: tuple[tuple[str, bytes], ...] = ()) -> None:
    """Write the queue, its tags, the counters and extra global records in one transaction.

    Args:
        store: the client's store.
        queue: the envelopes, oldest first.
        tags: one 16-byte subject tag per envelope.
        counters: the persistent counters.
        extra: further ``(name, value)`` global records to write in the same transaction.
    """
    records = [(_GLOBAL, _QUEUE, encode_batch(queue) if queue else b""),
               (_GLOBAL, _TAGS, b"".join(tags)),
               (_GLOBAL, _COUNTERS, json.dumps(counters, sort_keys=True).encode())]
    records += [(_GLOBAL, name, value) for name, value in extra]
    store.put_many(records)


def drop_queued(store: EncryptedStore, tag: bytes) -> int:
    """Drop every queued envelope of the subject with ``tag`` (``PersonaClient.forget``).

    The caller holds the client's lock, which every agent holds while it edits the queue.

    Args:
        store: the client's store.
        tag: the subject's queue tag.

    Returns:
        How many envelopes were dropped (counted in ``dropped``).

    Raises:
        StoreCorruptError: the queue record is unreadable.
    """
    queue, tags, counters = load_queue(store)
    kept = [(envelope, t) for envelope, t in zip(queue, tags, strict=True) if t != tag]
    if len(kept) == len(queue):
        return 0
    counters["dropped"] = counters.get("dropped", 0) + len(queue) - len(kept)
    save_queue(store, [e for e, _ in kept], [t for _, t in kept], counters)
    return len(queue) - len(kept)
