"""Privacy budget ledger: per data source (ε, δ) budgets, spent release by release.

Accounting. A Gaussian release (L2 sensitivity Δ, noise sigma) is mu-GDP with
mu = Δ/sigma, and an adaptive composition of Gaussians is exactly one
Gaussian with mu^2 = Σ mu_i^2 (Dong, Roth & Su 2022). The ledger records each
Gaussian release as zCDP rho = mu^2/2 and, because every rho in it comes
from Gaussian noise, converts the total with the *exact* Gaussian privacy
profile (Balle & Wang 2018), δ(ε; mu) = Φ(-ε/mu + mu/2) - e^ε Φ(-ε/mu - mu/2):
about 7% more mu than the generic zCDP bound ε = rho + 2 sqrt(rho ln(1/δ)) at
ε = 1, δ = 1e-6. A release calibrated to (ε, δ) has mu = ``gaussian_mu(ε, δ)``.
Any other mechanism is recorded as plain (ε, δ) and added by basic
composition, so a source has spent::

    ε_spent = Σ ε_other + gaussian_epsilon(sqrt(2 Σ rho), δ_budget - Σ δ_other)

and a release is allowed while that stays ≤ ε_budget (and Σ δ_other ≤ δ_budget).

File. One canonical JSON object per line (sorted keys, no spaces), append-
only: ``seq`` counts from 0, ``prev`` is the SHA-256 of the previous line (64
zeros first) and ``sig`` an Ed25519 signature (context :data:`LEDGER_CONTEXT`)
over the line without ``sig``. Editing, reordering, removing or inserting any
line but the last breaks a signature or the chain: ModelIntegrityError.

Crashes. Appends run under an exclusive ``flock`` (so check-and-append is
atomic across processes), write the whole line, then ``fsync``. A crash
mid-write leaves an unterminated last line; if it does not verify it is a
*torn tail*: ignored (its ``spend`` never returned, so its release was never
published), reported by :attr:`PrivacyLedger.torn_tail` and cut off by the
next append. An unterminated line that verifies counts. Publish a release
only after :meth:`PrivacyLedger.spend` returns.

Limits. Whole entries cut off the end, or an older copy restored, cannot be
seen from the file alone: record :attr:`PrivacyLedger.head` in each release's
manifest and check it later with :meth:`PrivacyLedger.verify_head`.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgepersona.sdk import InputError, ModelIntegrityError
from edgepersona.sdk.protocol.signing import key_id, sign
from edgepersona.trainer.errors import BudgetExceededError

__all__ = ["LEDGER_CONTEXT", "BudgetStatus", "PrivacyLedger", "gaussian_delta", "gaussian_epsilon",
           "gaussian_mu", "read_ledger"]

LEDGER_CONTEXT = b"edgepersona/ledger/v1\x00"
Mechanism = Literal["gaussian", "other"]
Entries = tuple[dict[str, Any], ...]
_GENESIS = "0" * 64
_TOLERANCE = 1e-9  # relative slack on ε comparisons (float rounding of the conversions)


def _phi(x: float) -> float:
    """Standard normal CDF, accurate in the tails (erfc, no cancellation)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gaussian_delta(mu: float, epsilon: float) -> float:
    """The exact δ at which a μ-GDP (Gaussian) mechanism is ε-DP.

    Args:
        mu: the Gaussian-DP parameter (sensitivity / noise standard deviation).
        epsilon: ε ≥ 0.

    Returns:
        δ(ε; μ) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2).
    """
    if mu <= 0.0:
        return 0.0
    tail = _phi(-epsilon / mu - mu / 2.0)
    second = math.exp(epsilon + math.log(tail)) if tail > 0.0 else 0.0
    return max(0.0, _phi(-epsilon / mu + mu / 2.0) - second)


def _bisect(inside: Callable[[float], bool], lo: float, hi: float) -> tuple[float, float]:
    """Shrink [lo, hi] around the switch of a monotone predicate (true at lo)."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if inside(mid) else (lo, mid)
    return lo, hi


@functools.lru_cache(maxsize=1024)
def gaussian_mu(epsilon: float, delta: float) -> float:
    """The largest μ whose Gaussian mechanism is (ε, δ)-DP.

    Args:
        epsilon: ε > 0.
        delta: 0 < δ < 1.

    Returns:
        μ (rounded down, so the guarantee holds).

    Raises:
        InputError: ε or δ out of range (Gaussian noise needs δ > 0).
    """
    _check_eps_delta(epsilon, delta)
    if delta == 0.0:
        raise InputError("Gaussian noise needs delta > 0 (e.g. 1e-6, well below 1/number of users)")
    hi = 1.0
    while gaussian_delta(hi, epsilon) <= delta:
        hi *= 2.0
    return _bisect(lambda mu: gaussian_delta(mu, epsilon) <= delta, 0.0, hi)[0]


def gaussian_epsilon(mu: float, delta: float) -> float:
    """The smallest ε at which a μ-GDP mechanism is (ε, δ)-DP.

    Args:
        mu: the Gaussian-DP parameter, ≥ 0.
        delta: δ; 0 or less gives infinity.

    Returns:
        ε (rounded up, so the guarantee holds).
    """
    if mu <= 0.0:
        return 0.0
    if delta <= 0.0:
        return math.inf
    if gaussian_delta(mu, 0.0) <= delta:
        return 0.0
    hi = 1.0
    while gaussian_delta(mu, hi) > delta:
        hi *= 2.0
    return _bisect(lambda eps: gaussian_delta(mu, eps) > delta, 0.0, hi)[1]


def _check_eps_delta(epsilon: float, delta: float, mechanism: str = "other") -> None:
    """ε must be positive and finite, δ in [0, 1), the mechanism known."""
    if mechanism not in ("gaussian", "other"):
        raise InputError(f"mechanism must be 'gaussian' or 'other', got {mechanism!r}")
    if not (math.isfinite(epsilon) and epsilon > 0.0):
        raise InputError(f"epsilon must be a positive finite number, got {epsilon!r}")
    if not (math.isfinite(delta) and 0.0 <= delta < 1.0):
        raise InputError(f"delta must be in [0, 1), got {delta!r}")


@dataclass(frozen=True)
class BudgetStatus:
    """What one data source may spend and has spent.

    Attributes:
        source: the data source name.
        epsilon: the budget's ε (inf when no budget is set: nothing may be spent).
        delta: the budget's δ.
        rho: zCDP rho of the Gaussian releases so far (μ² / 2).
        other_epsilon: summed ε of non-Gaussian releases.
        other_delta: summed δ of non-Gaussian releases.
        releases: the number of spends recorded.
        has_budget: whether a budget entry exists for the source.
    """

    source: str
    epsilon: float
    delta: float
    rho: float = 0.0
    other_epsilon: float = 0.0
    other_delta: float = 0.0
    releases: int = 0
    has_budget: bool = True

    @property
    def spent_epsilon(self) -> float:
        """Total ε spent, stated at the budget's δ (see the module docstring)."""
        mu = math.sqrt(2.0 * self.rho)
        return self.other_epsilon + gaussian_epsilon(mu, self.delta - self.other_delta)

    def after(self, epsilon: float, delta: float, mechanism: Mechanism) -> BudgetStatus:
        """The status once a release of (ε, δ) is added.

        Args:
            epsilon: the release's ε.
            delta: the release's δ.
            mechanism: ``"gaussian"`` (composed in rho) or ``"other"`` (basic composition).

        Returns:
            The new status.

        Raises:
            InputError: ε or δ out of range, or an unknown mechanism.
        """
        _check_eps_delta(epsilon, delta, mechanism)
        if mechanism == "gaussian":
            rho = gaussian_mu(epsilon, delta) ** 2 / 2.0
            return replace(self, rho=self.rho + rho, releases=self.releases + 1)
        return replace(self, other_epsilon=self.other_epsilon + epsilon,
                       other_delta=self.other_delta + delta, releases=self.releases + 1)

    def fits(self) -> bool:
        """Whether the spending is within the budget."""
        return (self.has_budget and self.other_delta <= self.delta * (1.0 + _TOLERANCE)
                and self.spent_epsilon <= self.epsilon * (1.0 + _TOLERANCE))

    def remaining_epsilon(self, delta: float) -> float:
        """The largest ε a further Gaussian release calibrated at ``delta`` may use.

        Args:
            delta: the δ the release would be calibrated at.

        Returns:
            ε, or 0 when nothing is left.
        """
        left_eps, left_delta = self.epsilon - self.other_epsilon, self.delta - self.other_delta
        if not self.has_budget or left_eps <= 0.0 or left_delta <= 0.0 or delta <= 0.0:
            return 0.0
        room = gaussian_mu(left_eps, left_delta) ** 2 - 2.0 * self.rho
        return gaussian_epsilon(math.sqrt(room), delta) if room > 0.0 else 0.0


@dataclass(frozen=True)
class _Contents:
    """A verified ledger: its entries, the head, and the torn tail's size."""

    entries: Entries
    head: tuple[int, str]
    good_bytes: int
    torn_tail: int


def _entry_hash(line: bytes) -> str:
    """The chain hash of one line (without its newline)."""
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
    """Verify a whole file; any bad line but an unterminated last one is an integrity error."""
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    entries: list[dict[str, Any]] = []
    prev, offset = _GENESIS, 0
    for seq, line in enumerate(complete):
        entry = _verify_line(line, seq, prev, public)
        if entry is None:
            raise ModelIntegrityError(
                f"privacy ledger entry {seq} (byte {offset}) is not the signed successor of entry"
                f" {seq - 1}: the ledger was edited, reordered or truncated in the middle; restore"
                " it from backup — budgets cannot be trusted until then")
        entries.append(entry)
        prev, offset = _entry_hash(line), offset + len(line) + 1
    torn = len(tail)
    if tail:
        entry = _verify_line(tail, len(entries), prev, public)
        if entry is not None:  # complete entry whose newline was lost: it counts
            entries.append(entry)
            prev, offset, torn = _entry_hash(tail), offset + len(tail), 0
    return _Contents(tuple(entries), (len(entries) - 1, prev), offset, torn)


def _summarise(entries: Entries, source: str) -> BudgetStatus:
    """Compose the spends of one source (``has_budget`` False when none was set)."""
    status = BudgetStatus(source, math.inf, 0.0, has_budget=False)
    for entry in entries:
        if entry.get("source") != source:
            continue
        if entry["kind"] == "budget":
            status = replace(status, epsilon=float(entry["epsilon"]), delta=float(entry["delta"]),
                             has_budget=True)
        elif entry["mechanism"] == "gaussian":
            status = replace(status, rho=status.rho + float(entry["rho"]),
                             releases=status.releases + 1)
        else:
            status = status.after(float(entry["epsilon"]), float(entry["delta"]), "other")
    return status


class PrivacyLedger:
    """An append-only, signed, hash-chained privacy budget ledger in one file.

    Args:
        path: the ledger file (created on first write, mode 0600).
        key: the Ed25519 key that signs new entries; existing entries must verify under it.

    Raises:
        ModelIntegrityError: the existing file fails verification.
    """

    def __init__(self, path: str | os.PathLike[str], key: Ed25519PrivateKey) -> None:
        self.path = Path(path)
        self._key = key
        self._public = key.public_key()
        self._read()

    @property
    def head(self) -> tuple[int, str]:
        """(seq, SHA-256) of the last entry; record it in each release's manifest."""
        return self._read().head

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
        data = self.path.read_bytes() if self.path.exists() else b""
        if seq >= len(_parse(data, self._public).entries) or _entry_hash(data.split(b"\n")[seq]) != digest:
            raise ModelIntegrityError(
                f"privacy ledger no longer holds entry {seq} ({digest[:12]}…) recorded in a release;"
                " it was truncated or replaced by an older copy — restore it from backup")

    def status(self, source: str) -> BudgetStatus:
        """The budget and spending of one data source.

        Args:
            source: the data source name.

        Returns:
            Its status.
        """
        return _summarise(self._read().entries, source)

    def set_budget(self, source: str, *, epsilon: float, delta: float) -> None:
        """Give a data source its total budget (once; budgets are never raised).

        Args:
            source: the data source name.
            epsilon: total ε.
            delta: total δ.

        Raises:
            InputError: bad values, or the source already has a budget.
        """
        _check_eps_delta(epsilon, delta)

        def allowed(entries: Entries) -> None:
            current = _summarise(entries, source)
            if current.has_budget:
                raise InputError(f"source {source!r} already has a budget (ε={current.epsilon:g},"
                                 f" δ={current.delta:g}); budgets cannot be changed — use a new source")

        self._append({"kind": "budget", "source": source, "epsilon": epsilon, "delta": delta}, allowed)

    def check(self, source: str, *, epsilon: float, delta: float,
              mechanism: Mechanism = "gaussian") -> None:
        """Refuse, before any noise is drawn, a release the budget cannot pay for.

        Args:
            source: the data source name.
            epsilon: the release's ε.
            delta: the release's δ.
            mechanism: ``"gaussian"`` or ``"other"`` (see the module docstring).

        Raises:
            BudgetExceededError: the release would exceed the source's budget.
            InputError: ε or δ out of range.
        """
        _check_eps_delta(epsilon, delta, mechanism)
        _refuse_if_over(self.status(source), epsilon, delta, mechanism)

    def spend(self, source: str, *, epsilon: float, delta: float, mechanism: Mechanism = "gaussian",
              note: str = "", now: datetime | None = None) -> tuple[int, str]:
        """Record a release; re-checks the budget under the file lock first.

        Call after the noise is drawn and before the result leaves the process.

        Args:
            source: the data source name.
            epsilon: the release's ε.
            delta: the release's δ.
            mechanism: ``"gaussian"`` or ``"other"``.
            note: what was released (e.g. ``"retail-personas v3"``).
            now: the entry's time (default: the system clock).

        Returns:
            The new head (seq, SHA-256).

        Raises:
            BudgetExceededError: the release would exceed the budget (nothing is written).
            InputError: ε or δ out of range.
        """
        _check_eps_delta(epsilon, delta, mechanism)
        body: dict[str, Any] = {"kind": "spend", "source": source, "mechanism": mechanism,
                                "epsilon": epsilon, "delta": delta, "note": note}
        if mechanism == "gaussian":
            body["rho"] = gaussian_mu(epsilon, delta) ** 2 / 2.0
        return self._append(body, lambda entries: _refuse_if_over(
            _summarise(entries, source), epsilon, delta, mechanism), now)

    def _read(self) -> _Contents:
        """Read and verify the file under a shared lock."""
        if not self.path.exists():
            return _Contents((), (-1, _GENESIS), 0, 0)
        with self.path.open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            return _parse(handle.read(), self._public)

    def _append(self, body: dict[str, Any], allowed: Callable[[Entries], None],
                now: datetime | None = None) -> tuple[int, str]:
        """Under an exclusive lock: verify, cut a torn tail, check, write one line, fsync."""
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            parsed = _parse(data, self._public)
            allowed(parsed.entries)
            seq, prev = parsed.head
            stamp = (now or datetime.now(UTC)).isoformat()
            entry = {**body, "seq": seq + 1, "prev": prev, "time": stamp,
                     "key_id": key_id(self._public)}
            signature = sign(self._key, LEDGER_CONTEXT, _canonical(entry)).signature
            line = _canonical({**entry, "sig": base64.b64encode(signature).decode("ascii")})
            fix = b"\n" if parsed.good_bytes and data[parsed.good_bytes - 1:parsed.good_bytes] != b"\n" \
                else b""
            os.ftruncate(fd, parsed.good_bytes)
            _write_all(fd, fix + line + b"\n", parsed.good_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.path.parent)
        return seq + 1, _entry_hash(line)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    """Write every byte at ``offset`` (a crash part-way leaves a torn tail)."""
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refuse_if_over(status: BudgetStatus, epsilon: float, delta: float, mechanism: Mechanism) -> None:
    """Raise BudgetExceededError when the release does not fit."""
    if not status.has_budget:
        raise BudgetExceededError(f"data source {status.source!r} has no privacy budget; set one"
                                  " with PrivacyLedger.set_budget before releasing anything")
    after = status.after(epsilon, delta, mechanism)
    if after.fits():
        return
    left = status.remaining_epsilon(delta)
    raise BudgetExceededError(
        f"privacy budget of source {status.source!r} would be exceeded: budget ε={status.epsilon:g},"
        f" δ={status.delta:g}; spent ε={status.spent_epsilon:.4g} over {status.releases} release(s);"
        f" this {mechanism} release asks ε={epsilon:g}, δ={delta:g}, which would make the total"
        f" ε={after.spent_epsilon:.4g}. At most ε={left:.4g} is left for a Gaussian release at"
        f" δ={delta:g}: ask for less, or stop releasing from this source")


def read_ledger(path: str | os.PathLike[str], public: Ed25519PublicKey
                ) -> tuple[tuple[dict[str, Any], ...], dict[str, BudgetStatus]]:
    """Verify a ledger with the trainer's public key only (for auditors).

    Args:
        path: the ledger file.
        public: the public key of the key that signed the entries.

    Returns:
        (the verified entries, each source's budget status).

    Raises:
        ModelIntegrityError: an entry is edited, reordered or missing in the middle.
        InputError: the file does not exist.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"no privacy ledger at {path}") from None
    contents = _parse(data, public)
    sources = sorted({str(e.get("source")) for e in contents.entries if e.get("source")})
    return contents.entries, {s: _summarise(contents.entries, s) for s in sources}
