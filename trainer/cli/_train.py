"""``edgepersona train``: fit personas, sign and export a bundle (or preview ε, releasing nothing)."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import FeatureSpec, InputError, load_spec_json
from edgepersona.trainer.cli._args import Subparsers, add_columns, columns, require_file, require_users
from edgepersona.trainer.cli._render import console, print_cards, progress_steps
from edgepersona.trainer.cli._spec import suggest_for
from edgepersona.trainer.cli._types import (
    budget,
    days,
    fraction,
    k_or_auto,
    k_range,
    model_id,
    moment,
    non_negative_int,
    positive_float,
    positive_floats,
    positive_int,
    probability,
)

if TYPE_CHECKING:
    from edgepersona.trainer.data.events import FeatureTable
    from edgepersona.trainer.data.facts import UserFacts
    from edgepersona.trainer.engines.row_blocks import RowBlocks
    from edgepersona.trainer.release.train import TrainOptions

__all__ = ["add_parser", "train"]


def add_parser(sub: Subparsers) -> None:
    """Add ``train``.

    Args:
        sub: the root parser's sub-commands.
    """
    parser = sub.add_parser("train", help="fit personas and export a signed bundle")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", help="event log (CSV/Parquet)")
    source.add_argument("--table", help="aggregated table, one row per user")
    parser.add_argument("--spec", help="feature spec JSON (default: suggested from the data)")
    parser.add_argument("--key", help="signing key file or folder (required unless --epsilon-sweep)")
    parser.add_argument("--out", help="bundle folder to create (required unless --epsilon-sweep)")
    parser.add_argument("--zip", action="store_true", help="also write OUT.zip")
    parser.add_argument("--force", action="store_true", help="replace an existing OUT")
    parser.add_argument("--k", type=k_or_auto, default="auto", help="number of personas or 'auto' (default)")
    parser.add_argument("--k-range", type=k_range, default=(3, 8), help="candidates for auto k (default 3,8)")
    parser.add_argument("--k-min", type=positive_int, default=10, help="fewest users per persona (10)")
    parser.add_argument("--min-share", type=fraction, default=0.02,
                       help="auto k: smallest persona share allowed (0.02)")
    parser.add_argument("--seed", type=non_negative_int, help="random seed for reproducible fits")
    parser.add_argument("--model-id", type=model_id, default="personas",
                        help="model name (default: personas)")
    parser.add_argument("--version", type=positive_int, default=1, help="bundle version (default: 1)")
    parser.add_argument("--expires-days", type=days, default=90.0, help="validity in days (90)")
    parser.add_argument("--at", type=moment, help="reference time for event logs (ISO 8601 or unix seconds)")
    parser.add_argument("--outcome", metavar="EVENT",
                        help="an outcome event (or table column, e.g. Revenue): each card shows its"
                             " rate against everyone's; never a feature (noised under --epsilon)")
    _add_privacy(parser)
    _add_engine(parser)
    add_columns(parser)
    parser.set_defaults(handler=train)


def _add_privacy(parser: argparse.ArgumentParser) -> None:
    """The differential privacy options."""
    private = parser.add_argument_group("differential privacy")
    private.add_argument("--epsilon", type=positive_float, help="fit with (ε, δ)-DP; needs --k and --ledger")
    private.add_argument("--delta", type=probability, default=1e-6, help="DP δ (1e-6)")
    private.add_argument("--iterations", type=positive_int, default=3, help="DP-Lloyd rounds (3)")
    private.add_argument("--ledger", help="privacy budget ledger: a file (created if missing),"
                         " sqlite:///PATH.db or a postgresql:// URL")
    private.add_argument("--ledger-secret", metavar="PATH",
                         help="source secret for a database ledger (a file ledger keeps it beside)")
    private.add_argument("--source", help="label for people the ledger does not know yet (default:"
                         " an opaque label); known people spend from their own budget")
    private.add_argument("--budget", type=budget, metavar="EPS[,DELTA]",
                         help="give the source this total budget if it has none yet")
    private.add_argument("--epsilon-sweep", type=positive_floats, metavar="E1,E2,...",
                         help="preview quality and stability per ε on synthetic data; releases nothing")


def _add_engine(parser: argparse.ArgumentParser) -> None:
    """The engine options (local or Dask)."""
    engine = parser.add_argument_group("engine")
    engine.add_argument("--engine", choices=["local", "dask"], default="local",
                        help="local: in this process (default); dask: on a dask.distributed cluster,"
                             " reading --events/--table as partitioned Parquet/CSV (a folder or glob);"
                             " needs --spec and the dask extra")
    engine.add_argument("--scheduler", metavar="ADDRESS",
                        help="with --engine dask: the scheduler to use (default: start a local"
                             " cluster of 2 workers)")


def train(args: argparse.Namespace) -> int:
    """``edgepersona train``: fit, sign and export a bundle.

    Args:
        args: the parsed ``train`` options.

    Returns:
        0 on success.

    Raises:
        InputError: the options do not fit together.
    """
    from edgepersona.trainer.release.export import write_bundle, zip_bundle
    from edgepersona.trainer.release.keys import load_signing_key
    from edgepersona.trainer.release.train import TrainOptions, train_bundle

    _check_before_work(args)
    key = load_signing_key(Path(args.key)) if args.key else None
    data = Path(args.events or args.table)
    with progress_steps("training") as step, _engine(args):
        spec, rows, bad, users, ids, facts = _spec_and_rows(args, data, step)
        if args.epsilon_sweep:
            return _sweep(spec, users, args)
        options = TrainOptions(model_id=args.model_id, version=args.version, k=args.k,
                               k_range=args.k_range, k_min=args.k_min,
                               min_share=args.min_share, seed=args.seed,
                               expires_days=args.expires_days)
        options = _with_privacy(options, args, ids)
        assert key is not None
        result = train_bundle(rows, spec, key, options, lineage={
                              "source": args.source or "unlabelled", "users": users},
                              bad_rows=bad, progress=step, user_ids=ids, facts=facts)
    out = write_bundle(Path(args.out), result.files, overwrite=args.force)
    if args.zip:
        zip_bundle(result.files, out.with_suffix(".zip"))
    print_cards(result.manifest)
    console.print(f"bundle written to {out}")
    return 0


def _spec_and_rows(args: argparse.Namespace, data: Path, step: Callable[[str], None]
                   ) -> tuple[FeatureSpec, npt.NDArray[np.float64] | RowBlocks, Counter[str], int,
                              list[str] | None, UserFacts | None]:
    """The spec (given or suggested), rows, bad rows, users, ids (for DP; None on Dask), facts."""
    from edgepersona.trainer.data.events import read_event_log, read_feature_table
    from edgepersona.trainer.data.facts import log_facts
    from edgepersona.trainer.data.features import compute_features

    if args.spec:
        spec = load_spec_json(Path(args.spec).read_text(encoding="utf-8"))
    else:
        spec = suggest_for(data, args, table=bool(args.table))
        step(f"no --spec given: using the suggested spec ({len(spec.features)} features,"
             " coarse noisy bounds; see `edgepersona spec suggest`)")
    rows: npt.NDArray[np.float64] | RowBlocks
    ids: list[str] | None = None
    facts = None
    if args.engine == "dask":
        rows, bad, users = _dask_rows(spec, args, step)
    elif args.events:
        log = read_event_log(data, columns(args))
        require_users(log.n_users, log.bad_rows, data.name)
        rows, bad, users = compute_features(log, spec, args.at), log.bad_rows, log.n_users
        ids = log.user_keys
        facts = log_facts(log, spec, args.at, args.outcome)
    else:
        private = args.epsilon is not None  # a private release needs the people's ids
        table = read_feature_table(data, spec, args.user_col if private else None)
        rows, bad, users = table.values, table.bad_rows, len(table.values)
        ids = table.user_keys if private else None
        facts = _table_facts(data, table, args.outcome) if users else None
    step(f"{users:,} users, {sum(bad.values()):,} bad rows skipped"
         + (f" ({dict(bad)})" if bad else ""))
    require_users(users, bad, data.name)
    return spec, rows, bad, users, ids, facts


def _check_before_work(args: argparse.Namespace) -> None:
    """Refuse option combinations that cannot work, before any data is read."""
    if not args.epsilon_sweep and not (args.key and args.out):
        raise InputError("train needs --key KEYS/ and --out BUNDLE/ (only --epsilon-sweep writes nothing)")
    if args.engine == "dask" and not args.spec:
        raise InputError("--engine dask needs --spec: make one with `edgepersona spec suggest` on one file")
    if args.engine == "dask" and args.outcome:
        raise InputError("--outcome runs on the local engine only; drop --engine dask")
    if args.out and not args.epsilon_sweep and Path(args.out).exists() and not args.force:
        raise InputError(f"{args.out} already exists; choose another --out or pass --force")
    if args.epsilon is not None and not args.ledger:
        raise InputError("--epsilon needs --ledger PATH: private releases are spent from a ledger")
    if (args.epsilon is not None or args.epsilon_sweep) and args.k == "auto":
        raise InputError(f"{'--epsilon-sweep' if args.epsilon_sweep else '--epsilon'} needs a fixed"
                         " --k: choosing k from the data would spend privacy budget")
    files = [("--spec", args.spec)]
    if args.engine == "local":  # the Dask engine reads folders and globs
        files += [("--events", args.events), ("--table", args.table)]
    for flag, given in files:
        if given:
            require_file(flag, given)


def _table_facts(path: Path, table: FeatureTable, outcome: str | None) -> UserFacts:
    """Display facts of a table: its own values, and the --outcome column as yes/no."""
    from edgepersona.trainer.data.events import read_table
    from edgepersona.trainer.data.facts import table_facts

    if outcome is None:
        return table_facts(table.values)
    cells = read_table(path).get(outcome)
    if cells is None:
        raise InputError(f"--outcome {outcome!r} is not a column of {path.name}; name one of its"
                         " columns (e.g. a yes/no column such as Revenue)")
    kept = [cells[int(position)] for position in table.user_keys]  # keys are row positions here
    flags = np.array([str(c).strip().lower() in ("true", "yes", "y", "1", "1.0") for c in kept])
    return table_facts(table.values, flags, outcome)


def _engine(args: argparse.Namespace) -> AbstractContextManager[object]:
    """The Dask client for --engine dask (to --scheduler, or a local cluster); else nothing."""
    if args.engine != "dask":
        return nullcontext()
    from edgepersona.trainer.engines.dask_engine import dask_client

    return dask_client(args.scheduler)


def _dask_rows(spec: FeatureSpec, args: argparse.Namespace, step: Callable[[str], None]
               ) -> tuple[npt.NDArray[np.float64] | RowBlocks, Counter[str], int]:
    """Feature rows computed on the Dask cluster from partitioned --events or --table."""
    from edgepersona.trainer.data.dask_features import read_event_rows, read_table_rows
    from edgepersona.trainer.engines.dask_engine import worker_count

    step(f"dask engine: {worker_count()} worker(s)")
    if args.events:
        read = read_event_rows(args.events, spec, columns(args), args.at)
    else:
        read = read_table_rows(args.table, spec)
    return read.rows, read.bad_rows, read.users


def _with_privacy(options: TrainOptions, args: argparse.Namespace,
                  ids: list[str] | None) -> TrainOptions:
    """Add --epsilon and friends; gives these people a budget on first use (--budget).

    The budget belongs to the people in the data (a keyed sketch of their ids), so
    a renamed file or another --source spends from the budget they already have.
    """
    if args.epsilon is None:
        return options
    if not args.ledger:
        raise InputError("--epsilon needs --ledger PATH: private releases are spent from a ledger")
    secret = Path(args.ledger_secret) if args.ledger_secret else None
    if args.budget and ids:
        from edgepersona.trainer.privacy.ledger import PrivacyLedger
        from edgepersona.trainer.release.keys import load_signing_key

        epsilon, delta = args.budget
        ledger = PrivacyLedger(args.ledger, load_signing_key(Path(args.key)), secret=secret)
        sketch = ledger.sketch(ids)
        source = ledger.resolve(sketch, args.source)
        if not ledger.status(source).has_budget:
            ledger.set_budget(source, epsilon=epsilon, delta=delta, sketch=sketch)
    return replace(options, epsilon=args.epsilon, delta=args.delta, iterations=args.iterations,
                   ledger=args.ledger, source=args.source, ledger_secret=secret)


def _sweep(spec: FeatureSpec, users: int, args: argparse.Namespace) -> int:
    """Print the ε preview table; nothing is released or spent."""
    from rich.table import Table

    from edgepersona.trainer.privacy.preview import epsilon_sweep

    if args.k == "auto":
        raise InputError("--epsilon-sweep needs a fixed --k")
    points = epsilon_sweep(spec, users=users, k=args.k, epsilons=args.epsilon_sweep, delta=args.delta,
                           seed=args.seed or 0)
    table = Table(title=f"DP preview: {users:,} users, k={args.k}, δ={args.delta:g}"
                  " (synthetic data in the declared bounds; nothing spent)", title_justify="left")
    for column in ("ε", "cost vs non-private", "stability (ARI of two fits)"):
        table.add_column(column, justify="right")
    for p in points:
        table.add_row(f"{p.epsilon:g}", f"{p.cost_ratio:.3f}x", f"{p.stability_ari:.3f}")
    console.print(table)
    return 0
