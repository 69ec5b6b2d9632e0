"""Privacy budget ledger: per data source (ε, δ) budgets, spent release by release.

The maths is :mod:`.accounting`'s; this module keeps the record.

Entries. One canonical JSON object per entry (sorted keys, no spaces), append-
only: ``seq`` counts from 0, ``prev`` is the SHA-256 of the previous line (64
zeros first) and ``sig`` an Ed25519 signature (context :data:`LEDGER_CONTEXT`)
over the line without ``sig``. Editing, reordering, removing or inserting any
line but the last breaks a signature or the chain: ModelIntegrityError. The
lines live in a file, SQLite or PostgreSQL (:mod:`.ledger_store`); the bytes
and the checks are the same in all three.

The people, not the name. A budget and every spend carry a keyed sketch of
their users' ids (:mod:`.source_identity`; the secret sits beside the ledger,
``<ledger>.source-key``). At spend time the release is charged to the named
source *and* to every source whose people it shares (the rule in
:func:`.source_identity.same_people`), and it must fit every one of those
budgets, whatever name, file name or ``--source`` it arrives with.

Identity and heads. :attr:`PrivacyLedger.ledger_id` is the SHA-256 of entry 0
(a new or re-created ledger has another); :attr:`PrivacyLedger.head` is
(seq, SHA-256) of the last entry. Each private release records both in its
manifest, so an audit can tell a ledger that is missing the release, went
backwards or was replaced (:mod:`.ledger_audit`).

Crashes (file form). Appends run under an exclusive ``flock``, write the whole
line, then ``fsync``. A crash mid-write leaves an unterminated last line; if it
does not verify it is a *torn tail*: ignored (its ``spend`` never returned, so
its release was never published), reported by :attr:`PrivacyLedger.torn_tail`
and cut off by the next append. An unterminated line that verifies counts.
Publish a release only after :meth:`PrivacyLedger.spend` returns.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgepersona.sdk import InputError, ModelIntegrityError
from edgepersona.sdk.protocol.signing import key_id, sign
from edgepersona.trainer.privacy.accounting import (
    BudgetStatus,
    Mechanism,
    check_epsilon_delta,
    gaussian_mu,
    refuse_if_over,
)
from edgepersona.trainer.privacy.ledger_store import Appended, LedgerStore, open_store
from edgepersona.trainer.privacy.source_identity import (
    SourceSketch,
    load_source_secret,
    same_people,
    sketch_ids,
)

__all__ = ["LEDGER_CONTEXT", "PrivacyLedger", "entry_hash", "read_ledger", "read_ledger_chain",
           "source_secret_path", "summarise"]

LEDGER_CONTEXT = b"edgepersona/ledger/v1\x00"
Entries = tuple[dict[str, Any], ...]
_GENESIS = "0" * 64


@dataclass(frozen=True)
class _Contents:
    """A verified ledger: its entries, each line's hash, the head, and the torn tail's size."""

    entries: Entries
    hashes: tuple[str, ...]
    good_bytes: int
    torn_tail: int

    @property
    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry; (-1, zeros) when empty."""
        return (len(self.entries) - 1, self.hashes[-1] if self.hashes else _GENESIS)


def entry_hash(line: bytes) -> str:
    """The chain hash of one ledger line (without its newline).

    Args:
        line: the line's bytes.

    Returns:
        Its SHA-256, hex.
    """
    return hashlib.sha256(line).hexdigest()


def _canonical(body: dict[str, Any]) -> bytes:
    """Canonical JSON bytes: sorted keys, no spaces, ASCII."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def _verify_line(line: bytes, seq: int, prev: str, public: Ed25519PublicKey) -> dict[str, Any] | None:
    """The entry if the line is the valid entry ``seq`` after ``prev``, else None."""
    try:
        body = json.loads(line)
        signature = base64.b64decode(body.pop("sig"), validate=True)
        if body.get("seq") != seq or body.get("prev") != prev or body.get("key_id") != key_id(public):
            return None
        public.verify(signature, LEDGER_CONTEXT + _canonical(body))
    except (ValueError, KeyError, TypeError, AttributeError, InvalidSignature):
        return None
    return body if isinstance(body, dict) else None


def _parse(data: bytes, public: Ed25519PublicKey) -> _Contents:
    """Verify every line; any bad line but an unterminated last one is an integrity error."""
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    entries: list[dict[str, Any]] = []
    hashes: list[str] = []
    offset = 0
    for seq, line in enumerate(complete):
        entry = _verify_line(line, seq, hashes[-1] if hashes else _GENESIS, public)
        if entry is None:
            raise ModelIntegrityError(
                f"privacy ledger entry {seq} (byte {offset}) is not the signed successor of entry"
                f" {seq - 1}: the ledger was edited, reordered or truncated in the middle; restore"
                " it from backup — budgets cannot be trusted until then")
        entries.append(entry)
        hashes.append(entry_hash(line))
        offset += len(line) + 1
    torn = len(tail)
    if tail:
        entry = _verify_line(tail, len(entries), hashes[-1] if hashes else _GENESIS, public)
        if entry is not None:  # complete entry whose newline was lost: it counts
            entries.append(entry)
            hashes.append(entry_hash(tail))
            offset, torn = offset + len(tail), 0
    return _Contents(tuple(entries), tuple(hashes), offset, torn)


def _covers(entry: dict[str, Any], source: str) -> bool:
    """Whether an entry belongs to (or was also charged to) a source."""
    return bool(entry.get("source") == source or source in entry.get("sources", ()))


def summarise(entries: Sequence[dict[str, Any]], source: str) -> BudgetStatus:
    """Compose the spends charged to one source (``has_budget`` False when none was set).

    Args:
        entries: verified ledger entries.
        source: the source label.

    Returns:
        Its status.
    """
    status = BudgetStatus(source, math.inf, 0.0, has_budget=False)
    for entry in entries:
        if not _covers(entry, source):
            continue
        if entry["kind"] == "budget":
            if entry.get("source") == source:
                status = replace(status, epsilon=float(entry["epsilon"]),
                                 delta=float(entry["delta"]), has_budget=True)
        elif entry["mechanism"] == "gaussian":
            status = replace(status, rho=status.rho + float(entry["rho"]),
                             releases=status.releases + 1)
        else:
            status = status.after(float(entry["epsilon"]), float(entry["delta"]), "other")
    return status


def _people(entries: Entries) -> dict[str, SourceSketch]:
    """Each budgeted source's sketch: the union of its budget's and its spends' sketches."""
    budgeted = [e["source"] for e in entries if e["kind"] == "budget"]
    people: dict[str, SourceSketch] = {}
    for entry in entries:
        if "sketch" not in entry:
            continue
        sketch = SourceSketch.decode(str(entry["sketch"]))
        for source in {entry["source"], *entry.get("sources", ())} & set(budgeted):
            people[source] = people[source].merge(sketch) if source in people else sketch
    return people


def _charged(entries: Entries, source: str, sketch: SourceSketch | None) -> list[str]:
    """The named source first, then every budgeted source sharing the sketch's people."""
    if sketch is None:
        return [source]
    matches = [name for name, known in _people(entries).items()
               if name != source and same_people(sketch, known)]
    return [source, *sorted(matches)]


def source_secret_path(where: str | os.PathLike[str]) -> Path | None:
    """Where a file ledger keeps its source secret (``<ledger>.source-key``); None for a database.

    Args:
        where: the ledger's path or URL.

    Returns:
        The secret's path, or None when ``where`` is a database URL.
    """
    text = os.fspath(where)
    if text.startswith(("sqlite:///", "postgresql://", "postgres://")):
        return None
    return Path(text + ".source-key")


class PrivacyLedger:
    """An append-only, signed, hash-chained privacy budget ledger (file, SQLite or PostgreSQL).

    Args:
        where: the ledger file (created on first write, mode 0600), ``sqlite:///path.db``
            or a ``postgresql://`` URL.
        key: the Ed25519 key that signs new entries; existing entries must verify under it.
        secret: the source secret's file (default ``<ledger>.source-key``; needed for a
            database ledger before :meth:`sketch` can be used).

    Raises:
        ModelIntegrityError: the existing entries fail verification.
    """

    def __init__(self, where: str | os.PathLike[str], key: Ed25519PrivateKey, *,
                 secret: Path | None = None) -> None:
        self.where = os.fspath(where)
        self.path = Path(self.where)
        self._store: LedgerStore = open_store(where)
        self._key = key
        self._public = key.public_key()
        self._secret_path = secret or source_secret_path(where)
        self._read()

    @property
    def head(self) -> tuple[int, str]:
        """(seq, SHA-256) of the last entry; record it in each release's manifest."""
        return self._read().head

    @property
    def ledger_id(self) -> str | None:
        """The SHA-256 of entry 0 (None while empty): a re-created ledger has another."""
        hashes = self._read().hashes
        return hashes[0] if hashes else None

    @property
    def torn_tail(self) -> int:
        """Bytes of an interrupted append at the end of the file (ignored; 0 if none)."""
        return self._read().torn_tail

    def verify_head(self, seq: int, digest: str) -> None:
        """Check the ledger still holds an entry recorded earlier (detects tail truncation).

        Args:
            seq: the entry's sequence number.
            digest: its SHA-256, as :attr:`head` gave it.

        Raises:
            ModelIntegrityError: the entry is gone or different.
        """
        hashes = self._read().hashes
        if not 0 <= seq < len(hashes) or hashes[seq] != digest:
            raise ModelIntegrityError(
                f"privacy ledger no longer holds entry {seq} ({digest[:12]}…) recorded in a release;"
                " it was truncated or replaced by an older copy — restore it from backup")

    def sketch(self, user_ids: Sequence[str]) -> SourceSketch:
        """The keyed sketch of a release's users under this ledger's source secret.

        Args:
            user_ids: the users the release is computed from.

        Returns:
            The sketch (no id is kept).

        Raises:
            InputError: no ids, or a database ledger without a secret path.
        """
        return sketch_ids(user_ids, self.source_secret())

    def source_secret(self) -> bytes:
        """The source secret (created on first use).

        Returns:
            32 bytes.

        Raises:
            InputError: a database ledger was opened without ``secret``.
        """
        if self._secret_path is None:
            raise InputError("a database ledger needs a source secret file: pass --ledger-secret"
                             " PATH (secret=PATH in Python); keep it as safe as the signing key")
        return load_source_secret(self._secret_path)

    def resolve(self, sketch: SourceSketch, label: str | None = None) -> str:
        """The source a release on these people spends from.

        Args:
            sketch: the release's users.
            label: an operator-chosen name, used only when the people are new.

        Returns:
            The first budgeted source sharing these people, else ``label``, else the
            sketch's opaque label.
        """
        entries = self._read().entries
        people = _people(entries)
        order = [e["source"] for e in entries if e["kind"] == "budget" and e["source"] in people]
        for name in order:
            if same_people(sketch, people[name]):
                return str(name)
        return label or sketch.label(self.source_secret())

    def people(self, source: str) -> SourceSketch | None:
        """The sketch of everyone a budgeted source's budget and spends were about.

        Args:
            source: the data source name.

        Returns:
            The merged sketch, or None when the source has no budget or no sketch.
        """
        return _people(self._read().entries).get(source)

    def status(self, source: str) -> BudgetStatus:
        """The budget and spending of one data source.

        Args:
            source: the data source name.

        Returns:
            Its status.
        """
        return summarise(self._read().entries, source)

    def set_budget(self, source: str, *, epsilon: float, delta: float,
                   sketch: SourceSketch | None = None) -> None:
        """Give a data source its total budget (once; budgets are never raised).

        Args:
            source: the data source name.
            epsilon: total ε.
            delta: total δ.
            sketch: the source's people; a budget for people who already have one is refused.

        Raises:
            InputError: bad values, the source already has a budget, or its people do.
        """
        check_epsilon_delta(epsilon, delta)
        body: dict[str, Any] = {"kind": "budget", "source": source, "epsilon": epsilon, "delta": delta}
        if sketch is not None:
            body["sketch"] = sketch.encode()

        def allowed(entries: Entries) -> None:
            current = summarise(entries, source)
            if current.has_budget:
                raise InputError(f"source {source!r} already has a budget (ε={current.epsilon:g},"
                                 f" δ={current.delta:g}); budgets cannot be changed — use a new source")
            others = _charged(entries, source, sketch)[1:]
            if others:
                raise InputError(f"these people already have a budget under source {others[0]!r};"
                                 " a new name does not give them a new budget")

        self._append(body, allowed)

    def check(self, source: str, *, epsilon: float, delta: float,
              mechanism: Mechanism = "gaussian", sketch: SourceSketch | None = None) -> None:
        """Refuse, before any noise is drawn, a release the budget cannot pay for.

        Args:
            source: the data source name.
            epsilon: the release's ε.
            delta: the release's δ.
            mechanism: ``"gaussian"`` or ``"other"`` (see :mod:`.accounting`).
            sketch: the release's people: every source sharing them must afford it too.

        Raises:
            BudgetExceededError: the release would exceed a budget it is charged to.
            InputError: ε or δ out of range.
        """
        check_epsilon_delta(epsilon, delta, mechanism)
        entries = self._read().entries
        for name in _charged(entries, source, sketch):
            refuse_if_over(summarise(entries, name), epsilon, delta, mechanism)

    def spend(self, source: str, *, epsilon: float, delta: float, mechanism: Mechanism = "gaussian",
              note: str = "", now: datetime | None = None,
              sketch: SourceSketch | None = None) -> tuple[int, str]:
        """Record a release; re-checks every budget it is charged to under the lock first.

        Call after the noise is drawn and before the result leaves the process.

        Args:
            source: the data source name.
            epsilon: the release's ε.
            delta: the release's δ.
            mechanism: ``"gaussian"`` or ``"other"``.
            note: what was released (e.g. ``"retail-personas v3"``).
            now: the entry's time (default: the system clock).
            sketch: the release's people (recorded; see the module docstring).

        Returns:
            The new head (seq, SHA-256).

        Raises:
            BudgetExceededError: the release would exceed a budget (nothing is written).
            InputError: ε or δ out of range.
        """
        check_epsilon_delta(epsilon, delta, mechanism)
        body: dict[str, Any] = {"kind": "spend", "source": source, "mechanism": mechanism,
                                "epsilon": epsilon, "delta": delta, "note": note}
        if mechanism == "gaussian":
            body["rho"] = gaussian_mu(epsilon, delta) ** 2 / 2.0
        if sketch is not None:
            body["sketch"] = sketch.encode()

        def allowed(entries: Entries) -> None:
            charged = _charged(entries, source, sketch)
            for name in charged:
                refuse_if_over(summarise(entries, name), epsilon, delta, mechanism)
            if len(charged) > 1:
                body["sources"] = charged[1:]

        return self._append(body, allowed, now)

    def _read(self) -> _Contents:
        """Read and verify every entry."""
        return _parse(self._store.read(), self._public)

    def _append(self, body: dict[str, Any], allowed: Callable[[Entries], None],
                now: datetime | None = None
                ) -> tuple[int, str]:
        """Under the store's lock: verify, check, sign one line; return the new head."""
        made: list[tuple[int, str]] = []

        def build(data: bytes) -> Appended:
            parsed = _parse(data, self._public)
            allowed(parsed.entries)
            seq, prev = parsed.head
            stamp = (now or datetime.now(UTC)).isoformat()
            entry = {**body, "seq": seq + 1, "prev": prev, "time": stamp,
                     "key_id": key_id(self._public)}
            signature = sign(self._key, LEDGER_CONTEXT, _canonical(entry)).signature
            line = _canonical({**entry, "sig": base64.b64encode(signature).decode("ascii")})
            made.append((seq + 1, entry_hash(line)))
            return Appended(parsed.good_bytes, seq + 1, line)

        self._store.append(build)
        return made[-1]


def read_ledger_chain(where: str | os.PathLike[str], public: Ed25519PublicKey
                      ) -> tuple[tuple[dict[str, Any], ...], tuple[str, ...]]:
    """Verify a ledger with the trainer's public key only; return its entries and line hashes.

    Args:
        where: the ledger file or database URL.
        public: the public key of the key that signed the entries.

    Returns:
        (the verified entries, the SHA-256 of each entry's line; entry 0's is the ledger id).

    Raises:
        ModelIntegrityError: an entry is edited, reordered or missing in the middle.
        InputError: the file does not exist.
    """
    text = os.fspath(where)
    file = Path(text[len("sqlite:///"):]) if text.startswith("sqlite:///") else \
        None if source_secret_path(text) is None else Path(text)
    if file is not None and not file.exists():
        raise InputError(f"no privacy ledger at {file.name}")
    contents = _parse(open_store(where).read(), public)
    return contents.entries, contents.hashes


def read_ledger(where: str | os.PathLike[str], public: Ed25519PublicKey
                ) -> tuple[tuple[dict[str, Any], ...], dict[str, BudgetStatus]]:
    """Verify a ledger with the trainer's public key only (for auditors).

    Args:
        where: the ledger file or database URL.
        public: the public key of the key that signed the entries.

    Returns:
        (the verified entries, each source's budget status).

    Raises:
        ModelIntegrityError: an entry is edited, reordered or missing in the middle.
        InputError: the file does not exist.
    """
    entries, _ = read_ledger_chain(where, public)
    sources = sorted({str(e.get("source")) for e in entries if e.get("source")})
    return entries, {s: summarise(entries, s) for s in sources}
