"""The collector's core: open envelopes, judge them, add them up exactly once.

No HTTP here: :class:`Collector` takes a request body and returns one
:class:`Outcome` per envelope; :mod:`._app` puts it behind FastAPI.

Order of checks (the first failure decides). For the whole request, when an
admission check is configured::

    a valid admission token                      else admission_required (401, nothing read)

then for each envelope::

    open with the collector key for the app id   else invalid_envelope (opaque)
    model version accepted                       else unknown_model_version
    oldest_day <= day bucket                     else stale_day_bucket
    day bucket <= today + 1                      else future_day_bucket
    persona index < personas of that version     else unknown_persona
    feature count == that version's spec         else wrong_feature_count
    every feature within the spec's bounds       else features_out_of_bounds
    persona nearest to the features (bundle)     else inconsistent_persona
    the admission token's quota not spent        else admission_quota_exceeded
    dedupe key not seen within the window        else duplicate (acknowledged)
    a free slot of the pseudonym's daily quota   else quota_exceeded

``today`` is the day bucket of the injected clock and ``oldest_day`` is
``today - replay_window_days + 1``. Dedupe keys are kept exactly as long as a
contribution of their day bucket could still be accepted, so a replay is
either found in the dedupe set or rejected as stale: never counted twice.

The per-pseudonym quota is a set of keyed slots per (pseudonym, model version,
day): ``HMAC(quota secret, pseudonym || version || day || slot)`` for slot
``0..quota-1``. An accepted contribution takes the first free slot; the slots
expire with the dedupe keys and, like them, are one opaque key and a day per
accepted contribution: nothing in the store links two of them without the
secret. Once a day a roll-up moves closed aggregate cells below k-min forward
(:meth:`AggregateStore.roll_up_small_cells`).
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
from edgepersona.trainer.collector._admission import Admission, AdmissionCheck
from edgepersona.trainer.collector._aggregates import AddResult, AggregateStore, Increment
from edgepersona.trainer.collector._bundles import BundleShelf, ModelShape
from edgepersona.trainer.collector._consistency import consistent_persona, consistent_personas
from edgepersona.trainer.collector._framing import FramingError, split_body
from edgepersona.trainer.collector._outcomes import Outcome

__all__ = ["AdmissionRefusedError", "Collector", "CollectorConfig", "IngestReport",
           "check_contribution", "dedupe_key", "quota_keys"]

_log = logging.getLogger("edgepersona.trainer.collector")
_DEDUPE_LABEL = b"edgepersona/collector-ledger-secret/v1"  # unchanged: existing dedupe keys stay valid
_QUOTA_LABEL = b"edgepersona/collector-quota-secret/v1"
_ADMISSION_LABEL = b"edgepersona/collector-admission-secret/v1"
_SEQUENCE = struct.Struct(">Q")
_SLOT = struct.Struct(">IiH")  # model version, day bucket, slot
_UINT32_MAX = 2**32 - 1  # envelopes carry the model version as uint32
_MAX_QUOTA = 64  # slots tried per contribution (one HMAC each)
_ADD_OUTCOME = {AddResult.ADDED: Outcome.ACCEPTED, AddResult.DUPLICATE: Outcome.DUPLICATE,
                AddResult.WIDTH_CONFLICT: Outcome.WRONG_FEATURE_COUNT,
                AddResult.STALE: Outcome.STALE_DAY_BUCKET,
                AddResult.QUOTA_EXCEEDED: Outcome.QUOTA_EXCEEDED}


class AdmissionRefusedError(FramingError):
    """The request carried no valid admission token; nothing of it was read."""

    def __init__(self) -> None:
        super().__init__(Outcome.ADMISSION_REQUIRED.detail, Outcome.ADMISSION_REQUIRED)


@dataclass(frozen=True, kw_only=True)
class CollectorConfig:
    """How the collector judges envelopes.

    Attributes:
        app_id: The app id devices seal for (bound into every envelope).
        bundles_dir: Folder of bundles to serve; its approved versions are
            accepted in sync unless ``model_versions`` is given.
        model_versions: If given, exactly these model versions are accepted.
        replay_window_days: Day buckets older than this many days (today
            included) are stale; dedupe keys and quota slots live this long.
        max_body_bytes: Largest request body of ``POST /v1/sync``.
        max_batch_envelopes: Most envelopes in one batch body.
        seal: Envelope limits; must match the devices'.
        pseudonym_daily_quota: Most contributions accepted per (pseudonym,
            model version, day bucket); None for no quota. The default, 4: an
            honest device contributes a snapshot of each subject about once a
            day, and 4 leaves room for a second session and a clock or
            pseudonym-epoch edge, while one pseudonym weighs at most 4 in any
            (version, persona, day) cell and a script replaying one pseudonym
            gets at most 4 per day bucket it may claim (the window plus
            tomorrow) instead of thousands.
        consistency_check: Refuse a contribution whose persona is not the
            nearest to its features under its version's bundle (versions
            configured without a bundle are not checked).
        admission: If set, every request must carry a token it admits
            (see :mod:`._admission`); None admits every request.
        k_min: Closed day cells below this count are rolled forward; None
            takes each bundle's own k-min (versions without a bundle: none).
    """

    app_id: str
    bundles_dir: Path | None = None
    model_versions: frozenset[int] | None = None
    replay_window_days: int = 7  # days
    max_body_bytes: int = 65_536  # bytes
    max_batch_envelopes: int = 256  # envelopes per request
    seal: SealConfig = field(default_factory=SealConfig)
    pseudonym_daily_quota: int | None = 4  # contributions per pseudonym, version and day
    consistency_check: bool = True
    admission: AdmissionCheck | None = None
    k_min: int | None = None  # contributions per closed cell

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
        for option, setting, most in [("pseudonym_daily_quota", self.pseudonym_daily_quota, _MAX_QUOTA),
                                      ("k_min", self.k_min, 1_000_000)]:
            if setting is not None and (type(setting) is not int or not 1 <= setting <= most):
                raise InputError(f"CollectorConfig.{option} must be None or an int in 1..{most},"
                                 f" got {setting!r}")


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


def dedupe_key(secret: bytes, pseudonym: str, sequence: int) -> bytes:
    """The dedupe key of a contribution: HMAC-SHA256(secret, len || pseudonym || sequence).

    Args:
        secret: The collector's dedupe secret.
        pseudonym: The contribution's pseudonym (lowercase hex).
        sequence: The contribution's sequence number (uint64).

    Returns:
        32 bytes; without ``secret`` they cannot be linked to the pseudonym.
    """
    raw = bytes.fromhex(pseudonym)
    return hmac.digest(secret, bytes([len(raw)]) + raw + _SEQUENCE.pack(sequence), "sha256")


def quota_keys(secret: bytes, contribution: Contribution, quota: int) -> tuple[bytes, ...]:
    """The quota slots of a contribution's (pseudonym, model version, day bucket).

    Args:
        secret: The collector's quota secret (not the dedupe secret).
        contribution: The opened contribution.
        quota: How many slots (contributions) the pseudonym gets per version and day.

    Returns:
        ``quota`` keys of 32 bytes, HMAC-SHA256(secret, len || pseudonym ||
        version || day || slot); without ``secret`` they cannot be linked.
    """
    raw = bytes.fromhex(contribution.pseudonym)
    prefix = bytes([len(raw)]) + raw
    return tuple(hmac.digest(secret, prefix + _SLOT.pack(contribution.model_version,
                                                         contribution.day_bucket, slot), "sha256")
                 for slot in range(quota))


def check_contribution(contribution: Contribution, shape: ModelShape | None, *, oldest_day: int,
                       newest_day: int, consistency: bool = True) -> Outcome | None:
    """Judge an opened contribution against the day window and its model's shape.

    Args:
        contribution: The opened contribution.
        shape: Its model version's shape, or None when only the version is known.
        oldest_day: The oldest day bucket accepted.
        newest_day: The newest day bucket accepted.
        consistency: Also recompute the persona from the features when the
            shape carries the bundle's assigner parameters.

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
    if consistency and shape.assigner is not None and not consistent_persona(
            shape.assigner, contribution.features, contribution.persona_index):
        return Outcome.INCONSISTENT_PERSONA
    return None


class Collector:
    """Opens sync bodies and adds accepted contributions to a store, exactly once.

    Args:
        config: The rules (app id, accepted versions, window, limits).
        collector_private_key: The collector's private key file bytes; the
            dedupe, quota and admission secrets are derived from it, so
            restarts keep deduplicating and counting.
        store: Where aggregates, dedupe keys and quota slots live; the caller closes it.
        clock: POSIX seconds now; tests pass a fake clock.

    Raises:
        InputError: The key file is unusable or the bundles folder is missing.
    """

    def __init__(self, config: CollectorConfig, *, collector_private_key: bytes,
                 store: AggregateStore, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._opener = Opener(collector_private_key, config=config.seal)
        material = b"".join(collector_private_key.split())
        self._secret = hmac.digest(_DEDUPE_LABEL, material, "sha256")
        self._quota_secret = hmac.digest(_QUOTA_LABEL, material, "sha256")
        self._admission_secret = hmac.digest(_ADMISSION_LABEL, material, "sha256")
        self._rolled_day: int | None = None
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

    def ingest(self, body: bytes, *, token: str | None = None) -> IngestReport:
        """Judge every envelope of a body and commit the accepted ones together.

        Args:
            body: One envelope or a batch (framing in :mod:`._framing`).
            token: The request's admission token, if it carried one.

        Returns:
            One outcome per envelope.

        Raises:
            FramingError: The body is not one envelope nor a well-formed batch
                (already counted in the metrics).
            AdmissionRefusedError: Admission is required and the token is
                missing or invalid (already counted).
            sqlite3.Error | psycopg.Error: The store failed; nothing of this body was added.
        """
        now = self._clock()
        try:
            envelopes, batch = split_body(body, max_envelopes=self._config.max_batch_envelopes)
            admission = self._admit(token, now)
        except FramingError as exc:
            self.count_refusal(exc.outcome)
            raise
        today = day_bucket(now)
        oldest, newest = today - self._config.replay_window_days + 1, today + 1
        accepted = self.accepted_versions()
        self._roll_up_once_a_day(accepted, today, oldest)
        judged = self._consistent([self._judge(envelope, accepted, oldest, newest)
                                   for envelope in envelopes], accepted)
        if admission is not None and admission.quota is not None:
            judged = self._charge(judged, admission)
        increments = [item for item in judged if isinstance(item, Increment)]
        added = iter(self._store.add_increments(increments, purge_before_day=oldest))
        outcomes = tuple(_ADD_OUTCOME[next(added)] if isinstance(item, Increment) else item
                         for item in judged)
        self._count(outcomes, batch=batch)
        return IngestReport(outcomes, batch)

    def _consistent(self, judged: list[Outcome | Increment],
                    accepted: Mapping[int, ModelShape | None]) -> list[Outcome | Increment]:
        """Refuse increments whose persona does not follow from their features (one pass per version)."""
        if not self._config.consistency_check:
            return judged
        verdicts: dict[int, bool] = {}
        for version, shape in accepted.items():
            if shape is None or shape.assigner is None:
                continue
            at = [i for i, item in enumerate(judged)
                  if isinstance(item, Increment) and item.model_version == version]
            rows = [judged[i] for i in at]
            verdicts.update(zip(at, consistent_personas(
                shape.assigner, [r.features for r in rows if isinstance(r, Increment)],
                [r.persona_index for r in rows if isinstance(r, Increment)]), strict=True))
        return [Outcome.INCONSISTENT_PERSONA if not verdicts.get(i, True) else item
                for i, item in enumerate(judged)]

    def _admit(self, token: str | None, now: float) -> Admission | None:
        """The request's admission (None when no check is configured); refuses it otherwise."""
        check = self._config.admission
        if check is None:
            return None
        admission = check.check(token, now)
        if admission is None:
            raise AdmissionRefusedError()
        return admission

    def _charge(self, judged: list[Outcome | Increment], admission: Admission
                ) -> list[Outcome | Increment]:
        """Spend the token's quota on the request's increments; those past it are refused."""
        wanted = sum(isinstance(item, Increment) for item in judged)
        if not wanted or admission.quota is None:
            return judged
        key = hmac.digest(self._admission_secret, admission.token_id, "sha256")
        granted = self._store.spend_admission(key, expires_day=day_bucket(admission.expires_at),
                                              uses=wanted, quota=admission.quota)
        charged: list[Outcome | Increment] = []
        for item in judged:
            if isinstance(item, Increment):
                item, granted = (item, granted - 1) if granted > 0 else (
                    Outcome.ADMISSION_QUOTA_EXCEEDED, 0)
            charged.append(item)
        return charged

    def _roll_up_once_a_day(self, accepted: Mapping[int, ModelShape | None], today: int,
                            oldest: int) -> None:
        """Roll closed small cells forward on the first request of each day."""
        if self._rolled_day != today:
            self._roll_up(accepted, oldest)
            self._rolled_day = today

    def roll_up(self) -> int:
        """Roll closed cells below k-min forward now (``serve`` does it at start; requests daily).

        Returns:
            How many closed cells were rolled forward.

        Raises:
            sqlite3.Error | psycopg.Error: The store failed; nothing was changed.
        """
        today = day_bucket(self._clock())
        return self._roll_up(self.accepted_versions(), today - self._config.replay_window_days + 1)

    def _roll_up(self, accepted: Mapping[int, ModelShape | None], oldest: int) -> int:
        """Roll up every version with a k-min above 1 (the bundle's, or the configured one)."""
        k_min = {version: self._config.k_min or shape.k_min
                 for version, shape in accepted.items() if shape is not None}
        if self._config.k_min is not None:
            k_min.update({version: self._config.k_min for version in self._store.model_versions()
                          if version not in k_min})
        k_min = {version: k for version, k in k_min.items() if k > 1}
        if not k_min:
            return 0
        rolled = self._store.roll_up_small_cells(k_min, before_day=oldest)
        _log.info("roll-up: %d closed cell(s) below k-min moved to day %d", rolled, oldest)
        return rolled

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
                                       oldest_day=oldest, newest_day=newest,
                                       consistency=False)  # checked per batch by _consistent
        if rejection is not None:
            return rejection
        quota = self._config.pseudonym_daily_quota
        return Increment(dedupe_key(self._secret, contribution.pseudonym, contribution.sequence),
                         contribution.day_bucket, contribution.model_version,
                         contribution.persona_index, contribution.features,
                         quota_keys(self._quota_secret, contribution, quota) if quota else ())

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
        rejected = {o.value: n for o, n in sorted(tally.items()) if o.refused}
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
