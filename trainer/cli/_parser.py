"""Argument parsing for every ``edgepersona`` command."""

from __future__ import annotations

import argparse

from edgepersona.trainer.cli import _audit, _commands, _dynamic, _quickstart, _report, _rotate

__all__ = ["build_parser"]


def _columns(parser: argparse.ArgumentParser) -> None:
    """Options that rename the event log's columns."""
    parser.add_argument("--user-col", default="user_id", help="user id column (default: user_id)")
    parser.add_argument("--time-col", default="timestamp", help="time column (default: timestamp)")
    parser.add_argument("--event-col", default="event", help="event name column (default: event)")
    parser.add_argument("--value-col", default="value", help="numeric value column (default: value)")


def _trusted(parser: argparse.ArgumentParser) -> None:
    """The trusted-key option shared by everything that opens a bundle."""
    parser.add_argument("--trusted-key", action="append", required=True, metavar="PUBKEY",
                        help="public key file (PEM) to accept signatures from; repeatable")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``edgepersona`` argument parser.

    Returns:
        The parser; each sub-command sets ``handler``.
    """
    root = argparse.ArgumentParser(prog="edgepersona", description=(
        "Privacy-first personas: train on the server, assign on the device."))
    root.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = root.add_subparsers(metavar="COMMAND")

    keys = sub.add_parser("keys", help="manage keys").add_subparsers(metavar="ACTION")
    gen = keys.add_parser("generate", help="create a key pair in a folder")
    gen.add_argument("--out", required=True, help="folder for the key files")
    gen.add_argument("--kind", choices=["signing", "collector"], default="signing",
                     help="signing: Ed25519 bundle key; collector: HPKE sync key")
    gen.add_argument("--hybrid", action="store_true",
                     help="collector key for the post-quantum ML-KEM-768 + X25519 suite")
    gen.set_defaults(handler=_commands.keys_generate)

    rotate = keys.add_parser("rotate", help="sign a statement moving devices to a new signing key")
    rotate.add_argument("--old", required=True, help="folder (or PEM file) of the key being retired")
    rotate.add_argument("--new", required=True, help="folder (or PEM file) of the key taking over")
    rotate.add_argument("--out", required=True, help="statement file to write (never overwritten)")
    rotate.add_argument("--counter", type=int, required=True,
                        help="rotation number, greater than every earlier rotation's")
    rotate.add_argument("--expires-days", type=float, default=365.0,
                        help="days devices accept the statement (365)")
    rotate.set_defaults(handler=_rotate.keys_rotate)

    spec = sub.add_parser("spec", help="feature specs").add_subparsers(metavar="ACTION")
    suggest = spec.add_parser("suggest", help="propose a spec from an event log or table")
    suggest.add_argument("data", help="event log (CSV/Parquet)")
    suggest.add_argument("--table", action="store_true", help="DATA is an aggregated table")
    suggest.add_argument("--out", help="write the spec here instead of printing it")
    suggest.add_argument("--outcome", metavar="EVENT",
                         help="an outcome event (or table column) to leave out of the features")
    suggest.add_argument("--seed", type=int, help="seed for the noisy bounds and the trial fit")
    _columns(suggest)
    suggest.set_defaults(handler=_commands.spec_suggest)

    train = sub.add_parser("train", help="fit personas and export a signed bundle")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", help="event log (CSV/Parquet)")
    source.add_argument("--table", help="aggregated table, one row per user")
    train.add_argument("--spec", help="feature spec JSON (default: suggested from the data)")
    train.add_argument("--key", help="signing key file or folder (required unless --epsilon-sweep)")
    train.add_argument("--out", help="bundle folder to create (required unless --epsilon-sweep)")
    train.add_argument("--zip", action="store_true", help="also write OUT.zip")
    train.add_argument("--force", action="store_true", help="replace an existing OUT")
    train.add_argument("--k", default="auto", help="number of personas or 'auto' (default)")
    train.add_argument("--k-range", default="3,8", help="candidates for auto k (default 3,8)")
    train.add_argument("--k-min", type=int, default=10, help="fewest users per persona (10)")
    train.add_argument("--min-share", type=float, default=0.02,
                       help="auto k: smallest persona share allowed (0.02)")
    train.add_argument("--seed", type=int, help="random seed for reproducible fits")
    train.add_argument("--model-id", default="personas", help="model name (default: personas)")
    train.add_argument("--version", type=int, default=1, help="bundle version (default: 1)")
    train.add_argument("--expires-days", type=float, default=90.0, help="validity in days (90)")
    train.add_argument("--at", help="reference time for event logs (ISO 8601 or unix seconds)")
    train.add_argument("--outcome", metavar="EVENT",
                       help="an outcome event (or table column, e.g. Revenue): each card shows its"
                            " rate against everyone's; never a feature (noised under --epsilon)")
    private = train.add_argument_group("differential privacy")
    private.add_argument("--epsilon", type=float, help="fit with (ε, δ)-DP; needs --k and --ledger")
    private.add_argument("--delta", type=float, default=1e-6, help="DP δ (1e-6)")
    private.add_argument("--iterations", type=int, default=3, help="DP-Lloyd rounds (3)")
    private.add_argument("--ledger", help="privacy budget ledger file (created if missing)")
    private.add_argument("--source", help="data source whose budget is spent (default: file name)")
    private.add_argument("--budget", metavar="EPS[,DELTA]",
                         help="give the source this total budget if it has none yet")
    private.add_argument("--epsilon-sweep", metavar="E1,E2,...",
                         help="preview quality and stability per ε on synthetic data; releases nothing")
    engine = train.add_argument_group("engine")
    engine.add_argument("--engine", choices=["local", "dask"], default="local",
                        help="local: in this process (default); dask: on a dask.distributed cluster,"
                             " reading --events/--table as partitioned Parquet/CSV (a folder or glob);"
                             " needs --spec and the dask extra")
    engine.add_argument("--scheduler", metavar="ADDRESS",
                        help="with --engine dask: the scheduler to use (default: start a local"
                             " cluster of 2 workers)")
    _columns(train)
    train.set_defaults(handler=_commands.train)

    verify = sub.add_parser("verify", help="verify a bundle's signature, hashes and expiry")
    verify.add_argument("bundle", help="bundle folder or .zip")
    _trusted(verify)
    verify.set_defaults(handler=_commands.verify)

    inspect = sub.add_parser("inspect", help="show a verified bundle's persona cards")
    inspect.add_argument("bundle", help="bundle folder or .zip")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    _trusted(inspect)
    inspect.set_defaults(handler=_commands.inspect)

    assign = sub.add_parser("assign", help="assign personas to users")
    assign.add_argument("bundle", help="bundle folder or .zip")
    given = assign.add_mutually_exclusive_group(required=True)
    given.add_argument("--features", help="table with one column per spec feature")
    given.add_argument("--events", help="event log; each user's events are folded as on a device")
    assign.add_argument("--at", help="reference time for --events (default: last event)")
    assign.add_argument("--backend", choices=["auto", "onnxruntime", "numpy"], default="auto")
    assign.add_argument("--json", action="store_true", help="machine-readable output")
    _trusted(assign)
    _columns(assign)
    assign.set_defaults(handler=_commands.assign)

    refit = sub.add_parser("refit", help="refit personas from collector aggregates (new version)")
    refit.add_argument("--db", required=True,
                       help="collector database URL: sqlite:///PATH or postgresql://…")
    refit.add_argument("--previous", required=True, help="the bundle devices assigned with")
    refit.add_argument("--key", required=True, help="signing key file or folder")
    refit.add_argument("--out", help="bundle folder to create (default: <model>-v<N> beside --previous)")
    refit.add_argument("--k-min", type=int, default=10, help="fewest contributions per persona (10)")
    refit.add_argument("--drift-threshold", type=float, default=0.15,
                       help="relative centroid move or share change that needs review (0.15)")
    refit.add_argument("--days", type=int, help="use only the last N days of contributions")
    refit.add_argument("--expires-days", type=float, default=90.0, help="validity in days (90)")
    refit.add_argument("--epsilon", type=float, help="noise counts and sums with (ε, δ)-DP")
    refit.add_argument("--delta", type=float, default=1e-6, help="DP δ (1e-6)")
    refit.add_argument("--ledger", help="privacy budget ledger (required with --epsilon)")
    refit.add_argument("--source", help="ledger source to spend from (default: the model id)")
    _trusted(refit)
    refit.set_defaults(handler=_dynamic.refit)

    approve = sub.add_parser("approve", help="publish a refit held back by the drift gate")
    approve.add_argument("bundle", help="the refit's bundle folder")
    approve.set_defaults(handler=_dynamic.approve)

    report = sub.add_parser("report", help="write a verified bundle as a self-contained HTML page")
    report.add_argument("bundle", help="bundle folder or .zip")
    report.add_argument("--previous", metavar="BUNDLE",
                        help="the previous version (folder or .zip), to show what changed")
    report.add_argument("--html", required=True, metavar="OUT.html", help="the HTML file to write")
    _trusted(report)
    report.set_defaults(handler=_report.report)

    audit = sub.add_parser("audit", help="privacy audit of a bundle: integrity, budget, egress, checks")
    audit.add_argument("bundle", help="bundle folder or .zip")
    audit.add_argument("--ledger", help="privacy budget ledger to verify and summarise")
    audit.add_argument("--source", help="only this ledger source")
    audit.add_argument("--db", help="collector database URL, to list what it stores")
    audit.add_argument("--data", help="event log for the fairness table (with --group-column)")
    audit.add_argument("--group-column", help="audit-only attribute (e.g. region); never clustered")
    audit.add_argument("--json", action="store_true", help="machine-readable output (stable schema)")
    audit.add_argument("--html", metavar="OUT.html", help="also write the audit as an HTML page")
    _trusted(audit)
    audit.set_defaults(handler=_audit.audit)

    quick = sub.add_parser("quickstart", help="train, sign, verify and assign on bundled data")
    quick.add_argument("--dir", help="work folder (default: a new temporary folder)")
    quick.add_argument("--k", default="auto", help="number of personas or 'auto'")
    quick.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    quick.add_argument("--show", type=int, default=12, help="held-back users to list (12)")
    quick.add_argument("--dynamic", action="store_true",
                       help="the whole sync loop: gateways, collector, refit, drift gate, update")
    quick.add_argument("--customers", type=int, default=300,
                       help="with --dynamic: customers served by the simulated gateways (300)")
    quick.set_defaults(handler=_quickstart.quickstart)

    from edgepersona.trainer.cli import (
        _serve,  # the collector service; FastAPI and uvicorn load only when it runs
    )

    serve = sub.add_parser("serve", help="run the collector: sealed sync in, approved bundles out")
    serve.add_argument("--db", required=True,
                       help="database URL: sqlite:///collector.db or postgresql://user:pass@host/db")
    serve.add_argument("--collector-key", required=True, metavar="KEYFILE",
                       help="collector private key file (or its folder)")
    serve.add_argument("--bundles", required=True, metavar="DIR",
                       help="folder of <model_id>-v<version>.zip bundles (or folders) to serve")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8787, help="port to listen on (8787)")
    serve.add_argument("--app-id", default="edgepersona", help="app id devices seal for (edgepersona)")
    serve.add_argument("--replay-window-days", type=int, default=7,
                       help="days a contribution stays acceptable and deduplicated (7)")
    serve.add_argument("--max-body-bytes", type=int, default=65_536,
                       help="largest sync request body in bytes (65536)")
    serve.set_defaults(handler=_serve.serve)
    return root
