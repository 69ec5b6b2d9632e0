"""``edgepersona refit`` and ``edgepersona approve``: dynamic personas from the collector."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgepersona.sdk import InputError, PersonaRuntime
from edgepersona.trainer.cli._render import console

__all__ = ["approve", "refit"]


def refit(args: argparse.Namespace) -> int:
    """Refit the previous version from the collector's aggregates and sign version + 1."""
    from edgepersona.trainer.collector import open_store
    from edgepersona.trainer.release.keys import load_signing_key
    from edgepersona.trainer.release.refit import PersonaAggregates, refit_bundle, write_refit

    previous = PersonaRuntime.open(args.previous, trusted_keys=[
        Path(k).read_bytes() for k in args.trusted_key]).manifest
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


def approve(args: argparse.Namespace) -> int:
    """Approve a refit that the drift gate held back."""
    from edgepersona.trainer.release.refit import approve_bundle

    folder = Path(args.bundle)
    if approve_bundle(folder):
        console.print(f"approved {folder}: the collector serves it from the next request")
    else:
        console.print(f"{folder} was not waiting for review; nothing to do")
    return 0
