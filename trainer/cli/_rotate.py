"""``edgepersona keys rotate``: move devices from one bundle signing key to another.

The statement it writes is signed by the old key (which devices trust) and by
the new key (proof of possession); devices apply it with
``PersonaClient.rotate_key``. The format and the device-side checks are in
:mod:`edgepersona.sdk.protocol.rotation`.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edgepersona.sdk import InputError
from edgepersona.sdk.protocol.rotation import build_rotation_statement
from edgepersona.sdk.protocol.signing import key_id
from edgepersona.trainer.cli._args import Subparsers
from edgepersona.trainer.cli._render import console
from edgepersona.trainer.cli._types import days, positive_int

__all__ = ["add_parser", "keys_rotate"]

_MAX_VALID_DAYS = 36_500  # days


def add_parser(keys: Subparsers) -> None:
    """Add ``keys rotate``.

    Args:
        keys: the ``keys`` command's actions.
    """
    rotate = keys.add_parser("rotate", help="sign a statement moving devices to a new signing key")
    rotate.add_argument("--old", required=True, help="folder (or PEM file) of the key being retired")
    rotate.add_argument("--new", required=True, help="folder (or PEM file) of the key taking over")
    rotate.add_argument("--out", required=True, help="statement file to write (never overwritten)")
    rotate.add_argument("--counter", type=positive_int, required=True,
                        help="rotation number, greater than every earlier rotation's")
    rotate.add_argument("--expires-days", type=days, default=365.0,
                        help="days devices accept the statement (365)")
    rotate.set_defaults(handler=keys_rotate)


def keys_rotate(args: argparse.Namespace) -> int:
    """``edgepersona keys rotate``: write a key rotation statement.

    Args:
        args: ``old`` and ``new`` (key folders or PEM files), ``out`` (the
            statement file, never overwritten), ``counter`` and ``expires_days``.

    Returns:
        0 on success.

    Raises:
        InputError: a key cannot be loaded, the keys are the same, the counter
            or validity is out of range, or ``out`` already exists.
    """
    from edgepersona.trainer.release.keys import load_signing_key

    old, new = load_signing_key(Path(args.old)), load_signing_key(Path(args.new))
    if not 0 < args.expires_days <= _MAX_VALID_DAYS:
        raise InputError(f"--expires-days must be in (0, {_MAX_VALID_DAYS}], got {args.expires_days}")
    statement = build_rotation_statement(old, new, counter=args.counter, now=datetime.now(UTC),
                                         valid_for=timedelta(days=args.expires_days))
    out = Path(args.out)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise InputError(f"{out} already exists; choose another --out") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(statement)
    old_id, new_id = key_id(old.public_key()), key_id(new.public_key())
    console.print(f"key rotation #{args.counter}: {old_id} -> {new_id}, written to {out}\n"
                  "  1. ship this statement to devices (PersonaClient.rotate_key)\n"
                  f"  2. sign the next bundle with the new key (--key {args.new});"
                  f" devices will refuse bundles signed by {old_id} from then on")
    return 0
