"""``edgepersona approve``: publish a refit that the drift gate held back for review."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgepersona.trainer.cli._args import Subparsers
from edgepersona.trainer.cli._render import console

__all__ = ["add_parser", "approve"]


def add_parser(sub: Subparsers) -> None:
    """Add ``approve``.

    Args:
        sub: the root parser's sub-commands.
    """
    parser = sub.add_parser("approve", help="publish a refit held back by the drift gate")
    parser.add_argument("bundle", help="the refit's bundle folder")
    parser.set_defaults(handler=approve)


def approve(args: argparse.Namespace) -> int:
    """Approve a refit that the drift gate held back.

    Args:
        args: ``bundle``, the refit's folder.

    Returns:
        0, whether or not the refit was waiting.
    """
    from edgepersona.trainer.release.refit import approve_bundle

    folder = Path(args.bundle)
    if approve_bundle(folder):
        console.print(f"approved {folder}: the collector serves it from the next request")
    else:
        console.print(f"{folder} was not waiting for review; nothing to do")
    return 0
