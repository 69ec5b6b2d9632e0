"""``edgepersona refit``: dynamic personas, refitted from the collector's aggregates."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgepersona.sdk import InputError, PersonaRuntime
from edgepersona.trainer.cli._args import Subparsers, add_trusted, trusted_keys
from edgepersona.trainer.cli._render import console
from edgepersona.trainer.cli._types import days, positive_float, positive_int, probability

__all__ = ["add_parser", "refit"]


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
    parser.add_argument("--ledger", help="privacy budget ledger (required with --epsilon)")
    parser.add_argument("--source", help="ledger source to spend from (default: the model id)")
    add_trusted(parser)
    parser.set_defaults(handler=refit)


def refit(args: argparse.Namespace) -> int:
    """Refit the previous version from the collector's aggregates and sign version + 1.

    Args:
        args: the parsed ``refit`` options.

    Returns:
        0 on success (published or held for review).

    Raises:
        InputError: ``--epsilon`` without ``--ledger``.
    """
    from edgepersona.trainer.collector import open_store
    from edgepersona.trainer.release.keys import load_signing_key
    from edgepersona.trainer.release.refit import PersonaAggregates, refit_bundle, write_refit

    previous = PersonaRuntime.open(args.previous, trusted_keys=trusted_keys(args)).manifest
    store = open_store(args.db)
    try:
        first_day = None
        if args.days is not None:
            latest = max((d.day_bucket for d in store.daily_aggregates(previous.version)), default=0)
            first_day = latest - args.days + 1
        cells = store.aggregates(previous.version, first_day=first_day)
    finally:
        store.close()
    k, d = len(previous.personas), len(previous.spec.features)
    counts, sums, sumsq = np.zeros(k), np.zeros((k, d)), np.zeros((k, d))
    for index, cell in cells.items():
        if 0 <= index < k:
            counts[index], sums[index], sumsq[index] = cell.count, cell.sums, cell.sumsq
    key = load_signing_key(Path(args.key))
    privacy, ledger = None, None
    if args.epsilon is not None:
        from edgepersona.trainer.privacy.ledger import PrivacyLedger
        from edgepersona.trainer.release.refit import RefitPrivacy

        if not args.ledger:
            raise InputError("--epsilon needs --ledger PATH: private refits are spent from a ledger")
        ledger = PrivacyLedger(Path(args.ledger), key)
        ledger.check(args.source or previous.model_id, epsilon=args.epsilon, delta=args.delta)
        privacy = RefitPrivacy(args.epsilon, args.delta)
    try:
        result = refit_bundle(previous, PersonaAggregates(counts, sums, sumsq), key,
                              k_min=args.k_min, threshold=args.drift_threshold,
                              expires_days=args.expires_days, privacy=privacy)
    finally:  # noise was drawn: spend even if the refit then failed, and before any write
        if ledger is not None and privacy is not None:
            ledger.spend(args.source or previous.model_id, epsilon=privacy.epsilon,
                         delta=privacy.delta, note=f"{previous.model_id} v{previous.version + 1}")
    source = Path(args.previous)
    out = Path(args.out) if args.out else source.with_name(
        f"{previous.model_id}-v{result.manifest.version}")
    write_refit(result, out)
    console.print(result.drift.to_markdown(previous.version, result.manifest.version))
    verdict = ("held for review: run `edgepersona approve " + str(out) + "` to publish"
               if result.drift.needs_review else "published (within the drift threshold)")
    console.print(f"v{result.manifest.version} from {int(counts.sum()):,} contributions"
                  f" written to {out}: {verdict}")
    return 0

