"""Options shared by several sub-commands, and turning them into objects."""

from __future__ import annotations

import argparse
import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from edgepersona.sdk import InputError, PersonaRuntime

if TYPE_CHECKING:
    from edgepersona.trainer.data.events import Columns

__all__ = ["Subparsers", "add_columns", "add_trusted", "columns", "describe_bad_rows", "open_bundle",
           "parse_at", "require_file", "require_users", "trusted_keys"]

# What ``add_subparsers()`` returns; each sub-command module adds its parser to it.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_columns(parser: argparse.ArgumentParser) -> None:
    """Options that rename the event log's columns.

    Args:
        parser: the sub-command's parser.
    """
    parser.add_argument("--user-col", default="user_id", help="user id column (default: user_id)")
    parser.add_argument("--time-col", default="timestamp", help="time column (default: timestamp)")
    parser.add_argument("--event-col", default="event", help="event name column (default: event)")
    parser.add_argument("--value-col", default="value", help="numeric value column (default: value)")


def add_trusted(parser: argparse.ArgumentParser) -> None:
    """The trusted-key option shared by everything that opens a bundle.

    Args:
        parser: the sub-command's parser.
    """
    parser.add_argument("--trusted-key", action="append", required=True, metavar="PUBKEY",
                        help="public key file (PEM), or a key folder, to accept signatures from;"
                             " repeatable")


def columns(args: argparse.Namespace) -> Columns:
    """The event log column names from the ``--*-col`` options.

    Args:
        args: parsed options with ``user_col``, ``time_col``, ``event_col``, ``value_col``.

    Returns:
        The column names.
    """
    from edgepersona.trainer.data.events import Columns

    return Columns(args.user_col, args.time_col, args.event_col, args.value_col)


def parse_at(text: str | None) -> float | None:
    """Parse ``--at`` (ISO 8601 or unix seconds).

    Args:
        text: the option's value, or None.

    Returns:
        Unix seconds, or None when not given.

    Raises:
        InputError: the text is neither.
    """
    if text is None:
        return None
    from edgepersona.trainer.data.events import parse_time

    value = parse_time(text)
    if not math.isfinite(value):
        raise InputError(f"--at must be ISO 8601 or unix seconds, got {text!r}")
    return value


def trusted_keys(args: argparse.Namespace) -> list[bytes]:
    """The public keys named by ``--trusted-key`` (key files or key folders).

    Args:
        args: parsed options with ``trusted_key``.

    Returns:
        The raw bytes of each key.

    Raises:
        InputError: a path is missing or holds no Ed25519 public key.
    """
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from edgepersona.sdk.protocol.signing import read_public_keys

    return [key.public_bytes(Encoding.Raw, PublicFormat.Raw)
            for path in args.trusted_key for key in read_public_keys(path)]


def open_bundle(args: argparse.Namespace) -> PersonaRuntime:
    """Open and verify the bundle named on the command line.

    Args:
        args: parsed options with ``bundle``, ``trusted_key`` and optionally ``backend``.

    Returns:
        The verified runtime.
    """
    return PersonaRuntime.open(args.bundle, trusted_keys=trusted_keys(args),
                               backend=getattr(args, "backend", "auto"))


def require_file(flag: str, path: str) -> None:
    """Refuse a missing path or a folder where a file is expected, before any work.

    Args:
        flag: the option or argument name, for the message.
        path: the path given.

    Raises:
        InputError: the path is missing or is a folder.
    """
    where = Path(path)
    if where.is_dir():
        raise InputError(f"{flag} {path} is a folder; expected a file")
    if not where.exists():
        raise InputError(f"{flag} {path}: no such file")


def require_users(users: int, bad: Counter[str], source: str) -> None:
    """Refuse data with no usable user, naming the real cause (not a k error later).

    Args:
        users: users left after dropping bad rows.
        bad: dropped rows per reason.
        source: the file name, for the message.

    Raises:
        InputError: no user is left.
    """
    if users > 0:
        return
    if not bad:
        raise InputError(f"{source} has no users: it holds no data rows (a header at most)")
    raise InputError(f"{source} has no users: all {sum(bad.values()):,} rows were dropped as bad"
                     f" ({describe_bad_rows(bad)})")


def describe_bad_rows(bad: Counter[str]) -> str:
    """Dropped rows per reason, e.g. ``3 unparseable timestamp, 1 missing user id``.

    Args:
        bad: dropped rows per reason.

    Returns:
        The counts, largest first.
    """
    return ", ".join(f"{count:,} {reason}" for reason, count in bad.most_common())
