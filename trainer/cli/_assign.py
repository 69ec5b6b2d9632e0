"""``edgepersona assign``: one persona per user, from a feature table or folded events."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from edgepersona.sdk import Assignment, PersonaRuntime
from edgepersona.trainer.cli._args import (
    Subparsers,
    add_columns,
    add_trusted,
    columns,
    describe_bad_rows,
    open_bundle,
    require_file,
    require_users,
)
from edgepersona.trainer.cli._render import print_assignments, print_json
from edgepersona.trainer.cli._types import moment

__all__ = ["add_parser", "assign"]


def add_parser(sub: Subparsers) -> None:
    """Add ``assign``.

    Args:
        sub: the root parser's sub-commands.
    """
    parser = sub.add_parser("assign", help="assign personas to users")
    parser.add_argument("bundle", help="bundle folder or .zip")
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--features", help="table with one column per spec feature")
    given.add_argument("--events", help="event log; each user's events are folded as on a device")
    parser.add_argument("--at", type=moment, help="reference time for --events (default: last event)")
    parser.add_argument("--backend", choices=["auto", "onnxruntime", "numpy"], default="auto")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_trusted(parser)
    add_columns(parser)
    parser.set_defaults(handler=assign)


def assign(args: argparse.Namespace) -> int:
    """``edgepersona assign``: one persona per user, from features or folded events.

    Args:
        args: the parsed ``assign`` options.

    Returns:
        0 on success.
    """
    data = Path(args.features or args.events)
    require_file("--features" if args.features else "--events", str(data))
    runtime = open_bundle(args)
    if args.features:
        from edgepersona.trainer.data.events import read_feature_table

        table = read_feature_table(data, runtime.spec, args.user_col if _has_column(args) else None)
        require_users(len(table.values), table.bad_rows, data.name)
        labels, results = table.user_keys, runtime.assign_many(table.values)
        bad = table.bad_rows
    else:
        labels, results, bad = _assign_events(runtime, data, args)
    if bad:  # on stderr, so that --json output stays one JSON document
        print(f"edgepersona: skipped {sum(bad.values()):,} bad row(s) of {data.name}:"
              f" {describe_bad_rows(bad)}", file=sys.stderr)
    if args.json:
        print_json([{"user": u, **_as_dict(r)} for u, r in zip(labels, results, strict=True)])
    else:
        print_assignments(labels, results)
    return 0


def _has_column(args: argparse.Namespace) -> bool:
    """Whether the features table has the user column (it is optional there)."""
    from edgepersona.trainer.data.events import read_table

    return args.user_col in read_table(Path(args.features))


def _assign_events(runtime: PersonaRuntime, path: Path, args: argparse.Namespace
                   ) -> tuple[list[str], list[Assignment], Counter[str]]:
    """Fold each user's events one at a time, as the device does, then assign."""
    from edgepersona.trainer.data.events import read_event_log
    from edgepersona.trainer.data.replay import replay_on_device

    log = read_event_log(path, columns(args))
    require_users(log.n_users, log.bad_rows, path.name)
    rows = replay_on_device(runtime.fold_plan, log, args.at)
    return log.user_keys, runtime.assign_many(rows), log.bad_rows


def _as_dict(result: Assignment) -> dict[str, object]:
    """An assignment as JSON-ready data."""
    return {"persona_id": result.persona_id, "name": result.name, "index": result.index,
            "confidence": result.confidence, "distances": list(result.distances),
            "model_version": result.model_version, "determined": result.determined}
