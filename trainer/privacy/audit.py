"""The privacy officer's audit: evidence, not promises, about one released bundle.

:func:`build_audit` returns plain JSON-ready data with a stable schema
(``AUDIT_SCHEMA_VERSION``); the CLI prints it as tables or ``--json``, and the
HTML report renders it. Sections: integrity, lineage, privacy (with the budget
ledger), egress (every field a device sends, a real sealed sample opened with
throw-away keys), pseudonymisation, storage (what the collector keeps; its
actual schema when ``--db`` is given), fairness (optional, with an audit-only
group column) and the automated checks with their figures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import DEFAULT_EPOCH_PERIOD_S, Manifest, PersonaError, PersonaRuntime, Pseudonymizer
from edgepersona.sdk.protocol.assign import model_space, numpy_assign
from edgepersona.sdk.protocol.envelope import (
    Contribution,
    Opener,
    Sealer,
    SealSuite,
    day_bucket,
    generate_collector_keypair,
)
from edgepersona.sdk.protocol.trust import TrustedKeys

__all__ = ["AUDIT_SCHEMA_VERSION", "add_small_cells_check", "build_audit", "fairness_table"]

AUDIT_SCHEMA_VERSION = 1
ENVELOPE_LIMIT = 1024  # bytes, for a 16-feature spec with the default suite
FAIRNESS_RATIO = 1.25  # a group's mean distance this much above the majority's is flagged
_EGRESS_FIELDS = (
    ("magic, format version, suite id", "bytes", "4 B", "clear"),
    ("collector key id", "bytes", "4 B", "clear"),
    ("model version", "uint32", "4 B", "clear and sealed"),
    ("HPKE encapsulated key", "bytes", "32 B (hybrid 1,120 B)", "clear, fresh per envelope"),
    ("sequence number", "uint64", "8 B", "sealed"),
    ("pseudonym epoch", "uint32", "4 B", "sealed"),
    ("day bucket", "uint32", "4 B", "sealed; whole UTC days, not a time"),
    ("persona index", "uint16", "2 B", "sealed"),
    ("feature count, pseudonym length", "uint16, uint8", "3 B", "sealed"),
    ("sync pseudonym", "HMAC-SHA256", "32 B", "sealed; sync domain, rotated"),
    ("features", "float64 each", "8 B x features", "sealed; clipped and transformed, bounded"),
    ("AEAD tag", "bytes", "16 B", "ChaCha20-Poly1305"),
)


def _integrity(runtime: PersonaRuntime, trusted: TrustedKeys, now: datetime) -> dict[str, Any]:
    """Signature, key, file digests, version, expiry."""
    m = runtime.manifest
    return {"signature_valid": True, "key_id": runtime.key_id,  # open() verified it
            "trusted_keys": list(trusted.ids), "model_id": m.model_id, "version": m.version,
            "created_at": m.created_at.isoformat(), "expires_at": m.expires_at.isoformat(),
            "expired": m.expires_at <= now,
            "files": {n: {"sha256": e.sha256, "size": e.size} for n, e in m.files.items()}}


def _lineage(m: Manifest) -> dict[str, Any]:
    """Where the data came from and how the bounds were chosen."""
    private = m.privacy.epsilon is not None
    return {"source": m.lineage, "users": m.metrics.n_users, "users_noisy": private,
            "bad_rows": m.metrics.bad_rows,
            "bounds": [{"feature": f.name, "low": f.bounds[0], "high": f.bounds[1],
                        "source": f.bounds_source, "transform": f.transform}
                       for f in m.spec.features]}


def _privacy(m: Manifest, ledger: Mapping[str, Any] | None) -> dict[str, Any]:
    """ε, δ, mechanism, k-min, suppressed personas and the ledger's totals."""
    p = m.privacy
    return {"epsilon": p.epsilon, "delta": p.delta, "mechanism": p.mechanism,
            "differentially_private": p.epsilon is not None,
            "composition": "Gaussian releases composed exactly (mu^2 adds; zCDP rho = mu^2/2, converted"
                           " with the exact Gaussian privacy profile); others by basic composition",
            "k_min": p.k_min, "suppressed": list(p.suppressed), "notes": list(p.notes),
            "bounds_source": p.bounds_source, "ledger": dict(ledger) if ledger else None}


def _ledger(path: str | Path | None, trusted: TrustedKeys, source: str | None
            ) -> dict[str, Any] | None:
    """Budget status per source, verified against a trusted key."""
    if path is None:
        return None
    from edgepersona.trainer.privacy.ledger import read_ledger

    errors = []
    for public in trusted.keys.values():
        try:
            entries, statuses = read_ledger(path, public)
        except Exception as exc:  # wrong key or tampered: try the next, report the last
            errors.append(str(exc))
            continue
        chosen = {s: v for s, v in statuses.items() if source is None or s == source}
        return {"verified_with": list(trusted.ids), "entries": len(entries),
                "releases": [{k: e[k] for k in ("seq", "source", "epsilon", "delta", "note", "time")
                              if k in e} for e in entries if e.get("kind") == "spend"],
                "sources": {s: {"budget_epsilon": v.epsilon, "budget_delta": v.delta,
                                "spent_epsilon": v.spent_epsilon, "releases": v.releases,
                                "remaining_epsilon": v.remaining_epsilon(v.delta)}
                            for s, v in chosen.items()}}
    return {"error": errors[-1] if errors else "no trusted key verifies the ledger"}


def _egress(m: Manifest) -> dict[str, Any]:
    """Every field a device sends, and a sample sealed and opened with throw-away keys."""
    private, public = generate_collector_keypair(SealSuite.X25519)
    pseudonym = Pseudonymizer.generate().pseudonym("audit-sample-user", domain="sync",
                                                   at=1_700_000_000.0)
    row = np.asarray(m.assigner.upper, dtype=np.float64)[None, :]
    features = model_space(m.assigner, row)[0]
    sample = Contribution(pseudonym=pseudonym.value, pseudonym_epoch=pseudonym.epoch, sequence=1,
                          day_bucket=day_bucket(1_700_000_000.0), model_version=m.version,
                          persona_index=int(numpy_assign(m.assigner, row)[0][0]),
                          features=tuple(features.tolist()))
    envelope = Sealer(public, app_id="audit").seal(sample)
    opened = Opener(private).open(envelope, app_id="audit", model_versions={m.version})
    hybrid_private, hybrid_public = generate_collector_keypair(SealSuite.MLKEM768_X25519)
    hybrid = Sealer(hybrid_public, app_id="audit").seal(sample)
    return {"fields": [dict(zip(("field", "type", "size", "visibility"), f, strict=True))
                       for f in _EGRESS_FIELDS],
            "suite": "HPKE RFC 9180 base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,"
                     " ChaCha20-Poly1305; option: ML-KEM-768 + X25519 hybrid",
            "envelope_bytes": len(envelope), "hybrid_envelope_bytes": len(hybrid),
            "sample_opened": {"pseudonym": opened.pseudonym, "sequence": opened.sequence,
                              "day_bucket": opened.day_bucket,
                              "model_version": opened.model_version,
                              "persona_index": opened.persona_index,
                              "features": list(opened.features)},
            "sample_sha256": hashlib.sha256(envelope).hexdigest(),
            "raw_id_in_envelope": b"audit-sample-user" in envelope + hybrid,
            "hybrid_key_bytes": len(hybrid_private)}


def _pseudonymisation() -> dict[str, Any]:
    """How ids become pseudonyms on the device."""
    return {"scheme": "HMAC-SHA256 under a 32-byte per-device secret; per-(domain, epoch) key"
                      " derived with HMAC; length-prefixed inputs (sdk/_pseudonym.py)",
            "domains": ["local", "sync"], "rotation_days": DEFAULT_EPOCH_PERIOD_S / 86_400,
            "secret_location": "inside the device's encrypted store (ChaCha20-Poly1305, master"
                               " key in the app's keystore); never sent, logged or pickled",
            "plain_hash_used": False}


def _storage(db: str | None) -> dict[str, Any]:
    """What the collector keeps; with --db, its actual tables and columns."""
    out: dict[str, Any] = {
        "keeps": "per (model version, persona, day): count, per-feature sums and sums of"
                 " squares (closed cells below k-min rolled forward); a dedupe set of"
                 " HMAC(secret, pseudonym || sequence) keys and per-pseudonym daily quota slots"
                 " (keyed hashes); admission token use counts (keyed)",
        "never_keeps": "per-user rows, pseudonyms, sequence numbers, client addresses,"
                       " times finer than a day",
        "retention": "dedupe keys and quota slots expire with the replay window (7 days by"
                     " default); token use counts when the token expires;"
                     " aggregates are kept until deleted", "tables": None}
    if db is not None:
        out["tables"] = _tables(db)
    return out


def _tables(db: str) -> dict[str, list[str]]:
    """Table → columns of a collector database (SQLite)."""
    import sqlite3

    if not db.startswith("sqlite:///"):
        return {"note": ["schema listing supports sqlite:/// URLs"]}
    with sqlite3.connect(f"file:{db[len('sqlite:///'):]}?mode=ro", uri=True) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        quoted = {n: '"' + n.replace('"', '""') + '"' for n in names}
        return {n: [c[1] for c in conn.execute(f"PRAGMA table_info({quoted[n]})")]
                for n in sorted(names)}


def fairness_table(m: Manifest, rows: npt.NDArray[np.float64], groups: Sequence[str]
                   ) -> dict[str, Any]:
    """Each group's share in each persona and whether a minority is absorbed.

    A group whose mean distance to its assigned centroid exceeds the majority
    group's by more than :data:`FAIRNESS_RATIO` is flagged: its distinct
    behaviour was absorbed into personas fitted to others.

    Args:
        m: the manifest.
        rows: raw feature rows of the audited users.
        groups: one audit-only group label per row (never used for clustering).

    Returns:
        Shares per group and persona, mean distances and flags.
    """
    labels, _, distances = numpy_assign(m.assigner, rows)
    nearest = distances[np.arange(len(rows)), labels]
    names = sorted(set(groups))
    group_array = np.asarray(groups)
    sizes = {g: int((group_array == g).sum()) for g in names}
    majority = max(names, key=lambda g: sizes[g])
    mean_distance = {g: float(nearest[group_array == g].mean()) for g in names}
    shares = {g: {p.id: float((labels[group_array == g] == p.index).mean()) for p in m.personas}
              for g in names}
    flagged = [g for g in names if g != majority
               and mean_distance[g] > FAIRNESS_RATIO * mean_distance[majority]]
    return {"groups": sizes, "majority": majority, "shares": shares,
            "mean_distance": mean_distance, "ratio_threshold": FAIRNESS_RATIO, "flagged": flagged}


def _checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The automated checks, each with its figure."""
    integrity, privacy, egress = report["integrity"], report["privacy"], report["egress"]
    checks = [("signature valid with a trusted key", True, integrity["key_id"]),
              ("manifest not expired", not integrity["expired"], integrity["expires_at"]),
              ("every released persona holds >= k-min users",
               all(c["share"] * report["lineage"]["users"] >= privacy["k_min"] - 1e-9
                   for c in report["personas"]), f"k-min {privacy['k_min']}"),
              ("bounds declared or coarse, not taken from data",
               privacy["bounds_source"] in ("declared", "coarse"),
               privacy["bounds_source"]),
              ("envelope within 1 KiB (default suite)", egress["envelope_bytes"] <= ENVELOPE_LIMIT,
               f"{egress['envelope_bytes']} B"),
              ("no raw id in a sealed envelope", not egress["raw_id_in_envelope"], "scanned")]
    ledger = privacy.get("ledger")
    if ledger is not None:
        ok = "error" not in ledger and all(s["spent_epsilon"] <= s["budget_epsilon"] * (1 + 1e-9)
                                           for s in ledger.get("sources", {}).values())
        checks.append(("privacy budget not exceeded; ledger chain and signatures verify", ok,
                       ledger.get("error") or f"{ledger['entries']} entries"))
    tables = report["storage"]["tables"]
    if tables:
        bad = [f"{t}.{c}" for t, cols in tables.items() for c in cols
               if any(w in c.lower() for w in ("pseudonym", "user", "device", "address"))]
        checks.append(("collector stores no per-user column", not bad, ", ".join(bad) or "none"))
    if report.get("fairness"):
        flagged = report["fairness"]["flagged"]
        checks.append(("no minority group absorbed into other personas", not flagged,
                       ", ".join(flagged) or "none flagged"))
    return [{"check": c, "passed": bool(ok), "figure": str(f)} for c, ok, f in checks]


def add_small_cells_check(report: dict[str, Any], cells: Sequence[tuple[int, int, int, int]]
                          ) -> dict[str, Any]:
    """Add the check "no closed collector cell below k-min at rest" to an audit.

    A closed (model version, persona, day) cell with fewer than k-min
    contributions holds the sums and sums of squares of a handful of devices;
    the collector rolls such cells forward once a day, so one that remains
    means the roll-up did not run or was undone.

    Args:
        report: An audit from :func:`build_audit` (changed in place).
        cells: (model version, persona, day, count) of the collector's closed
            cells below the bundle's k-min (``collector.small_cells_at_rest``).

    Returns:
        The report, with the check appended and ``passed`` recomputed.
    """
    shown = ", ".join(f"v{v} persona {p} day {d}: {n}" for v, p, d, n in cells[:3])
    figure = f"{len(cells)} closed cell(s) below k-min {report['privacy']['k_min']}" + (
        f" ({shown}{', …' if len(cells) > 3 else ''})" if cells else "")
    report["storage"]["small_closed_cells"] = len(cells)
    report["checks"].append({"check": "no closed collector cell below k-min at rest",
                             "passed": not cells, "figure": figure})
    report["passed"] = all(c["passed"] for c in report["checks"])
    return report


def _release_checks(m: Manifest, ledger: str | Path | None, trusted: TrustedKeys
                    ) -> list[dict[str, Any]]:
    """Is this private release in the ledger, and is the ledger not behind it (see ledger_audit)?"""
    if ledger is None or m.privacy.epsilon is None:
        return []
    from edgepersona.trainer.privacy.ledger_audit import load_ledger_view, release_checks

    try:
        view = load_ledger_view(ledger, trusted)
    except PersonaError:  # reported by the budget check; these fail with it
        return [{"check": "release recorded in the ledger", "passed": False,
                 "figure": "the ledger does not verify"}]
    return release_checks(m, view)


def build_audit(bundle: str | Path, *, trusted_keys: Sequence[bytes],
                ledger: str | Path | None = None,
                source: str | None = None, db: str | None = None,
                fairness: Mapping[str, Any] | None = None,
                now: datetime | None = None) -> dict[str, Any]:
    """Audit one bundle (see the module docstring).

    Args:
        bundle: the bundle folder or archive.
        trusted_keys: public keys the bundle (and ledger) must be signed with.
        ledger: the privacy budget ledger (a file, or a sqlite:/// or postgresql:// URL), if any.
        source: only this ledger source (default: all).
        db: the collector's database URL, to list what it stores.
        fairness: a precomputed :func:`fairness_table`, if a group column was given.
        now: the audit time (default: the system clock).

    Returns:
        The audit as JSON-ready data.

    Raises:
        ModelIntegrityError: the bundle does not verify (nothing else is reported).
    """
    when = now or datetime.now(UTC)
    trusted = TrustedKeys(trusted_keys)
    runtime = PersonaRuntime.open(bundle, trusted_keys=trusted_keys, now=when)
    m = runtime.manifest
    report: dict[str, Any] = {
        "schema_version": AUDIT_SCHEMA_VERSION, "audited_at": when.isoformat(),
        "integrity": _integrity(runtime, trusted, when), "lineage": _lineage(m),
        "privacy": _privacy(m, _ledger(ledger, trusted, source)), "egress": _egress(m),
        "pseudonymisation": _pseudonymisation(), "storage": _storage(db),
        "personas": [{"id": c.id, "name": c.name, "share": c.share} for c in m.personas],
        "fairness": dict(fairness) if fairness else None,
    }
    report["checks"] = _checks(report) + _release_checks(m, ledger, trusted)
    report["passed"] = all(c["passed"] for c in report["checks"])
    return report
