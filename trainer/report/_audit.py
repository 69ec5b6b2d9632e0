"""The privacy audit as one self-contained page for a privacy officer.

:func:`render_audit_report` lays out what :func:`edgepersona.trainer.privacy.audit.build_audit`
found: the verdict and the automated checks first, then the evidence section
by section (integrity, lineage, privacy budget, k-min, egress,
pseudonymisation, storage, fairness, personas). A failed check reads "FAIL"
with a cross and a boxed, bold row, so it is recognisable in greyscale, in
print and read aloud. The budget and fairness sections live in
:mod:`._audit_privacy`; the page shell and charts are the persona report's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from edgepersona.sdk import InputError, __version__ as sdk_version
from edgepersona.trainer.report._audit_privacy import budget_section, fairness_section, kmin_section
from edgepersona.trainer.report._charts import Bar, bar_chart
from edgepersona.trainer.report._html import (
    CSS,
    callout,
    data_table,
    esc,
    facts,
    figure,
    render_page,
    section,
)

__all__ = ["render_audit_report"]

SCHEMA_VERSION = 1  # the audit schema this page reads (AUDIT_SCHEMA_VERSION)
ENVELOPE_LIMIT = 1024  # bytes: the default-suite envelope check's limit
_SECTIONS = ("integrity", "lineage", "privacy", "egress", "pseudonymisation", "storage",
             "personas", "checks", "passed")
_NAV = (("checks", "Checks"), ("integrity", "Integrity"), ("lineage", "Lineage"),
        ("budget", "Privacy budget"), ("kmin", "k-min"), ("egress", "Egress"),
        ("pseudonyms", "Pseudonyms"), ("storage", "Storage"), ("fairness", "Fairness"),
        ("personas", "Personas"))
PASS_MARK, FAIL_MARK = "\u2714", "\u2718"  # heavy check mark, heavy ballot x

AUDIT_CSS = CSS + """
:root { --bad: #b3261e; }
.verdict { display: flex; flex-wrap: wrap; align-items: center; gap: .25rem 1.25rem;
  margin: 1rem 0 0; padding: .75rem 1rem; border: 4px solid var(--ok); border-radius: 8px; }
.verdict.fail { border: 5px dashed var(--bad); }
.verdict p { margin: 0; }
.verdict .word { font-size: 2rem; font-weight: 800; letter-spacing: .06em; color: var(--ok); }
.verdict.fail .word { color: var(--bad); }
.result { display: inline-block; padding: 0 .4rem; border-radius: 4px; font-weight: 700;
  white-space: nowrap; }
.result.fail { color: var(--bad); border: 2px solid var(--bad); }
.result.pass { color: var(--ok); }
tr.failed th, tr.failed td { font-weight: 700; }
td.num { white-space: nowrap; }
tr.failed th { border-left: 6px double var(--bad); }
.verdict + .lead { margin-top: .75rem; }
.chart-box { max-width: 44rem; }
.budget-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(30rem, 100%), 1fr));
  gap: 0 1.5rem; }
@media print { .verdict, .budget-grid figure { break-inside: avoid; } }
"""


def render_audit_report(report: Mapping[str, Any]) -> str:
    """Render an audit (as built by ``build_audit``) as a self-contained HTML page.

    The page is pure output of its input: no clock, no randomness, no scripts,
    nothing loaded from anywhere (its Content-Security-Policy forbids it).

    Args:
        report: the audit, with the sections of audit schema version 1.

    Returns:
        The HTML document.

    Raises:
        InputError: the data is not an audit of schema version 1.
    """
    _check_schema(report)
    main = [_checks(report), _integrity(report["integrity"]), _lineage(report["lineage"]),
            budget_section(report["privacy"]), kmin_section(report),
            _egress(report["egress"], report), _pseudonyms(report["pseudonymisation"]),
            _storage(report["storage"]), fairness_section(report.get("fairness"), report["personas"]),
            _personas(report)]
    integrity = report["integrity"]
    return render_page(title=f"Privacy audit: {integrity['model_id']} v{integrity['version']}"
                             f" ({'PASS' if report['passed'] else 'FAIL'})",
                       header_html=_header(report), nav=_NAV, main_html="\n".join(main),
                       footer_html=_footer(report), css=AUDIT_CSS)


def _check_schema(report: Mapping[str, Any]) -> None:
    """Refuse data this page would misread: another schema or missing sections."""
    version = report.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(f"this page reads audit schema {SCHEMA_VERSION}, got {version!r};"
                         " rebuild the audit with this version of edgepersona")
    missing = [name for name in _SECTIONS if name not in report]
    if missing:
        raise InputError(f"the audit lacks section(s) {', '.join(missing)}; pass the dict that"
                         " build_audit returned, unmodified")


def _header(report: Mapping[str, Any]) -> str:
    """Title, verdict banner, one sentence of context and the key facts."""
    integrity, privacy = report["integrity"], report["privacy"]
    dp = (f"ε = {privacy['epsilon']:g}" + (f", δ = {privacy['delta']:g}" if privacy["delta"] else "")
          if privacy["differentially_private"] else "none")
    lead = ("Evidence about one signed persona bundle: what it is, where its data came from,"
            " what it costs in privacy and what a device sends. Automated checks first.")
    items = [("Audited", _date(report.get("audited_at"))), ("Signed by key", integrity["key_id"]),
             ("Valid until", _date(integrity["expires_at"])), ("Differential privacy", dp),
             ("Smallest group allowed", f"{privacy['k_min']} users"),
             ("Users", f"{report['lineage']['users']:,}")]
    return (f"<h1>Privacy audit: {esc(integrity['model_id'])} v{esc(integrity['version'])}</h1>"
            f"{_verdict(report)}<p class=\"lead\">{esc(lead)}</p>{facts(items)}")


def _verdict(report: Mapping[str, Any]) -> str:
    """The banner: PASS or FAIL in words and a mark, and which checks failed."""
    checks = report["checks"]
    failed = [c["check"] for c in checks if not c["passed"]]
    if report["passed"]:
        word, mark, kind = "PASS", PASS_MARK, "pass"
        text = f"All {len(checks)} automated checks passed. The sections below are the evidence."
    else:
        word, mark, kind = "FAIL", FAIL_MARK, "fail"
        text = (f"{len(failed)} of {len(checks)} automated checks failed: {'; '.join(failed)}."
                if failed else "The audit did not pass.")
    return (f'<div class="verdict {kind}" id="verdict"><p class="word">'
            f'<span aria-hidden="true">{mark} </span>{word}</p><p>{esc(text)}</p></div>')


def _result(passed: bool) -> str:
    """A result label that does not rely on colour: a mark and a word, boxed when failed."""
    kind, mark, word = ("pass", PASS_MARK, "pass") if passed else ("fail", FAIL_MARK, "FAIL")
    return f'<span class="result {kind}"><span aria-hidden="true">{mark} </span>{word}</span>'



def _checks(report: Mapping[str, Any]) -> str:
    """The automated checks with their figures; failed rows are bold and marked."""
    rows = "".join(
        f'<tr class="{"passed" if c["passed"] else "failed"}"><th scope="row">{esc(c["check"])}</th>'
        f'<td>{_result(bool(c["passed"]))}</td><td>{esc(c["figure"])}</td></tr>'
        for c in report["checks"])
    table = ("<table><caption>Automated checks and the figure each one is based on</caption>"
             '<thead><tr><th scope="col">check</th><th scope="col">result</th>'
             f'<th scope="col">figure</th></tr></thead><tbody>{rows}</tbody></table>')
    note = ("Checks cover what can be tested automatically; the sections below hold the evidence"
            " for what needs judgement (lineage, budget, fields sent, storage, fairness).")
    return section("checks", "Automated checks", table + f'<p class="muted">{esc(note)}</p>')


def _date(value: object) -> str:
    """The date part of an ISO timestamp (the text itself when it is not one)."""
    try:
        return f"{datetime.fromisoformat(str(value)):%Y-%m-%d}"
    except ValueError:
        return str(value)


def _pairs(caption: str, rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table of named values (names as row headers)."""
    return data_table(["item", "value"], rows, caption=caption)


def _integrity(integrity: Mapping[str, Any]) -> str:
    """Signature, key, version, validity and every file with its digest."""
    expired = integrity["expired"]
    rows = [("signature", "valid: verified with a trusted key before anything was read"
             if integrity["signature_valid"] else "NOT valid"),
            ("signing key id", integrity["key_id"]),
            ("trusted key ids", ", ".join(integrity["trusted_keys"])),
            ("model", f"{integrity['model_id']} version {integrity['version']}"),
            ("built", integrity["created_at"]),
            ("valid until", integrity["expires_at"] + (" (EXPIRED)" if expired else ""))]
    files = data_table(["file", "size (bytes)", "SHA-256"],
                       [(name, f"{entry['size']:,}", entry["sha256"])
                        for name, entry in integrity["files"].items()],
                       caption="Files covered by the signed manifest", numeric=(1,), mono=(2,))
    return section("integrity", "Integrity", _pairs("Signature and validity", rows) + files)


def _lineage(lineage: Mapping[str, Any]) -> str:
    """The data's source, how many users (noisy under DP) and how each bound was chosen."""
    source = lineage["source"]
    noisy = lineage["users_noisy"]
    rows = [(str(k), v if isinstance(v, str) else repr(v)) for k, v in source.items()] \
        if isinstance(source, Mapping) else [("source", str(source))]
    rows.append(("users", f"{lineage['users']:,}" + (" (noisy: a differentially private count)"
                                                     if noisy else " (exact count)")))
    bad = lineage.get("bad_rows") or {}
    rows.append(("rows dropped or repaired", "; ".join(f"{k}: {v:,}" for k, v in bad.items())
                 or "none"))
    chosen = {"declared": "declared by a person", "data": "taken from the data (leaks extremes)"}
    bounds = data_table(["feature", "low", "high", "transform", "how chosen"],
                        [(b["feature"], f"{b['low']:g}", f"{b['high']:g}", b["transform"],
                          chosen.get(b["source"], str(b["source"]))) for b in lineage["bounds"]],
                        caption="Feature bounds: values are clipped to them on the device",
                        numeric=(1, 2))
    return section("lineage", "Lineage", _pairs("Where the data came from", rows) + bounds)


def _egress(egress: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    """Every field a device sends, the cipher suite, envelope sizes and an opened sample."""
    fields = data_table(["field", "type", "size", "visibility"],
                        [(f["field"], f["type"], f["size"], f["visibility"]) for f in egress["fields"]],
                        caption="Every field of a sealed envelope, in the order sent")
    sizes = [("default suite (X25519)", egress["envelope_bytes"]),
             ("hybrid suite (ML-KEM-768 + X25519)", egress["hybrid_envelope_bytes"])]
    bars = [Bar(name, float(size), f"{size:,} B", hatched=size > ENVELOPE_LIMIT) for name, size in sizes]
    svg = bar_chart("envelope-sizes", bars, title="Size of one sealed envelope",
                    desc="; ".join(f"{b.label}: {b.text}" for b in bars) + "; limit 1,024 bytes",
                    marker=float(ENVELOPE_LIMIT), marker_label="1 KiB limit", width=640)
    caption = ("Bytes sent per sync. The 1 KiB limit (dashed) is checked for the default suite;"
               " the post-quantum hybrid option is larger by design (hatched when over).")
    body = (fields + f"<p><strong>Cipher suite:</strong> {esc(egress['suite'])}</p>"
            + f'<h3>Envelope sizes</h3><div class="chart-box">{figure(svg, caption)}</div>'
            + _sample(egress, report))
    return section("egress", "Egress: what a device sends", body)


def _sample(egress: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    """The synthetic contribution that was sealed and opened again, field by field."""
    sample = egress["sample_opened"]
    names = [b["feature"] for b in report["lineage"]["bounds"]]
    values = sample["features"]
    if len(names) != len(values):
        names = [f"feature {i + 1}" for i in range(len(values))]
    personas = report["personas"]
    index = sample["persona_index"]
    persona = f" ({personas[index]['id']})" if 0 <= index < len(personas) else ""
    day = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=int(sample["day_bucket"])))
    rows = [("sync pseudonym", sample["pseudonym"]), ("sequence number", str(sample["sequence"])),
            ("day bucket", f"{sample['day_bucket']} (the whole UTC day {day:%Y-%m-%d})"),
            ("model version", str(sample["model_version"])),
            ("persona index", f"{index}{persona}")]
    rows += [(f"feature: {n}", f"{v:.6g}") for n, v in zip(names, values, strict=True)]
    table = data_table(["field", "value after opening"], rows, mono=(1,),
                       caption="Everything the collector reads from one envelope")
    scan = ("no: the raw user id does not occur in either sealed envelope"
            if not egress["raw_id_in_envelope"] else "YES: the raw user id occurs in a sealed envelope")
    text = ("A synthetic user's contribution (the upper bound of every feature, in model units)"
            " was sealed with throw-away keys and opened again:")
    return ("<h3>A sample envelope, sealed and opened</h3>" + f"<p>{esc(text)}</p>" + table
            + _pairs("The sample's evidence", [("envelope SHA-256", egress["sample_sha256"]),
                                                ("raw id found in the envelope", scan)]))


def _pseudonyms(pseudo: Mapping[str, Any]) -> str:
    """How user ids become pseudonyms on the device."""
    rows = [("scheme", pseudo["scheme"]), ("domains", ", ".join(pseudo["domains"])),
            ("rotation", f"every {pseudo['rotation_days']:g} days"),
            ("device secret", pseudo["secret_location"]),
            ("plain (unkeyed) hash used", "yes" if pseudo["plain_hash_used"] else "no")]
    return section("pseudonyms", "Pseudonymisation", _pairs("How ids are pseudonymised", rows))


def _storage(storage: Mapping[str, Any]) -> str:
    """What the collector keeps, never keeps, for how long, and its actual tables."""
    rows = [("keeps", storage["keeps"]), ("never keeps", storage["never_keeps"]),
            ("retention", storage["retention"])]
    tables = storage.get("tables")
    if not tables:
        actual = callout("note", "The collector's database was not inspected: run the audit with"
                                 " --db sqlite:///PATH to list its actual tables and columns.")
    else:
        actual = data_table(["table", "columns"], [(t, ", ".join(c)) for t, c in tables.items()],
                            caption="The collector database's actual tables and columns")
    return section("storage", "Storage at the collector", _pairs("What the collector stores", rows)
                   + actual)


def _personas(report: Mapping[str, Any]) -> str:
    """The released personas with their share and about how many users each holds."""
    users, k_min = report["lineage"]["users"], report["privacy"]["k_min"]
    rows = [(p["id"], p["name"], f"{p['share']:.1%}", f"{round(p['share'] * users):,}",
             "yes" if p["share"] * users >= k_min - 1e-9 else "NO")
            for p in report["personas"]]
    table = data_table(["persona", "name", "share of users", "about how many users",
                        f"at least k-min ({k_min})"], rows, numeric=(2, 3),
                       caption=f"The {len(rows)} released personas")
    return section("personas", "Personas", table)


def _footer(report: Mapping[str, Any]) -> str:
    """Where the numbers come from and when."""
    integrity = report["integrity"]
    return (f"<p>Generated by edgepersona {esc(sdk_version)} from the audit (schema"
            f" {esc(report['schema_version'])}) of {esc(integrity['model_id'])}"
            f" v{esc(integrity['version'])}, run at {esc(report.get('audited_at', 'an unknown time'))}."
            " The page holds aggregates and one synthetic sample envelope; no user's data.</p>")
