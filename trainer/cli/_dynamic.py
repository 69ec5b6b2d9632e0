"""``edgepersona refit``, ``schedule`` and ``approve``: dynamic personas from the collector."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from edgepersona.sdk import InputError, PersonaRuntime
from edgepersona.trainer.cli._render import console

__all__ = ["add_schedule_parser", "add_weighting_options", "approve", "refit", "schedule"]


def add_weighting_options(parser: argparse.ArgumentParser) -> None:
    """How a refit weighs the collector's daily cells (shared by refit and schedule).

    Args:
        parser: the sub-command's parser.
    """
    parser.add_argument("--window", default=None, metavar="KERNEL",
                        help="decay over day age: all, half-life:DAYS or blend:0.6@7,0.4@90"
                             " (refit default: the previous version's cells only, all days equal)")
    parser.add_argument("--day-cap", type=float, default=3.0,
                        help="a day counts at most this many times a persona's median day (3; 0: off)")
    parser.add_argument("--trim", type=float, default=0.0,
                        help="trim this share of day weight per tail from daily means (0)")
    parser.add_argument("--min-move", type=float, default=None,
                        help="write nothing when no centroid moved and no share changed by this"
                             " much (converged; e.g. 0.01)")


def add_schedule_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``edgepersona schedule``.

    Args:
        sub: the root parser's sub-parsers.

    Returns:
        The schedule parser (the caller adds the trusted-key option).
    """
    schedule_parser: argparse.ArgumentParser = sub.add_parser(
        "schedule", help="one refit round for cron or a timer: refit, drift gate, publish or hold")
    schedule_parser.add_argument("--db", required=True,
                                 help="collector database URL: sqlite:///PATH or postgresql://…")
    schedule_parser.add_argument("--bundles", required=True, metavar="DIR",
                                 help="the folder the collector serves bundles from")
    schedule_parser.add_argument("--key", required=True, help="signing key file or folder")
    schedule_parser.add_argument("--k-min", type=int, default=10,
                                 help="fewest contributions per persona (10)")
    schedule_parser.add_argument("--drift-threshold", type=float, default=0.15,
                                 help="relative centroid move or share change that needs review (0.15)")
    schedule_parser.add_argument("--history-versions", type=int, default=8,
                                 help="earlier versions whose cells still count, decayed (8)")
    schedule_parser.add_argument("--expires-days", type=float, default=90.0,
                                 help="validity in days (90)")
    add_weighting_options(schedule_parser)
    schedule_parser.set_defaults(handler=schedule, window_default="blend:0.6@7,0.4@90",
                                 min_move_default=0.01)
    return schedule_parser


def _weighting(args: argparse.Namespace, default_window: str) -> Any:
    """The CellWeighting the options ask for."""
    from edgepersona.trainer.release.refit_cells import CellWeighting, parse_window

    return CellWeighting(parse_window(args.window or default_window),
                         day_cap=args.day_cap or None, trim=args.trim)


def refit(args: argparse.Namespace) -> int:
    """Refit the previous version from the collector's aggregates and sign version + 1."""
    from edgepersona.trainer.collector import open_store
    from edgepersona.trainer.release.keys import load_signing_key
    from edgepersona.trainer.release.refit import RefitPrivacy, plan_refit, sign_refit, write_refit
    from edgepersona.trainer.release.refit_cells import VersionCells, stack_cells, weigh_cells

    previous = PersonaRuntime.open(args.previous, trusted_keys=[
        Path(k).read_bytes() for k in args.trusted_key]).manifest
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
    weighting = _weighting(args, "all")
    if args.epsilon is not None and (weighting.day_cap is not None or weighting.trim):
        weighting = type(weighting)(weighting.window, day_cap=None, trim=0.0)  # noise calibration
    aggregates = weigh_cells(stacked, weighting)
    key = load_signing_key(Path(args.key))
    privacy, ledger = None, None
    if args.epsilon is not None:
        from edgepersona.trainer.privacy.ledger import PrivacyLedger

        if not args.ledger:
            raise InputError("--epsilon needs --ledger PATH: private refits are spent from a ledger")
        ledger = PrivacyLedger(Path(args.ledger), key)
        ledger.check(args.source or previous.model_id, epsilon=args.epsilon, delta=args.delta)
        privacy = RefitPrivacy(args.epsilon, args.delta)
    try:
        plan = plan_refit(previous, aggregates, k_min=args.k_min, threshold=args.drift_threshold,
                          privacy=privacy, weighting=weighting.describe())
    finally:  # noise was drawn: spend even if the refit then failed, and before any write
        if ledger is not None and privacy is not None:
            ledger.spend(args.source or previous.model_id, epsilon=privacy.epsilon,
                         delta=privacy.delta, note=f"{previous.model_id} v{previous.version + 1}")
    if args.min_move is not None and plan.converged(args.min_move):
        console.print(f"converged: largest move {plan.drift.max_move:.1%} <"
                      f" {args.min_move:.0%}; no new version written")
        return 0
    result = sign_refit(plan, key, expires_days=args.expires_days)
    source = Path(args.previous)
    out = Path(args.out) if args.out else source.with_name(
        f"{previous.model_id}-v{result.manifest.version}")
    write_refit(result, out)
    console.print(result.drift.to_markdown(previous.version, result.manifest.version))
    verdict = ("held for review: run `edgepersona approve " + str(out) + "` to publish"
               if result.drift.needs_review else "published (within the drift threshold)")
    console.print(f"v{result.manifest.version} from {int(np.sum(aggregates.contributions)):,}"
                  f" contributions written to {out}: {verdict}")
    return 0


def schedule(args: argparse.Namespace) -> int:
    """One scheduled round; prints one log line (safe to run twice)."""
    from edgepersona.trainer.collector import open_store
    from edgepersona.trainer.release.keys import load_signing_key
    from edgepersona.trainer.release.schedule import ScheduleOptions, run_schedule

    options = ScheduleOptions(weighting=_weighting(args, args.window_default), k_min=args.k_min,
                              threshold=args.drift_threshold,
                              min_move=args.min_move if args.min_move is not None
                              else args.min_move_default, expires_days=args.expires_days,
                              history_versions=args.history_versions)
    key = load_signing_key(Path(args.key))
    store = open_store(args.db)
    try:
        outcome = run_schedule(Path(args.bundles), store, key,
                               [Path(k).read_bytes() for k in args.trusted_key], options)
    finally:
        store.close()
    console.print(outcome.line, markup=False, soft_wrap=True)
    return 0


def approve(args: argparse.Namespace) -> int:
    """Approve a refit that the drift gate held back."""
    from edgepersona.trainer.release.refit import approve_bundle

    folder = Path(args.bundle)
    if approve_bundle(folder):
        console.print(f"approved {folder}: the collector serves it from the next request")
    else:
        console.print(f"{folder} was not waiting for review; nothing to do")
    return 0
