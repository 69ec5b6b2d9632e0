"""The on-device client: events in, personas out, state encrypted at rest.

:class:`PersonaClient` joins a verified :class:`PersonaRuntime`, an
:class:`EncryptedStore` and a :class:`Pseudonymizer`. An app uses it for its
one user (the default subject ``"me"``); an edge gateway uses the same class
for many subjects, whose states are loaded lazily and cached (LRU).

Durability: ``track`` returns only after the subject's new state is committed
to the store (one SQLite transaction), so an acknowledged event survives a
crash; ``track_many`` commits a whole batch in one transaction. If the commit
fails, the in-memory state is dropped and the committed one is reloaded.

Rules for time: an event more than ``max_future_seconds`` after the clock is
refused (:class:`InputError`, nothing folded); older events are folded exactly
(see :mod:`edgepersona.sdk.protocol.fold`). ``assign`` evaluates at the clock, or at
the subject's latest event if the clock is behind it.

Thread-safety: every public method may be called from any thread; one lock
serialises state changes, assignment of a cached state is done under it too.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal, Self

from edgepersona.sdk._keystore import KeyProvider
from edgepersona.sdk._pseudonym import Pseudonym, PseudonymDomain, Pseudonymizer
from edgepersona.sdk._runtime import Assignment, BundleInput, KeyInput, PersonaRuntime
from edgepersona.sdk._store import EncryptedStore
from edgepersona.sdk._sync_queue import drop_queued
from edgepersona.sdk.errors import InputError, StoreCorruptError
from edgepersona.sdk.protocol.assign import model_space
from edgepersona.sdk.protocol.event_rules import TimeInput, unix_seconds as _seconds
from edgepersona.sdk.protocol.fold import FoldState, PropertyValue, check_event
from edgepersona.sdk.protocol.trust import dump_trust, load_trust

__all__ = ["ClientOptions", "PersonaClient", "TimeInput", "TrackedEvent"]


_GLOBAL = EncryptedStore.GLOBAL
_STATE = "fold_state"
_TRUSTED = "trusted_version"
_KEYS = "trusted_keys"
_SECRET = "pseudonym_secret"  # noqa: S105 - a record name, not a secret
_SALT = "pseudonym_salt"  # a subject's own salt: forgetting it makes the subject's next pseudonyms new
_SALT_BYTES = 16  # bytes


@dataclass(frozen=True)
class ClientOptions:
    """How the client treats input and caches state.

    Attributes:
        max_future_seconds: events later than clock + this are refused.
        unknown_events: ``ignore`` (count them) or ``reject`` (InputError).
        pseudonym_period_days: pseudonym rotation period.
        cache_subjects: how many subject states stay in memory.
        backend: ``auto``, ``onnxruntime`` or ``numpy``.
    """

    max_future_seconds: float = 300.0  # seconds
    unknown_events: Literal["ignore", "reject"] = "ignore"
    pseudonym_period_days: float = 30.0  # days
    cache_subjects: int = 4096
    backend: str = "auto"


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The parts of a sync contribution that come from the client."""

    pseudonym: Pseudonym
    at: float
    model_version: int
    persona_index: int
    features: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class TrackedEvent:
    """One event for :meth:`PersonaClient.track_many`."""

    subject: str
    event: str
    value: float | None = None
    at: TimeInput | None = None
    properties: Mapping[str, PropertyValue] | None = None


class PersonaClient:
    """Track events and assign personas for one or many subjects on a device."""

    def __init__(self, runtime: PersonaRuntime, store: EncryptedStore, pseudonyms: Pseudonymizer,
                 options: ClientOptions, clock: Callable[[], float]) -> None:
        """Use :meth:`open`."""
        self._runtime = runtime
        self._store = store
        self._pseudonyms = pseudonyms
        self._options = options
        self._clock = clock
        self._lock = threading.RLock()
        self._cache: OrderedDict[str, FoldState] = OrderedDict()
        self._unsalted: set[str] = set()  # subjects with no committed state yet
        self._ignored = 0

    @classmethod
    def open(cls, bundle: BundleInput, *, trusted_keys: Iterable[KeyInput],
             store: str | os.PathLike[str], key_provider: KeyProvider,
             options: ClientOptions | None = None,
             clock: Callable[[], float] = time.time) -> Self:
        """Open the store, verify the bundle against the trusted version, get ready.

        Args:
            bundle: the bundle to run (folder, ``.zip``, bytes or mapping).
            trusted_keys: public keys accepted as bundle signers (bytes, or paths
                of key files or key folders, as for ``PersonaRuntime.open``). After a key
                rotation (:meth:`rotate_key`) the store's rotated keys are
                trusted too, and a key a rotation revoked is not, even if
                listed here.
            store: path of the encrypted store file (its folder must exist).
            key_provider: where the store's master key lives (the app keystore).
            options: input rules and cache size.
            clock: unix seconds now (tests pass a fake clock).

        Returns:
            The client.

        Raises:
            RollbackError: the bundle is older than the version this device trusts.
            ModelIntegrityError: the bundle failed verification.
            StoreError: the store cannot be opened (see its message for recovery).
        """
        opts = options or ClientOptions()
        db = EncryptedStore.open(store, key_provider)
        try:
            trust = load_trust(trusted_keys, db.get(_GLOBAL, _KEYS))  # type: ignore[arg-type]
            trusted = _read_int(db.get(_GLOBAL, _TRUSTED))
            runtime = PersonaRuntime.open(bundle, trusted_keys=trust.keys.values(),
                                          min_version=trusted, backend=opts.backend,
                                          now=_utc(clock()))
            runtime._trusted = trust  # keeps the revoked ids and counter for rotate_key
            if runtime.version > trusted:
                db.put(_GLOBAL, _TRUSTED, str(runtime.version).encode())
            secret = db.get(_GLOBAL, _SECRET)
            if secret is None:
                secret = secrets.token_bytes(32)
                db.put(_GLOBAL, _SECRET, secret)
            period = round(opts.pseudonym_period_days * 86_400)
            pseudonyms = Pseudonymizer(secret, period_s=period)
        except BaseException:
            db.close()
            raise
        return cls(runtime, db, pseudonyms, opts, clock)

    @property
    def runtime(self) -> PersonaRuntime:
        """The verified model runtime."""
        return self._runtime

    @property
    def ignored_events(self) -> int:
        """Events this client was given whose name no feature uses, since it opened.

        With ``unknown_events="ignore"`` (the default) such events are accepted,
        change no feature and are counted here (and per subject in the stored
        state); a rising count usually means a misspelt event name or a bundle
        built from another spec. ``unknown_events="reject"`` refuses them instead.
        """
        return self._ignored

    def track(self, event: str, value: float | None = None, *, subject: str = "me",
              at: TimeInput | None = None,
              properties: Mapping[str, PropertyValue] | None = None) -> bool:
        """Fold one event into a subject's state and commit it.

        Args:
            event: the event name.
            value: the event's numeric value, if any.
            subject: whose event it is (``"me"`` in a single-user app).
            at: unix seconds, an ISO 8601 string or a datetime (naive means
                UTC); default: the clock.
            properties: named properties the spec may use.

        Returns:
            True if a feature used the event; False if no feature uses its name.

        Raises:
            InputError: bad types, NaN/inf, a number beyond ±1e200, a string
                property over 256 characters, a time too far in the future, or an
                unknown event with ``unknown_events="reject"``; nothing changed.
            StoreError: the state could not be committed; nothing changed.
        """
        return self.track_many([TrackedEvent(subject, event, value, at, properties)]) == 1

    def track_many(self, events: Iterable[TrackedEvent]) -> int:
        """Fold a batch of events and commit all touched states in one transaction.

        Args:
            events: the events; all are validated before any is folded.

        Returns:
            How many events a feature used.

        Raises:
            InputError: any event is invalid; nothing changed.
            StoreError: the batch could not be committed; nothing changed.
        """
        now = self._clock()
        checked = []
        for e in events:
            when = self._when(e.at, now)
            checked.append((e.subject, e.event, when, check_event(e.event, e.value, when, e.properties)))
        with self._lock:
            plan = self._runtime.fold_plan
            for _subject, name, _at, _props in checked:
                if self._options.unknown_events == "reject" and name not in plan.by_event \
                        and not plan.any_event:
                    raise InputError(f"event {name!r} is not in the spec; known:"
                                     f" {sorted(plan.by_event)}")
            touched: dict[str, FoldState] = {}
            used = ignored = 0
            try:
                for subject, name, when, props in checked:
                    state = touched.get(subject) or self._cached(subject)
                    folded = state.fold(name, when, props)
                    used, ignored = used + folded, ignored + (not folded)
                    touched[subject] = state
                self._store.put_many([(s, _STATE, st.to_bytes()) for s, st in touched.items()]
                                     + self._new_salts(touched))
            except BaseException:
                for subject in touched:  # uncommitted: reload the committed state next time
                    self._cache.pop(subject, None)
                raise
            self._ignored += ignored
            self._unsalted.difference_update(touched)
            self._trim_cache(touched)
            return used

    def _new_salts(self, subjects: Iterable[str]) -> list[tuple[str, str, bytes]]:
        """A random pseudonym salt for each subject whose first state is about to be written."""
        return [(s, _SALT, secrets.token_bytes(_SALT_BYTES)) for s in subjects
                if s in self._unsalted and self._store.get(s, _SALT) is None]

    def _when(self, at: TimeInput | None, now: float) -> float:
        """The event time in unix seconds, refusing times too far ahead of the clock."""
        if at is None:
            return now
        seconds = _seconds(at)
        if seconds > now + self._options.max_future_seconds:
            raise InputError(f"event time {at!r} is more than {self._options.max_future_seconds:g} s"
                             f" ahead of the clock ({now!r}); check the device clock")
        return seconds

    def _trim_cache(self, recent: Mapping[str, FoldState]) -> None:
        """Mark subjects as recently used and keep the cache within its size."""
        for subject in recent:
            self._cache.move_to_end(subject)
        while len(self._cache) > self._options.cache_subjects:
            evicted, _state = self._cache.popitem(last=False)
            self._unsalted.discard(evicted)  # its next load from the store decides again

    def features(self, *, subject: str = "me", at: TimeInput | None = None) -> list[float]:
        """The subject's raw feature vector (what ``assign`` feeds the model).

        Args:
            subject: whose features.
            at: evaluation time, as for :meth:`track` (default: the clock, or the
                latest event if later).

        Returns:
            One value per spec feature.
        """
        with self._lock:
            state = self._cached(subject)
            values: list[float] = state.evaluate(self._eval_time(state, at)).tolist()
            return values

    def _cached(self, subject: str) -> FoldState:
        """The subject's live state: cache, then store, then a new one.

        Folding mutates it in place; if the commit then fails, ``track_many``
        drops it from the cache so the committed state is reloaded.
        """
        if not isinstance(subject, str) or not subject:
            raise InputError(f"subject must be a non-empty str, got {subject!r}")
        plan = self._runtime.fold_plan
        state = self._cache.get(subject)
        if state is None or state.plan is not plan:
            raw = self._store.get(subject, _STATE)
            if raw is None:
                self._unsalted.add(subject)
            state = (FoldState.from_bytes(plan, raw) if raw is not None else None) or plan.new_state()
            self._cache[subject] = state
        return state

    def _eval_time(self, state: FoldState, at: TimeInput | None) -> float:
        """Explicit time, or the clock (never before the latest event)."""
        return max(self._clock(), state.latest) if at is None else _seconds(at)

    def assign(self, *, subject: str = "me", at: TimeInput | None = None,
               explain: bool = False) -> Assignment:
        """Assign a subject's persona from its folded events.

        Args:
            subject: whose persona.
            at: evaluation time, as for :meth:`track` (default: the clock, or the
                latest event if later).
            explain: include the reasons for the choice.

        Returns:
            The assignment; ``determined`` is False while the subject has fewer
            events than the spec's ``min_events`` or confidence is below
            ``min_confidence`` (the nearest persona is still named).

        Raises:
            InputError: ``at`` is before the subject's latest event.
        """
        runtime = self._runtime
        with self._lock:
            state = self._cache.get(subject)  # a hit is a valid subject of the active plan
            if state is None or state.plan is not runtime._loaded.plan:
                state = self._cached(subject)
            row = state.evaluate(max(self._clock(), state.latest) if at is None else _seconds(at))
            events = state.events
        # evaluate() gives finite float64 rows of the spec's width (the fold's limits)
        result = runtime._assign_row(row, explain)
        if events < runtime._loaded.min_events:
            result = replace(result, determined=False)
        return result

    def _contribution_snapshot(self, subject: str, at: TimeInput | None) -> _Snapshot:
        """What a sync contribution reports for a subject now (used by SyncAgent)."""
        when = self._clock() if at is None else _seconds(at)
        with self._lock:
            state = self._cached(subject)
            row = state.evaluate(max(when, state.latest))
        assigner = self._runtime._loaded.view.assigner  # the light view: no pydantic on this path
        result = self._runtime.assign(row)
        features = model_space(assigner, row[None, :])[0]
        return _Snapshot(self.pseudonym(subject=subject, domain="sync", at=when), when,
                         result.model_version, result.index, tuple(features.tolist()))

    def update(self, bundle: BundleInput) -> int:
        """Verify and switch to a newer bundle; the trusted version is persisted first.

        Args:
            bundle: the new bundle.

        Returns:
            The active version.

        Raises:
            RollbackError: not newer than the trusted version.
            ModelIntegrityError: failed verification; the old bundle stays active.
            StoreError: the trusted version could not be persisted; the old bundle stays active.
        """
        with self._lock:
            previous = self._runtime._loaded
            version = self._runtime.update(bundle, now=_utc(self._clock()))
            try:
                self._store.put(_GLOBAL, _TRUSTED, str(version).encode())
            except BaseException:
                self._runtime._loaded = previous  # not persisted: switching would not survive a restart
                raise
            return version

    def rotate_key(self, statement: bytes) -> tuple[str, ...]:
        """Trust a new bundle signing key through a statement signed by the old one.

        The rotated key set is persisted before it is used, so after a restart
        the device trusts the new key and never again the retired one (see
        :mod:`edgepersona.sdk.protocol.rotation`). The active bundle stays active;
        update to a bundle signed by the new key next.

        Args:
            statement: the file written by ``edgepersona keys rotate``.

        Returns:
            The ids of the keys now trusted.

        Raises:
            UntrustedKeyError: no currently trusted key signed the statement.
            RollbackError: the statement is not newer than the last applied one.
            ModelIntegrityError: the statement is malformed, badly signed or expired.
            StoreError: the rotated keys could not be persisted; nothing changed.
        """
        with self._lock:
            rotated = self._runtime._trusted.rotate(statement, now=_utc(self._clock()))
            self._store.put(_GLOBAL, _KEYS, dump_trust(rotated))
            self._runtime._trusted = rotated  # PersonaRuntime has no public way to swap keys
            return rotated.ids

    def pseudonym(self, *, subject: str = "me", domain: PseudonymDomain = "sync",
                  at: TimeInput | None = None) -> Pseudonym:
        """The subject's keyed pseudonym for a domain and the current epoch.

        Args:
            subject: the raw subject id (never leaves the device).
            domain: ``local`` or ``sync``; the two cannot be linked.
            at: the moment choosing the epoch, as for :meth:`track` (default: the clock).

        Returns:
            The pseudonym with its key id and epoch.
        """
        return self._subject_pseudonyms(subject).pseudonym(
            subject, domain=domain, at=self._clock() if at is None else _seconds(at))

    def _subject_pseudonyms(self, subject: str) -> Pseudonymizer:
        """The subject's pseudonymizer, keyed by its own salt (made on first use)."""
        if not isinstance(subject, str):
            raise TypeError(f"subject must be a str, got {type(subject).__name__}")
        if not subject:
            raise InputError("subject must be a non-empty string")
        with self._lock:
            salt = self._store.get(subject, _SALT)
            if salt is None:
                if self._store.get(subject, _STATE) is not None:
                    return self._pseudonyms  # state written before salts: its pseudonyms stay
                salt = secrets.token_bytes(_SALT_BYTES)
                self._store.put(subject, _SALT, salt)
            return self._pseudonyms.salted(salt)

    def _queue_tag(self, subject: str) -> bytes:
        """A keyed tag of the subject's queued sync envelopes, so forget() can drop them."""
        secret = self._subject_pseudonyms(subject).export_secret()
        return hmac.digest(secret, b"edgepersona/sync-queue-tag\x00" + subject.encode(), "sha256")[:16]

    def subjects(self) -> list[str]:
        """Subjects with stored state.

        Returns:
            Their ids.
        """
        return self._store.subjects()

    def forget(self, subject: str) -> bool:
        """Erase a subject irreversibly (crypto-shredding and scrubbing; see the store's notes).

        Its salt goes too, so if the subject comes back its local and sync
        pseudonyms are new and cannot be linked to the old ones; its sync
        envelopes still queued are dropped (counted in ``dropped``).

        Args:
            subject: whose state to erase.

        Returns:
            True if the subject had state.
        """
        with self._lock:
            self._cache.pop(subject, None)
            known = any(self._store.get(subject, name) is not None for name in (_SALT, _STATE))
            if known:  # its queued envelopes go first, so the scrub covers their old pages
                drop_queued(self._store, self._queue_tag(subject))
            return self._store.forget(subject)

    def close(self) -> None:
        """Close the store; the client cannot be used afterwards."""
        with self._lock:
            self._cache.clear()
            self._store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _utc(seconds: float) -> datetime:
    """The client's clock as an aware datetime (bundle expiry is checked against it)."""
    return datetime.fromtimestamp(seconds, UTC)


def _read_int(raw: bytes | None) -> int:
    """A small integer record, 0 when absent."""
    if raw is None:
        return 0
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise StoreCorruptError("the trusted-version record is unreadable; reset the store") from None
