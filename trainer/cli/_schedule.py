"""``edgepersona schedule``: one refit round for cron or a systemd timer.

Refit → drift gate → publish or hold, written into the folder the collector
serves from; safe to run twice; prints one log line (see
:mod:`edgepersona.trainer.release.schedule`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgepersona.trainer.cli._args import Subparsers, add_trusted, trusted_keys
from edgepersona.trainer.cli._refit import add_weighting_options, require_database, weighting_of
from edgepersona.trainer.cli._render import console
from edgepersona.trainer.cli._types import days, positive_float, positive_int

__all__ = ["add_parser", "schedule"]


def add_parser(sub: Subparsers) -> None:
    """Add ``schedule``.

    Args:
        sub: the root parser's sub-commands.
    """
    parser = sub.add_parser("schedule", help="one refit round for cron or a timer: refit, drift"
                            " gate, publish or hold (safe to run twice, one log line)")
    parser.add_argument("--db", required=True,
                        help="collector database URL: sqlite:///PATH or postgresql://…")
    parser.add_argument("--bundles", required=True, metavar="DIR",
                        help="the folder the collector serves bundles from")
    parser.add_argument("--key", required=True, help="signing key file or folder")
    parser.add_argument("--k-min", type=positive_int, default=10,
                        help="fewest contributions per persona (10)")
    parser.add_argument("--drift-threshold", type=positive_float, default=0.15,
                        help="relative centroid move or share change that needs review (0.15)")
    parser.add_argument("--history-versions", type=positive_int, default=8,
                        help="earlier versions whose cells still count, decayed (8)")
    parser.add_argument("--expires-days", type=days, default=90.0, help="validity in days (90)")
    add_trusted(parser)
    add_weighting_options(parser)
    parser.set_defaults(handler=schedule, window_default="blend:0.6@7,0.4@90")


def schedule(args: argparse.Namespace) -> int:
    """Run one scheduled round and print its log line.

    Args:
        args: the parsed ``schedule`` options.

    Returns:
        0 whatever the round decided (published, held, waiting, converged, busy).

    Raises:
        InputError: the bundles folder holds no approved bundle, a missing SQLite
            database, or bad options.
    """
    from edgepersona.trainer.collector import open_store
    from edgepersona.trainer.release.keys import load_signing_key
    from edgepersona.trainer.release.schedule import ScheduleOptions, run_schedule

    require_database(args.db)
    options = ScheduleOptions(weighting=weighting_of(args), k_min=args.k_min,
                              threshold=args.drift_threshold,
                              min_move=0.01 if args.min_move is None else args.min_move,
                              expires_days=args.expires_days,
                              history_versions=args.history_versions)
    key = load_signing_key(Path(args.key))
    store = open_store(args.db)
    try:
        outcome = run_schedule(Path(args.bundles), store, key, trusted_keys(args), options)
    finally:
        store.close()
    console.print(outcome.line, markup=False, soft_wrap=True)
    return 0
