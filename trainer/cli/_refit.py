"""``edgepersona refit``: dynamic personas, refitted from the collector's aggregates."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from edgepersona.sdk import InputError, PersonaError, PersonaRuntime
from edgepersona.trainer.cli._args import Subparsers, add_trusted, trusted_keys
from edgepersona.trainer.cli._errors import one_line
from edgepersona.trainer.cli._render import console
from edgepersona.trainer.cli._types import (
    days,
    fraction,
    positive_float,
    positive_int,
    probability,
)

__all__ = ["add_parser", "add_weighting_options", "refit", "require_database", "spend_text",
           "weighting_of"]


def add_parser(sub: Subparsers) -> None:
    """Add ``refit``.

    Args:
        sub: the root parser's sub-commands.
    """
    parser = sub.add_parser("refit", help="refit personas from collector aggregates (new version)")
    parser.add_argument("--db", required=True,
                        help="collector database URL: sqlite:///PATH or postgresql://…")
    parser.add_argument("--previous", required=True, help="the bundle devices assigned with")
    parser.add_argument("--key", required=True, help="signing key file or folder")
    parser.add_argument("--out", help="bundle folder to create (default: <model>-v<N> beside --previous)")
    parser.add_argument("--k-min", type=positive_int, default=10,
                        help="fewest contributions per persona (10)")
    parser.add_argument("--drift-threshold", type=positive_float, default=0.15,
                        help="relative centroid move or share change that needs review (0.15)")
    parser.add_argument("--days", type=positive_int, help="use only the last N days of contributions")
    parser.add_argument("--expires-days", type=days, default=90.0, help="validity in days (90)")
    parser.add_argument("--epsilon", type=positive_float, help="noise counts and sums with (ε, δ)-DP")
    parser.add_argument("--delta", type=probability, default=1e-6, help="DP δ (1e-6)")
    parser.add_argument("--ledger", help="privacy budget ledger, required with --epsilon: a file,"
                        " sqlite:///PATH.db or a postgresql:// URL (the one the model line spends from)")
    parser.add_argument("--source", help="budgeted ledger source to spend from (default: the one the"
                        " previous bundle's lineage names); the model line's people are charged too")
    add_trusted(parser)
    add_weighting_options(parser)
    parser.set_defaults(handler=refit, window_default="all")


def add_weighting_options(parser: argparse.ArgumentParser) -> None:
    """How a refit weighs the collector's daily cells (shared by refit and schedule).

    Args:
        parser: the sub-command's parser.
    """
    parser.add_argument("--window", default=None, metavar="KERNEL",
                        help="decay over day age: all, half-life:DAYS or blend:0.6@7,0.4@90"
                             " (refit: all; schedule: blend:0.6@7,0.4@90)")
    parser.add_argument("--day-cap", type=_day_cap, default=3.0,
                        help="a day counts at most this many times a persona's median day (3; 0: off)")
    parser.add_argument("--trim", type=fraction, default=0.0,
                        help="trim this share of day weight per tail from daily means (0)")
    parser.add_argument("--min-move", type=fraction, default=None,
                        help="write nothing when no centroid moved and no share changed by this"
                             " much: converged (refit: off; schedule: 0.01)")


def _day_cap(text: str) -> float:
    """An argparse type: 0 (no cap) or a number >= 1 (times the median day)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 0 or a number >= 1, got {text!r}") from None
    if not (value == 0 or value >= 1):
        raise argparse.ArgumentTypeError(f"expected 0 (off) or a number >= 1, got {text!r}")
    return value


def weighting_of(args: argparse.Namespace) -> Any:
    """The ``CellWeighting`` the options ask for.

    Args:
        args: parsed options from :func:`add_weighting_options`.

    Returns:
        The weighting.

    Raises:
        InputError: an unreadable ``--window`` or a day cap below 1.
    """
    from edgepersona.trainer.release.refit_cells import CellWeighting, parse_window

    return CellWeighting(parse_window(args.window or args.window_default),
                         day_cap=args.day_cap or None, trim=args.trim)


def refit(args: argparse.Namespace) -> int:
    """Refit the previous version from the collector's aggregates and sign version + 1.

    A private refit is checked against the ledger before any noise is drawn and
    spent before it is signed; its manifest records the spend (see
    :mod:`edgepersona.trainer.release.refit_ledger`).

    Args:
        args: the parsed ``refit`` options.

    Returns:
        0 on success (published, held for review, or converged).

    Raises:
        InputError: ``--epsilon`` without ``--ledger``, a missing SQLite database, or
            a private refit whose spend stands while its bundle could not be written.
        BudgetExceededError: a budget the refit is charged to cannot pay (nothing spent).
        ModelIntegrityError: the ledger is not the one the previous version was spent
            from, or no longer holds its entry.
    """
    from edgepersona.trainer.release.refit import plan_refit

    require_database(args.db)
    if args.epsilon is not None and not args.ledger:
        raise InputError("--epsilon needs --ledger PATH|URL: private refits are spent from a ledger")
    previous = PersonaRuntime.open(args.previous, trusted_keys=trusted_keys(args)).manifest
    aggregates, weighting = _aggregates(args, previous)
    key, privacy, ledger, source = _private(args, previous)
    spend = None
    try:
        try:
            plan = plan_refit(previous, aggregates, k_min=args.k_min, threshold=args.drift_threshold,
                              privacy=privacy, weighting=weighting.describe())
        finally:  # noise was drawn: spend even if the refit then failed, and before signing
            if ledger is not None and privacy is not None:
                from edgepersona.trainer.release.refit_ledger import spend_refit

                spend = spend_refit(ledger, previous, privacy, source)
        if args.min_move is not None and plan.converged(args.min_move):
            console.print(f"converged: largest move {plan.drift.max_move:.1%} <"
                          f" {args.min_move:.0%}; no new version written"
                          + (f" (ε={spend_text(spend, privacy)} stays spent)" if spend else ""))
            return 0
        _write(args, plan, key, int(np.sum(aggregates.contributions)), spend)
    except (PersonaError, OSError) as exc:
        if spend is None:
            raise
        raise InputError(f"v{previous.version + 1} was not written ({one_line(exc)}); its"
                         f" ε={spend_text(spend, privacy)} stays spent (fail safe: the noise was"
                         " drawn); fix the cause and refit again, which spends again") from exc
    return 0


def spend_text(spend: Any, privacy: Any) -> str:
    """``1 from source 'crm' (ledger entry 4)``: what a private refit spent, for messages.

    Args:
        spend: the refit's :class:`~edgepersona.trainer.release.refit.RefitSpend`.
        privacy: its :class:`~edgepersona.trainer.release.refit.RefitPrivacy`.

    Returns:
        The phrase.
    """
    return f"{privacy.epsilon:g} from source {spend.source!r} (ledger entry {spend.seq})"


def require_database(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist: reading never creates a database.

    Args:
        url: the ``--db`` URL.

    Raises:
        InputError: the SQLite file is missing.
    """
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != prefix + ":memory:" and not Path(url[len(prefix):]).is_file():
        raise InputError(f"no collector database at {url[len(prefix):]}; pass the --db URL the"
                         " collector writes to (a refit only reads it and never creates one)")


def _aggregates(args: argparse.Namespace, previous: Any) -> tuple[Any, Any]:
    """The previous version's daily cells, weighed as the options say (and the weighting)."""
    from edgepersona.trainer.collector import open_store
    from edgepersona.trainer.release.refit_cells import VersionCells, stack_cells, weigh_cells

    store = open_store(args.db)
    try:
        first_day = None
        if args.days is not None:
            latest = max((d.day_bucket for d in store.daily_aggregates(previous.version)), default=0)
            first_day = latest - args.days + 1
        cells = store.daily_aggregates(previous.version, first_day=first_day)
    finally:
        store.close()
    ids = tuple(p.id for p in previous.personas)
    stacked = stack_cells([VersionCells(previous.version, ids, tuple(cells))], ids,
                          len(previous.spec.features))
    weighting = weighting_of(args)
    if args.epsilon is not None:  # the noise is calibrated for weights <= 1 without data-driven caps
        weighting = type(weighting)(weighting.window, day_cap=None, trim=0.0)
    return weigh_cells(stacked, weighting), weighting


def _private(args: argparse.Namespace, previous: Any) -> tuple[Any, Any, Any, str | None]:
    """The signing key; with ``--epsilon`` the privacy, its checked ledger and its source."""
    from edgepersona.trainer.release.keys import load_signing_key

    key = load_signing_key(Path(args.key))
    if args.epsilon is None:
        return key, None, None, None
    from edgepersona.trainer.privacy.ledger import PrivacyLedger
    from edgepersona.trainer.release.refit import RefitPrivacy
    from edgepersona.trainer.release.refit_ledger import check_refit

    privacy = RefitPrivacy(args.epsilon, args.delta)
    ledger = PrivacyLedger(args.ledger, key)  # a file, sqlite:/// or postgresql:// (as train)
    source = check_refit(ledger, previous, privacy, args.source)
    return key, privacy, ledger, source


def _write(args: argparse.Namespace, plan: Any, key: Any, contributions: int, spend: Any) -> None:
    """Sign the planned version, write it beside the previous one and say what the gate did."""
    from edgepersona.trainer.release.refit import sign_refit, write_refit

    previous = plan.previous
    result = sign_refit(plan, key, expires_days=args.expires_days, spend=spend)
    out = Path(args.out) if args.out else Path(args.previous).with_name(
        f"{previous.model_id}-v{result.manifest.version}")
    write_refit(result, out)
    console.print(result.drift.to_markdown(previous.version, result.manifest.version),
                  markup=False)
    verdict = ("held for review: run `edgepersona approve " + str(out) + "` to publish"
               if result.drift.needs_review else "published (within the drift threshold)")
    console.print(f"v{result.manifest.version} from {contributions:,} contributions written to"
                  f" {out}: {verdict}")

