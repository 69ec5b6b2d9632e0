"""Released bundles against the privacy ledger: is every private release paid for?

Each private release's manifest records, in ``lineage``, the ledger it was
spent from (``ledger_id``: the SHA-256 of entry 0), the entry that paid for it
(``ledger_seq``) and that entry's hash (``ledger_head``). The checks here hold
a ledger to those records, so a ledger that went backwards or was swapped
cannot pass:

* ``release recorded in the ledger``: the ledger's id is the manifest's, entry
  ``ledger_seq`` exists with the recorded hash, and it is a spend of this
  release's (ε, δ) for this model and version. Fails for a new or re-created
  ledger (another id), a ledger whose entries were rewritten, or a bundle
  whose release was never spent.
* ``ledger not behind the release``: the ledger holds at least ``ledger_seq + 1``
  entries. Fails for a deleted ledger, a restored older copy, or dropped last lines.

:func:`audit_releases` runs them over a whole folder of bundles (an expired
bundle whose signature and digests verify is still a release to account for:
it is audited and flagged ``expired``, not failed) and adds
``releases in ledger order`` (no two bundles claim one spend; a model's versions
were spent in version order) and ``budgets hold (totals recomputed)``: every
source's total recomputed from the verified entries is within its budget.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgepersona.sdk import BundleExpiredError, Manifest, PersonaError, PersonaRuntime
from edgepersona.sdk.protocol.trust import TrustedKeys
from edgepersona.trainer.privacy.ledger import read_ledger_chain, summarise

__all__ = ["LEDGER_AUDIT_SCHEMA_VERSION", "LedgerView", "ReleaseRecord", "audit_releases",
           "load_ledger_view", "release_checks", "release_record"]

LEDGER_AUDIT_SCHEMA_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # an expired release is audited as of before it expired
Check = dict[str, Any]
_NOTE = re.compile(r"ledger '(?P<source>.*)' head (?P<seq>\d+):(?P<head>[0-9a-f]{64})")


@dataclass(frozen=True)
class ReleaseRecord:
    """What a private manifest says about the spend that paid for it."""

    source: str
    seq: int
    head: str
    ledger_id: str | None


@dataclass(frozen=True)
class LedgerView:
    """A verified ledger: its entries and each line's hash (entry 0's hash is the ledger id)."""

    entries: tuple[dict[str, Any], ...]
    hashes: tuple[str, ...]

    @property
    def ledger_id(self) -> str | None:
        """The SHA-256 of entry 0, or None for an empty ledger."""
        return self.hashes[0] if self.hashes else None


def load_ledger_view(where: str | Path, trusted: TrustedKeys) -> LedgerView:
    """Verify a ledger under any trusted key.

    Args:
        where: the ledger file or database URL.
        trusted: the public keys one of which signed the ledger.

    Returns:
        The verified view.

    Raises:
        PersonaError: no trusted key verifies it (the last error), or it does not exist.
    """
    error: PersonaError | None = None
    for public in trusted.keys.values():
        try:
            entries, hashes = read_ledger_chain(where, public)
        except PersonaError as exc:
            error = exc
            continue
        return LedgerView(entries, hashes)
    raise error or PersonaError("no trusted key verifies the ledger")


def release_record(m: Manifest) -> ReleaseRecord | None:
    """The ledger record of a private manifest (lineage fields, else its privacy note).

    Args:
        m: the manifest.

    Returns:
        The record, or None when the manifest records no ledger head.
    """
    lineage = m.lineage
    seq, head = lineage.get("ledger_seq"), lineage.get("ledger_head")
    if isinstance(seq, int) and isinstance(head, str):
        ledger_id = lineage.get("ledger_id")
        return ReleaseRecord(str(lineage.get("source")), seq, head,
                             ledger_id if isinstance(ledger_id, str) and ledger_id else None)
    for note in m.privacy.notes:
        found = _NOTE.search(note)
        if found:
            return ReleaseRecord(found["source"], int(found["seq"]), found["head"], None)
    return None


def release_checks(m: Manifest, view: LedgerView) -> list[Check]:
    """The per-release checks of the module docstring (none for a non-private bundle).

    Private refits record their spend's head like a private train (they are spent
    before they are signed). A private manifest with no head of its own (a refit
    signed before refits recorded their spend, or one that carries an earlier
    version's note) is matched to a spend by model, version, ε and δ; the "not
    behind" check then has nothing to compare.

    Args:
        m: a verified manifest.
        view: the verified ledger.

    Returns:
        Checks as ``{"check", "passed", "figure"}``.
    """
    if m.privacy.epsilon is None:
        return []
    record = release_record(m)
    if record is None or (record.ledger_id is None and not _own_spend(m, view, record.seq)):
        seq = _matching_spend(m, view)
        return [_check("release recorded in the ledger", seq is not None,
                       f"entry {seq}, matched by model, version, ε and δ (no head of its own)"
                       if seq is not None else "no spend of this model version in the ledger"
                       if view.hashes else "no ledger given: a private release needs --ledger")]
    length = len(view.entries)
    behind = record.seq >= length
    present, figure = False, f"ledger ends at entry {length - 1}; release spent at {record.seq}"
    if record.ledger_id is not None and record.ledger_id != view.ledger_id:
        figure = (f"release spent from ledger {record.ledger_id[:12]}…, this is"
                  f" {(view.ledger_id or 'an empty ledger')[:12]}…")
    elif not behind:
        digest = view.hashes[record.seq]
        present = digest == record.head and _own_spend(m, view, record.seq)
        figure = (f"entry {record.seq} ({digest[:12]}…)" if present else
                  f"entry {record.seq} is not this release's spend (recorded {record.head[:12]}…)")
    return [_check("release recorded in the ledger", present, figure),
            _check("ledger not behind the release", not behind,
                   f"ledger holds {length} entries; release recorded entry {record.seq}")]


def _own_spend(m: Manifest, view: LedgerView, seq: int) -> bool:
    """Whether entry ``seq`` is a spend of this model version at its (ε, δ)."""
    if not 0 <= seq < len(view.entries):
        return False
    entry = view.entries[seq]
    return bool(entry.get("kind") == "spend" and entry.get("note") == f"{m.model_id} v{m.version}"
                and entry.get("epsilon") == m.privacy.epsilon and entry.get("delta") == m.privacy.delta)


def _matching_spend(m: Manifest, view: LedgerView) -> int | None:
    """The last spend of this model version at its (ε, δ), if any."""
    found = [seq for seq in range(len(view.entries)) if _own_spend(m, view, seq)]
    return found[-1] if found else None


def _check(name: str, passed: bool, figure: str) -> Check:
    """One named check."""
    return {"check": name, "passed": bool(passed), "figure": figure}


def _bundles(folder: Path) -> list[Path]:
    """Bundle folders (holding manifest.json) and zip archives anywhere under ``folder``."""
    found = {p.parent for p in folder.rglob("manifest.json")} | set(folder.rglob("*.zip"))
    return sorted(found)


def _one(path: Path, folder: Path, keys: Sequence[bytes], view: LedgerView, now: datetime
         ) -> dict[str, Any]:
    """Verify one bundle and run its release checks."""
    name = str(path.relative_to(folder))
    expired = False
    try:
        try:
            m = PersonaRuntime.open(path, trusted_keys=keys, now=now).manifest
        except BundleExpiredError:  # checked last: signature and digests held; still a release
            m = PersonaRuntime.open(path, trusted_keys=keys, now=_EPOCH).manifest
            expired = True
    except PersonaError:
        return {"bundle": name, "checks": [_check("bundle verifies with a trusted key", False,
                                                  "signature or digest check failed")]}
    record = release_record(m)
    private = m.privacy.epsilon is not None
    seq = record.seq if record and (record.ledger_id or _own_spend(m, view, record.seq)) else \
        _matching_spend(m, view) if private else None
    return {"bundle": name, "model_id": m.model_id, "version": m.version, "private": private,
            "expired": expired,
            "epsilon": m.privacy.epsilon, "delta": m.privacy.delta,
            "source": record.source if record else None, "ledger_seq": seq,
            "checks": release_checks(m, view)}


def _order(bundles: list[dict[str, Any]]) -> Check:
    """No two releases claim one spend; each model's versions were spent in version order.

    A version shelved both as a folder and as its zip is one release (one spend).
    """
    once = {(b["ledger_seq"], b["model_id"], b["version"]): b for b in bundles
            if b.get("ledger_seq") is not None}
    private = sorted(once.values(), key=lambda b: b["ledger_seq"])
    seqs = [b["ledger_seq"] for b in private]
    problems = [f"entry {s} claimed twice" for s in sorted(set(seqs)) if seqs.count(s) > 1]
    last: dict[str, int] = {}
    for b in private:
        if b["version"] <= last.get(b["model_id"], -1):
            problems.append(f"{b['model_id']} v{b['version']} spent after a later version")
        last[b["model_id"]] = max(b["version"], last.get(b["model_id"], -1))
    return _check("releases in ledger order", not problems,
                  "; ".join(problems) or f"{len(private)} private release(s) in order")


def _totals(view: LedgerView) -> tuple[Check, dict[str, Any]]:
    """Every source's spending recomputed from the entries, against its budget."""
    names = sorted({str(e["source"]) for e in view.entries if e.get("kind") == "budget"})
    sources, over = {}, []
    for name in names:
        status = summarise(view.entries, name)
        sources[name] = {"budget_epsilon": status.epsilon, "budget_delta": status.delta,
                         "spent_epsilon": status.spent_epsilon, "releases": status.releases}
        if status.releases and not status.fits():
            over.append(f"{name}: ε {status.spent_epsilon:.4g} > {status.epsilon:g}")
    ok = not over
    spends = sum(1 for e in view.entries if e.get("kind") == "spend")
    return (_check("budgets hold (totals recomputed)", ok,
                   "; ".join(over) or f"{len(names)} source(s), {spends} spend(s)"), sources)


def audit_releases(folder: str | Path, *, ledger: str | Path | None, trusted_keys: Sequence[bytes],
                   now: datetime | None = None) -> dict[str, Any]:
    """Check every bundle under a folder against the ledger (see the module docstring).

    Without a ledger, a folder of non-private releases passes (no bundle claims an ε,
    so nothing is owed to a ledger) and any private release fails its check.

    Args:
        folder: where the released bundles are (folders with manifest.json, or .zip files).
        ledger: the ledger file or database URL (None: no ledger).
        trusted_keys: public keys that sign the bundles and the ledger.
        now: the audit time (default: the system clock).

    Returns:
        JSON-ready data: per bundle checks, the folder checks, ``passed``.

    Raises:
        PersonaError: the ledger does not verify under any trusted key.
    """
    when = now or datetime.now(UTC)
    root = Path(folder)
    view = LedgerView((), ()) if ledger is None else load_ledger_view(ledger, TrustedKeys(trusted_keys))
    bundles = [_one(path, root, trusted_keys, view, when) for path in _bundles(root)]
    totals, sources = _totals(view)
    failed = [f"{b['bundle']}: {c['check']}" for b in bundles for c in b["checks"] if not c["passed"]]
    private = sum(1 for b in bundles if b.get("private"))
    checks = [_check("every private release present and the ledger not behind", not failed,
                     "; ".join(failed) or f"{len(bundles)} bundle(s) checked: {private} private,"
                     f" {len(bundles) - private} non-private (no ε claimed)"),
              _order(bundles), totals]
    return {"schema_version": LEDGER_AUDIT_SCHEMA_VERSION, "audited_at": when.isoformat(),
            "ledger": {"id": view.ledger_id, "entries": len(view.entries), "sources": sources},
            "bundles": bundles, "checks": checks, "passed": all(c["passed"] for c in checks)}
