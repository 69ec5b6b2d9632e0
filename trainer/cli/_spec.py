"""``edgepersona spec suggest``: propose a feature spec from an event log or a table."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from edgepersona.sdk import FeatureSpec
from edgepersona.trainer.cli._args import Subparsers, add_columns, columns, require_file, require_users
from edgepersona.trainer.cli._render import console
from edgepersona.trainer.cli._types import non_negative_int

__all__ = ["add_parser", "spec_suggest", "suggest_for"]


def add_parser(sub: Subparsers) -> None:
    """Add ``spec suggest``.

    Args:
        sub: the root parser's sub-commands.
    """
    spec = sub.add_parser("spec", help="feature specs").add_subparsers(metavar="ACTION", required=True)
    suggest = spec.add_parser("suggest", help="propose a spec from an event log or table")
    suggest.add_argument("data", help="event log (CSV/Parquet)")
    suggest.add_argument("--table", action="store_true", help="DATA is an aggregated table")
    suggest.add_argument("--out", help="write the spec here instead of printing it")
    suggest.add_argument("--outcome", metavar="EVENT",
                         help="an outcome event (or table column) to leave out of the features")
    suggest.add_argument("--seed", type=non_negative_int,
                         help="seed for the noisy bounds and the trial fit")
    add_columns(suggest)
    suggest.set_defaults(handler=spec_suggest)


def spec_suggest(args: argparse.Namespace) -> int:
    """``edgepersona spec suggest``: propose a spec from data.

    Args:
        args: ``data``, ``table``, ``out`` and the column options.

    Returns:
        0 on success.
    """
    require_file("DATA", args.data)
    spec = suggest_for(Path(args.data), args, table=args.table)
    text = spec.to_json()
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        console.print(f"wrote {len(spec.features)} features to {args.out}; review them:")
        for note in spec.notes:
            console.print(f"  - {note}")
    else:
        print(text)
    return 0


def suggest_for(path: Path, args: argparse.Namespace, *, table: bool) -> FeatureSpec:
    """Suggest a spec for an event log or an aggregated table.

    Args:
        path: the data file.
        args: parsed options with the column names.
        table: whether the file is an aggregated table (one row per user).

    Returns:
        The suggested spec (coarse noisy bounds; its notes say what was chosen).
    """
    if table:
        from edgepersona.trainer.data.events import parse_number, read_table
        from edgepersona.trainer.data.suggest import suggest_table_spec

        raw = read_table(path, (args.user_col,))
        require_users(len(next(iter(raw.values()), [])), Counter(), path.name)
        numeric = {}
        for name, cells in raw.items():
            values = np.array([parse_number(c) for c in cells])
            if name != args.user_col and np.isfinite(values).all():
                numeric[name] = values
        return suggest_table_spec(numeric, seed=args.seed, exclude=_outcome(args))
    from edgepersona.trainer.data.events import read_event_log
    from edgepersona.trainer.data.suggest import suggest_spec

    log = read_event_log(path, columns(args))
    require_users(log.n_users, log.bad_rows, path.name)
    return suggest_spec(log, seed=args.seed, exclude_events=_outcome(args))


def _outcome(args: argparse.Namespace) -> tuple[str, ...]:
    """The --outcome event or column, which never becomes a feature."""
    outcome = getattr(args, "outcome", None)
    return (outcome,) if outcome else ()
