"""``edgepersona audit``: the privacy officer's view of one bundle, in the terminal or as JSON."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from edgepersona.sdk import InputError, PersonaRuntime
from edgepersona.trainer.cli._args import Subparsers, add_trusted, trusted_keys
from edgepersona.trainer.cli._errors import EXIT_AUDIT_FAILED, EXIT_OK
from edgepersona.trainer.cli._render import console, print_json

__all__ = ["add_parser", "audit"]


def add_parser(sub: Subparsers) -> None:
    """Add ``audit``.

    Args:
        sub: the root parser's sub-commands.
    """
    parser = sub.add_parser("audit", help="privacy audit of a bundle: integrity, budget, egress, checks")
    parser.add_argument("bundle", help="bundle folder or .zip, or a folder of released bundles"
                        " (checked against --ledger: every private release present, in order)")
    parser.add_argument("--ledger", help="privacy budget ledger (file, sqlite:/// or postgresql://"
                        " URL) to verify, summarise and hold to each release's recorded head")
    parser.add_argument("--source", help="only this ledger source")
    parser.add_argument("--db", help="collector database URL, to list what it stores")
    parser.add_argument("--data", help="event log for the fairness table (with --group-column)")
    parser.add_argument("--group-column", help="audit-only attribute (e.g. region); never clustered")
    parser.add_argument("--json", action="store_true", help="machine-readable output (stable schema)")
    parser.add_argument("--html", metavar="OUT.html", help="also write the audit as an HTML page")
    add_trusted(parser)
    parser.set_defaults(handler=audit)


def audit(args: argparse.Namespace) -> int:
    """Build the audit, print it, and exit non-zero when a check fails.

    Args:
        args: the parsed ``audit`` options.

    Returns:
        0 when every check passes, 3 when one fails.
    """
    from edgepersona.trainer.privacy.audit import build_audit

    keys = trusted_keys(args)
    target = Path(args.bundle)
    if target.is_dir() and not (target / "manifest.json").exists():
        return _audit_folder(args, keys)
    fairness = _fairness(args, keys) if args.group_column else None
    report = build_audit(args.bundle, trusted_keys=keys,
                         ledger=args.ledger or None, source=args.source,
                         db=args.db, fairness=fairness)
    if args.db:
        from edgepersona.trainer.collector import small_cells_at_rest
        from edgepersona.trainer.privacy.audit import add_small_cells_check

        add_small_cells_check(report, small_cells_at_rest(args.db, report["privacy"]["k_min"]))
    if args.html:
        from edgepersona.trainer.cli._report import write_text_atomic
        from edgepersona.trainer.report import render_audit_report

        write_text_atomic(Path(args.html), render_audit_report(report))
    if args.json:
        print_json(report)
    else:
        _print(report)
    return EXIT_OK if report["passed"] else EXIT_AUDIT_FAILED


def _audit_folder(args: argparse.Namespace, keys: list[bytes]) -> int:
    """A folder of released bundles against the ledger: every private release present, in order."""
    from edgepersona.trainer.privacy.ledger_audit import audit_releases

    report = audit_releases(args.bundle, ledger=args.ledger or None, trusted_keys=keys)
    if args.json:
        print_json(report)
        return EXIT_OK if report["passed"] else EXIT_AUDIT_FAILED
    verdict = "[bold green]PASS[/]" if report["passed"] else "[bold red]FAIL[/]"
    against = f"a ledger of {report['ledger']['entries']} entries" if args.ledger else "no ledger"
    console.print(f"{verdict}  {len(report['bundles'])} bundle(s) against {against}")
    table = Table(title="Automated checks", title_justify="left")
    for column in ("check", "result", "figure"):
        table.add_column(column)
    for c in report["checks"]:
        table.add_row(c["check"], "pass" if c["passed"] else "[red]FAIL[/]", c["figure"])
    console.print(table)
    return EXIT_OK if report["passed"] else EXIT_AUDIT_FAILED


def _fairness(args: argparse.Namespace, keys: list[bytes]) -> dict[str, Any]:
    """Fairness from --data and an audit-only --group-column (never used for clustering)."""
    from edgepersona.trainer.data.events import read_event_log
    from edgepersona.trainer.data.replay import replay_on_device
    from edgepersona.trainer.privacy.audit import fairness_table

    if not args.data:
        raise InputError("--group-column needs --data EVENTS.csv holding that column")
    runtime = PersonaRuntime.open(args.bundle, trusted_keys=keys)
    log = read_event_log(Path(args.data))
    if args.group_column not in log.properties:
        raise InputError(f"{Path(args.data).name} has no column {args.group_column!r}")
    cells = log.properties[args.group_column]
    groups = ["unknown"] * log.n_users
    for user, cell in zip(log.user[::-1], cells[::-1], strict=True):  # first value per user wins
        groups[int(user)] = str(cell)
    rows = replay_on_device(runtime.fold_plan, log)
    return fairness_table(runtime.manifest, np.asarray(rows), groups)


def _print(report: dict[str, Any]) -> None:
    """Terminal view: verdict first, then one table per section."""
    verdict = "[bold green]PASS[/]" if report["passed"] else "[bold red]FAIL[/]"
    integrity, privacy, egress = report["integrity"], report["privacy"], report["egress"]
    console.print(f"{verdict}  audit of {integrity['model_id']} v{integrity['version']}"
                  f" (schema {report['schema_version']}, {report['audited_at']})")
    checks = Table(title="Automated checks", title_justify="left")
    for column in ("check", "result", "figure"):
        checks.add_column(column)
    for c in report["checks"]:
        checks.add_row(c["check"], "pass" if c["passed"] else "[red]FAIL[/]", c["figure"])
    console.print(checks)
    console.print(f"Integrity: signed by key {integrity['key_id']}, expires"
                  f" {integrity['expires_at']}; files: "
                  + ", ".join(f"{n} {e['sha256'][:12]}… ({e['size']} B)"
                              for n, e in integrity["files"].items()))
    dp = (f"ε={privacy['epsilon']}, δ={privacy['delta']} ({privacy['mechanism']})"
          if privacy["differentially_private"] else "no differential privacy")
    console.print(f"Privacy: {dp}; k-min {privacy['k_min']}; bounds {privacy['bounds_source']};"
                  f" suppressed: {privacy['suppressed'] or 'none'}")
    ledger = privacy.get("ledger")
    if ledger and "sources" in ledger:
        for name, s in ledger["sources"].items():
            console.print(f"  ledger {name!r}: spent ε={s['spent_epsilon']:.4g} of"
                          f" {s['budget_epsilon']:g} in {s['releases']} release(s);"
                          f" remaining ε≈{s['remaining_epsilon']:.4g}"
                          f" for a release at δ={s['budget_delta']:g}")
    egress_table = Table(title=f"Egress: every field a device sends ({egress['envelope_bytes']} B"
                         f" per envelope; hybrid suite {egress['hybrid_envelope_bytes']} B)",
                         title_justify="left")
    for column in ("field", "type", "size", "visibility"):
        egress_table.add_column(column)
    for f in egress["fields"]:
        egress_table.add_row(f["field"], f["type"], f["size"], f["visibility"])
    console.print(egress_table)
    pseudo, storage = report["pseudonymisation"], report["storage"]
    console.print(f"Pseudonyms: {pseudo['scheme']}; domains {pseudo['domains']}; rotated every"
                  f" {pseudo['rotation_days']:g} days; secret: {pseudo['secret_location']}")
    console.print(f"Collector keeps: {storage['keeps']}; never: {storage['never_keeps']};"
                  f" retention: {storage['retention']}")
    if report.get("fairness"):
        fair = report["fairness"]
        console.print(f"Fairness (audit-only groups {fair['groups']}): mean distance to the"
                      f" assigned persona {fair['mean_distance']}; flagged: {fair['flagged'] or 'none'}")
