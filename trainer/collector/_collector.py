"""The collector's core: open envelopes, judge them, add them up exactly once.

No HTTP here: :class:`Collector` takes a request body and returns one
:class:`Outcome` per envelope; :mod:`._app` puts it behind FastAPI.

Order of checks for each envelope (the first failure decides)::

    open with the collector key for the app id   else invalid_envelope (opaque)
    model version accepted                       else unknown_model_version
    oldest_day <= day bucket                     else stale_day_bucket
    day bucket <= today + 1                      else future_day_bucket
    persona index < personas of that version     else unknown_persona
    feature count == that version's spec         else wrong_feature_count
    every feature within the spec's bounds       else features_out_of_bounds
    ledger key not seen within the window        else duplicate (acknowledged)

``today`` is the day bucket of the injected clock and ``oldest_day`` is
``today - replay_window_days + 1``. Ledger keys are kept exactly as long as a
contribution of their day bucket could still be accepted, so a replay is
either found in the ledger or rejected as stale: never counted twice.
"""

from __future__ import annotations

import hmac
import logging
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgepersona.sdk import Contribution, InputError, InvalidEnvelope, SealConfig, day_bucket
from edgepersona.sdk.protocol.envelope import Opener
from edgepersona.trainer.collector._aggregates import AddResult, AggregateStore, Increment
from edgepersona.trainer.collector._bundles import BundleShelf, ModelShape
from edgepersona.trainer.collector._framing import FramingError, split_body
from edgepersona.trainer.collector._outcomes import Outcome

__all__ = ["Collector", "CollectorConfig", "IngestReport", "check_contribution", "ledger_key"]

_log = logging.getLogger("edgepersona.trainer.collector")
_LEDGER_LABEL = b"edgepersona/collector-ledger-secret/v1"
_SEQUENCE = struct.Struct(">Q")
_UINT32_MAX = 2**32 - 1  # envelopes carry the model version as uint32
_ADD_OUTCOME = {AddResult.ADDED: Outcome.ACCEPTED, AddResult.DUPLICATE: Outcome.DUPLICATE,
                AddResult.WIDTH_CONFLICT: Outcome.WRONG_FEATURE_COUNT,
                AddResult.STALE: Outcome.STALE_DAY_BUCKET}


@dataclass(frozen=True, kw_only=True)
class CollectorConfig:
    """How the collector judges envelopes.

    Attributes:
        app_id: The app id devices seal for (bound into every envelope).
        bundles_dir: Folder of bundles to serve; its approved versions are
            accepted in sync unless ``model_versions`` is given.
        model_versions: If given, exactly these model versions are accepted.
        replay_window_days: Day buckets older than this many days (today
            included) are stale; ledger keys live this long.
        max_body_bytes: Largest request body of ``POST /v1/sync``.
        max_batch_envelopes: Most envelopes in one batch body.
        seal: Envelope limits; must match the devices'.
    """

    app_id: str
    bundles_dir: Path | None = None
    model_versions: frozenset[int] | None = None
    replay_window_days: int = 7  # days
    max_body_bytes: int = 65_536  # bytes
    max_batch_envelopes: int = 256  # envelopes per request
    seal: SealConfig = field(default_factory=SealConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.app_id, str) or not self.app_id:
            raise InputError("CollectorConfig.app_id must be the non-empty app id devices seal for")
        if self.bundles_dir is None and self.model_versions is None:
            raise InputError("CollectorConfig needs bundles_dir or model_versions; without either"
                             " no model version would be accepted")
        if self.model_versions is not None and not all(
                type(v) is int and 0 <= v <= _UINT32_MAX for v in self.model_versions):
            raise InputError("CollectorConfig.model_versions must hold model versions (uint32 ints)")
        for name, value, low, high in [("replay_window_days", self.replay_window_days, 1, 3650),
                                       ("max_body_bytes", self.max_body_bytes, 64, 2**31 - 1),
                                       ("max_batch_envelopes", self.max_batch_envelopes, 1, 0xFFFF)]:
            if type(value) is not int or not low <= value <= high:
                raise InputError(f"CollectorConfig.{name} must be an int in {low}..{high}, got {value!r}")


@dataclass(frozen=True)
class IngestReport:
    """The outcome of each envelope of one request body, in order.

    Attributes:
        outcomes: One per envelope.
        batch: Whether the body was a batch (a single envelope's outcome sets
            the HTTP status; a batch answers 200 with per-envelope results).
    """

    outcomes: tuple[Outcome, ...]
    batch: bool

    @property
    def http_status(self) -> int:
        """200 for a batch, else the single envelope's status."""
        return 200 if self.batch else self.outcomes[0].http_status


def ledger_key(secret: bytes, pseudonym: str, sequence: int) -> bytes:
    """The dedupe key of a contribution: HMAC-SHA256(secret, len || pseudonym || sequence).

    Args:
        secret: The collector's ledger secret.
        pseudonym: The contribution's pseudonym (lowercase hex).
        sequence: The contribution's sequence number (uint64).

    Returns:
        32 bytes; without ``secret`` they cannot be linked to the pseudonym.
    """
    raw = bytes.fromhex(pseudonym)
    return hmac.digest(secret, bytes([len(raw)]) + raw + _SEQUENCE.pack(sequence), "sha256")


def check_contribution(contribution: Contribution, shape: ModelShape | None, *, oldest_day: int,
                       newest_day: int) -> Outcome | None:
    """Judge an opened contribution against the day window and its model's shape.

    Args:
        contribution: The opened contribution.
        shape: Its model version's shape, or None when only the version is known.
        oldest_day: The oldest day bucket accepted.
        newest_day: The newest day bucket accepted.

    Returns:
        The rejection outcome, or None if the contribution may be added.
    """
    if contribution.day_bucket < oldest_day:
        return Outcome.STALE_DAY_BUCKET
    if contribution.day_bucket > newest_day:
        return Outcome.FUTURE_DAY_BUCKET
    if shape is None:
        return None
    if contribution.persona_index >= shape.personas:
        return Outcome.UNKNOWN_PERSONA
    if len(contribution.features) != len(shape.lower):
        return Outcome.WRONG_FEATURE_COUNT
    if not all(low <= value <= high
               for value, low, high in zip(contribution.features, shape.lower, shape.upper, strict=True)):
        return Outcome.FEATURES_OUT_OF_BOUNDS
    return None


class Collector:
    """Opens sync bodies and adds accepted contributions to a store, exactly once.

    Args:
        config: The rules (app id, accepted versions, window, limits).
        collector_private_key: The collector's private key file bytes; the
            ledger secret is derived from it, so restarts keep deduplicating.
        store: Where aggregates and the ledger live; the caller closes it.
        clock: POSIX seconds now; tests pass a fake clock.

    Raises:
        InputError: The key file is unusable or the bundles folder is missing.
    """

    def __init__(self, config: CollectorConfig, *, collector_private_key: bytes,
                 store: AggregateStore, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._opener = Opener(collector_private_key, config=config.seal)
        self._secret = hmac.digest(_LEDGER_LABEL, b"".join(collector_private_key.split()), "sha256")
        self._store = store
        self._clock = clock
        self._shelf = BundleShelf(config.bundles_dir) if config.bundles_dir is not None else None
        self._lock = threading.Lock()
        self._counts: Counter[Outcome] = Counter()

    @property
    def config(self) -> CollectorConfig:
        """The rules this collector applies."""
        return self._config

    @property
    def store(self) -> AggregateStore:
        """The aggregate store (read it for refits)."""
        return self._store

    @property
    def shelf(self) -> BundleShelf | None:
        """The bundles folder, if one is configured."""
        return self._shelf

    def accepted_versions(self) -> Mapping[int, ModelShape | None]:
        """The model versions accepted now, with their shapes where a bundle declares one.

        Returns:
            Version → shape (None if the version is configured but has no bundle).
        """
        shelf = self._shelf.approved() if self._shelf is not None else {}
        if self._config.model_versions is None:
            return {version: bundle.shape for version, bundle in shelf.items()}
        return {version: (shelf[version].shape if version in shelf else None)
                for version in self._config.model_versions}

    def ingest(self, body: bytes) -> IngestReport:
        """Judge every envelope of a body and commit the accepted ones together.

        Args:
            body: One envelope or a batch (framing in :mod:`._framing`).

        Returns:
            One outcome per envelope.

        Raises:
            FramingError: The body is not one envelope nor a well-formed batch
                (already counted in the metrics).
            sqlite3.Error | psycopg.Error: The store failed; nothing of this body was added.
        """
        try:
            envelopes, batch = split_body(body, max_envelopes=self._config.max_batch_envelopes)
        except FramingError as exc:
            self.count_refusal(exc.outcome)
            raise
        today = day_bucket(self._clock())
        oldest, newest = today - self._config.replay_window_days + 1, today + 1
        accepted = self.accepted_versions()
        judged = [self._judge(envelope, accepted, oldest, newest) for envelope in envelopes]
        increments = [item for item in judged if isinstance(item, Increment)]
        added = iter(self._store.add_increments(increments, purge_before_day=oldest))
        outcomes = tuple(_ADD_OUTCOME[next(added)] if isinstance(item, Increment) else item
                         for item in judged)
        self._count(outcomes, batch=batch)
        return IngestReport(outcomes, batch)

    def _judge(self, envelope: bytes, accepted: Mapping[int, ModelShape | None], oldest: int,
               newest: int) -> Outcome | Increment:
        """Open and check one envelope; an Increment if it may be added."""
        try:
            contribution = self._opener.open(envelope, app_id=self._config.app_id)
        except InvalidEnvelope:
            return Outcome.INVALID_ENVELOPE
        if contribution.model_version not in accepted:
            return Outcome.UNKNOWN_MODEL_VERSION
        rejection = check_contribution(contribution, accepted[contribution.model_version],
                                       oldest_day=oldest, newest_day=newest)
        if rejection is not None:
            return rejection
        return Increment(ledger_key(self._secret, contribution.pseudonym, contribution.sequence),
                         contribution.day_bucket, contribution.model_version,
                         contribution.persona_index, contribution.features)

    def count_refusal(self, outcome: Outcome) -> None:
        """Count and log a body refused before any envelope was judged.

        Args:
            outcome: Why (too large, wrong media type, malformed framing).
        """
        with self._lock:
            self._counts[outcome] += 1
        _log.info("sync: body refused: %s", outcome.value)

    def _count(self, outcomes: Iterable[Outcome], *, batch: bool) -> None:
        """Add a request's outcomes to the counters and write its one log line."""
        tally = Counter(outcomes)
        with self._lock:
            self._counts.update(tally)
        rejected = {o.value: n for o, n in sorted(tally.items()) if o.status == "rejected"}
        _log.info("sync: %s: accepted=%d duplicate=%d rejected=%d%s",
                  f"batch of {sum(tally.values())}" if batch else "single envelope",
                  tally[Outcome.ACCEPTED], tally[Outcome.DUPLICATE], sum(rejected.values()),
                  "".join(f" {code}={n}" for code, n in rejected.items()))

    def counts(self) -> dict[Outcome, int]:
        """Outcome counts since start (envelopes, plus refused bodies).

        Returns:
            Outcome → count, for every outcome (zeros included).
        """
        with self._lock:
            return {outcome: self._counts[outcome] for outcome in Outcome}
