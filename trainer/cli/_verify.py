"""``edgepersona verify``: check a bundle's signature, file digests and expiry."""

from __future__ import annotations

import argparse
from datetime import UTC

from edgepersona.trainer.cli._args import Subparsers, add_trusted, open_bundle
from edgepersona.trainer.cli._render import console

__all__ = ["add_parser", "verify"]


def add_parser(sub: Subparsers) -> None:
    """Add ``verify``.

    Args:
        sub: the root parser's sub-commands.
    """
    parser = sub.add_parser("verify", help="verify a bundle's signature, hashes and expiry")
    parser.add_argument("bundle", help="bundle folder or .zip")
    add_trusted(parser)
    parser.set_defaults(handler=verify)


def verify(args: argparse.Namespace) -> int:
    """``edgepersona verify``: check signature, hashes and expiry.

    Args:
        args: ``bundle`` and ``trusted_key``.

    Returns:
        0 when the bundle verifies (otherwise the verification error is raised).
    """
    manifest = open_bundle(args).manifest
    console.print(f"OK: {manifest.model_id} v{manifest.version}, signed by a trusted key,"
                  f" {len(manifest.files)} file(s) match their digests, expires"
                  f" {manifest.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC")
    return 0
