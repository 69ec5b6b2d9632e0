"""Syncing sealed contributions from the device, and pulling newer bundles.

What leaves the device is one sealed envelope per contribution (see
:mod:`edgepersona.sdk.protocol.envelope` for every field and its size): the sync-domain
pseudonym, a sequence number, the day bucket, the model version, the persona
index and the features in the model's bounded space (clipped, transformed; no
raw value, no raw id, no exact time).

Delivery is at-least-once and idempotent:

* :meth:`SyncAgent.contribute` seals a contribution and appends it to a
  durable queue inside the encrypted store (one transaction with the sequence
  counter, so a crash never reuses a sequence number);
* :meth:`SyncAgent.flush` sends the oldest queued envelopes as one batch and
  removes them only after the collector acknowledged them (``accepted`` or
  ``duplicate``); a crash between the two re-sends them, and the collector
  counts each (pseudonym, sequence) once;
* envelopes the collector refuses for good (stale, unknown model version,
  invalid) are dropped and counted in ``rejected``; those it answers ``retry``
  (the admission token's quota is spent) stay queued, counted in ``deferred``;
  a transport failure keeps everything; both return the delay before the next
  try: exponential backoff with full jitter (``base · 2^failures``, capped,
  times a uniform random draw);
* the queue is bounded (``max_queue``): when full, the oldest envelope is
  dropped and ``dropped`` counts it (the newest behaviour matters most);
* ``PersonaClient.forget`` drops the forgotten subject's queued envelopes
  before it scrubs the store (each is queued with a keyed tag of its subject,
  :func:`drop_queued`), so nothing of the subject is sent after it.

Transports are an interface: :class:`HttpTransport` uses only the standard
library; :class:`MemoryTransport` calls a function in-process (tests, or an
app's own HTTP stack).

Admission: a collector may require every sync request to carry a short-lived
token from the app's own backend. Give :class:`SyncAgent` a ``token_provider``
(a callable returning the current token, fetched and cached by the app) and it
passes the token to the transport with each flush; :class:`HttpTransport` sends
it as ``Authorization: Bearer <token>``. A refused or missing token is a
transport failure: the envelopes stay queued and the flush backs off.
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from edgepersona.sdk._client import PersonaClient

from edgepersona.sdk._store import EncryptedStore
from edgepersona.sdk._sync_queue import UNKNOWN_TAG, load_queue, save_queue
from edgepersona.sdk.errors import InputError, RollbackError, TransportError
from edgepersona.sdk.protocol.envelope import Contribution, Sealer, day_bucket
from edgepersona.sdk.protocol.framing import encode_batch

__all__ = [
    "HttpTransport",
    "MemoryTransport",
    "SyncAgent",
    "SyncReport",
    "Transport",
    "TransportError",
]

_GLOBAL = EncryptedStore.GLOBAL
_SEQUENCE = "sync_sequence"


class Transport(Protocol):
    """How the SDK talks to the collector; an app may plug its own HTTP stack."""

    def post_sync(self, body: bytes) -> list[str]:
        """Send a batch body; return one status per envelope (accepted/duplicate/rejected).

        A transport that supports admission also takes ``token=`` (keyword);
        :class:`SyncAgent` passes it only when it has a token provider.
        """
        ...

    def get_bundle(self, version: int | None) -> bytes:
        """Fetch a bundle archive: the latest approved one when ``version`` is None."""
        ...


class HttpTransport:
    """The default transport: ``urllib`` from the standard library, nothing else."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        """Point at a collector.

        Args:
            base_url: e.g. ``https://collector.example.com`` (no trailing path).
            timeout: seconds per request.

        Raises:
            InputError: the URL is not http(s).
        """
        if not base_url.startswith(("https://", "http://")):
            raise InputError(f"collector URL must start with https:// or http://, got {base_url!r}")
        self._base = base_url.rstrip("/")
        self._timeout = timeout

    def _request(self, request: urllib.request.Request) -> tuple[int, bytes]:
        """Send one request; map network failures and 5xx to TransportError."""
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as reply:  # noqa: S310
                return int(reply.status), bytes(reply.read())
        except urllib.error.HTTPError as reply:
            if reply.code >= 500:
                raise TransportError(f"collector answered HTTP {reply.code}; retry later") from None
            return int(reply.code), bytes(reply.read())
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise TransportError(f"collector unreachable: {exc}") from None

    def post_sync(self, body: bytes, *, token: str | None = None) -> list[str]:
        """POST a batch to ``/v1/sync`` (with the admission token, if any); parse the statuses.

        Raises:
            TransportError: unreachable, 5xx, or 401 (admission token missing or refused).
        """
        headers = {"Content-Type": "application/octet-stream"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            f"{self._base}/v1/sync", data=body, method="POST", headers=headers)
        status, reply = self._request(request)
        if status == 401:
            raise TransportError("the collector requires an admission token (HTTP 401); check the"
                                 " token provider")
        return parse_sync_reply(reply)

    def get_bundle(self, version: int | None) -> bytes:
        """GET ``/v1/bundles/latest`` or ``/v1/bundles/{version}``."""
        path = "latest" if version is None else str(int(version))
        url = f"{self._base}/v1/bundles/{path}"
        status, reply = self._request(urllib.request.Request(url))  # noqa: S310 - scheme checked
        if status != 200:
            raise TransportError(f"collector has no bundle {path} (HTTP {status})")
        return reply


class MemoryTransport:
    """An in-process transport: hands bodies to functions (tests, custom stacks)."""

    def __init__(self, post: Callable[[bytes], bytes], get: Callable[[int | None], bytes]) -> None:
        """Wrap two functions with the HTTP semantics of the collector.

        Args:
            post: receives a sync body, returns the JSON reply body.
            get: receives a version (None = latest), returns bundle bytes.
        """
        self._post, self._get = post, get

    def post_sync(self, body: bytes) -> list[str]:
        """Hand the body to ``post`` and parse the reply."""
        return parse_sync_reply(self._post(body))

    def get_bundle(self, version: int | None) -> bytes:
        """Ask ``get`` for a bundle."""
        return self._get(version)


def parse_sync_reply(reply: bytes) -> list[str]:
    """Per-envelope statuses from the collector's JSON reply.

    Args:
        reply: ``{"results": [{"status": "accepted" | "duplicate" | "rejected" | "retry", ...},
            ...]}``;
            a whole-body refusal (``{"detail": ...}``) marks every envelope rejected.

    Returns:
        The statuses, or ``[]`` when the body was refused as a whole.

    Raises:
        TransportError: the reply is not the collector's JSON.
    """
    try:
        data = json.loads(reply)
        results = data.get("results") if isinstance(data, dict) else None
        if results is None:
            return []
        return [str(item["status"]) for item in results]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TransportError("the collector's reply is not the expected JSON") from None


@dataclass
class SyncReport:
    """What one flush did."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    deferred: int = 0  # kept for a later flush (the collector said retry: admission quota spent)
    remaining: int = 0
    retry_after: float | None = None  # seconds; set when the transport failed or some must retry
    errors: list[str] = field(default_factory=list)


class SyncAgent:
    """Seal, queue and send a client's contributions; pull newer bundles.

    Thread-safe: contributions may be added while a flush is on the wire.
    """

    def __init__(self, client: PersonaClient, sealer: Sealer, transport: Transport, *,
                 max_queue: int = 1000, batch_size: int = 100,
                 backoff_seconds: tuple[float, float] = (1.0, 3600.0),
                 token_provider: Callable[[], str | None] | None = None) -> None:
        """Attach sync to a client.

        Args:
            client: the device client (its store holds the queue).
            sealer: seals to the collector's public key for this app id.
            transport: how to reach the collector.
            max_queue: the most envelopes kept; beyond it the oldest is dropped.
            batch_size: envelopes per request.
            backoff_seconds: (base, cap) of the retry delay in seconds.
            token_provider: returns the admission token to send with each flush
                (None: send none); may raise TransportError to back off.
                Needs a transport whose ``post_sync`` takes ``token=``.
        """
        if max_queue < 1 or batch_size < 1:
            raise InputError("max_queue and batch_size must be >= 1")
        self._client, self._sealer, self._transport = client, sealer, transport
        self._max_queue, self._batch_size = max_queue, batch_size
        self._backoff = backoff_seconds
        self._token_provider = token_provider
        self._failures = 0
        self._lock = threading.Lock()
        self._random = secrets.SystemRandom()
        self._tags: dict[bytes, bytes] = {}  # queued envelope -> its subject's tag

    def _load(self) -> tuple[list[bytes], dict[str, int]]:
        """The queued envelopes and the counters (their subject tags go to ``self._tags``)."""
        queue, tags, counters = load_queue(self._client._store)  # the agent shares the store
        self._tags = dict(zip(queue, tags, strict=True))
        return queue, counters

    def _save_records(self, queue: list[bytes], counters: dict[str, int],
                      extra: tuple[tuple[str, bytes], ...] = ()) -> None:
        """Write queue, its tags, counters and any extra global records in one transaction."""
        tags = [self._tags.get(envelope, UNKNOWN_TAG) for envelope in queue]
        save_queue(self._client._store, queue, tags, counters, extra)

    @property
    def counters(self) -> dict[str, int]:
        """Persistent counts: ``queued``, ``dropped``, ``rejected``, ``acknowledged``."""
        with self._lock:
            queue, counters = self._load()
        return {"queued": len(queue), "dropped": counters.get("dropped", 0),
                "rejected": counters.get("rejected", 0),
                "acknowledged": counters.get("acknowledged", 0)}

    def contribute(self, *, subject: str = "me", at: float | None = None) -> int:
        """Seal the subject's current contribution and queue it durably.

        Args:
            subject: whose contribution (its raw id never leaves the device).
            at: unix seconds (default: the client's clock).

        Returns:
            The contribution's sequence number.

        Raises:
            StoreError: the queue could not be written; nothing was queued.
        """
        snapshot = self._client._contribution_snapshot(subject, at)
        tag = self._client._queue_tag(subject)
        with self._lock, self._client._lock:  # the client's lock: forget() edits the queue too
            queue, counters = self._load()
            raw_sequence = self._client._store.get(_GLOBAL, _SEQUENCE)
            sequence = int(raw_sequence.decode()) + 1 if raw_sequence else 1
            contribution = Contribution(
                pseudonym=snapshot.pseudonym.value, pseudonym_epoch=snapshot.pseudonym.epoch,
                sequence=sequence, day_bucket=day_bucket(snapshot.at),
                model_version=snapshot.model_version, persona_index=snapshot.persona_index,
                features=snapshot.features)
            envelope = self._sealer.seal(contribution)
            queue.append(envelope)
            self._tags[envelope] = tag
            if len(queue) > self._max_queue:
                dropped = len(queue) - self._max_queue
                del queue[:dropped]
                counters["dropped"] = counters.get("dropped", 0) + dropped
            self._save_records(queue, counters, ((_SEQUENCE, str(sequence).encode()),))
            return sequence

    def flush(self) -> SyncReport:
        """Send the oldest queued envelopes as one batch; keep what was not acknowledged.

        Returns:
            What happened; ``retry_after`` (seconds, jittered) is set after a
            transport failure, a whole-body refusal or envelopes to retry.
        """
        with self._lock:
            queue, _ = self._load()
        batch = queue[: self._batch_size]
        report = SyncReport(sent=len(batch))
        if not batch:
            return report
        try:
            statuses = self._post(encode_batch(batch))
            if len(statuses) != len(batch):
                raise TransportError(f"collector answered {len(statuses)} statuses for"
                                     f" {len(batch)} envelopes")
        except TransportError as exc:
            self._failures += 1
            report.errors.append(str(exc))
            report.retry_after = self._delay()
            report.remaining = len(queue)
            return report
        self._failures = 0
        self._settle(batch, statuses, report)
        if report.deferred:  # the admission token's quota is spent: wait, then send with a new one
            self._failures += 1
            report.retry_after = self._delay()
        return report

    def _post(self, body: bytes) -> list[str]:
        """Send a body, with the admission token when a provider is configured."""
        if self._token_provider is None:
            return self._transport.post_sync(body)
        token = self._token_provider()
        post_sync: Callable[..., list[str]] = self._transport.post_sync
        return post_sync(body, token=token)

    def _settle(self, batch: list[bytes], statuses: list[str], report: SyncReport) -> None:
        """Remove acknowledged and refused envelopes; count them; keep those to retry."""
        done = {envelope: status for envelope, status in zip(batch, statuses, strict=True)
                if status != "retry"}
        report.deferred = len(batch) - len(done)
        with self._lock, self._client._lock:
            queue, counters = self._load()
            kept = [e for e in queue if e not in done]
            for status in done.values():
                if status == "accepted":
                    report.accepted += 1
                elif status == "duplicate":
                    report.duplicates += 1
                else:
                    report.rejected += 1
            counters["acknowledged"] = counters.get("acknowledged", 0) + report.accepted \
                + report.duplicates
            counters["rejected"] = counters.get("rejected", 0) + report.rejected
            self._save_records(kept, counters)
            report.remaining = len(kept)

    def _delay(self) -> float:
        """Exponential backoff with full jitter."""
        base, cap = self._backoff
        return self._random.uniform(0.0, min(cap, base * 2.0 ** min(self._failures - 1, 30)))

    def pull(self) -> int:
        """Fetch the latest approved bundle and update to it if it is newer.

        Returns:
            The active version afterwards.

        Raises:
            TransportError: the collector could not be reached.
            ModelIntegrityError: the bundle failed verification; the old one stays.
        """
        archive = self._transport.get_bundle(None)
        try:
            return self._client.update(archive)
        except RollbackError:
            return self._client.runtime.version
