"""``edgepersona inspect``: the persona cards of a verified bundle."""

from __future__ import annotations

import argparse

from edgepersona.trainer.cli._args import Subparsers, add_trusted, open_bundle
from edgepersona.trainer.cli._render import print_cards, print_json

__all__ = ["add_parser", "inspect"]


def add_parser(sub: Subparsers) -> None:
    """Add ``inspect``.

    Args:
        sub: the root parser's sub-commands.
    """
    parser = sub.add_parser("inspect", help="show a verified bundle's persona cards")
    parser.add_argument("bundle", help="bundle folder or .zip")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_trusted(parser)
    parser.set_defaults(handler=inspect)


def inspect(args: argparse.Namespace) -> int:
    """``edgepersona inspect``: persona cards of a verified bundle.

    Args:
        args: ``bundle``, ``trusted_key`` and ``json``.

    Returns:
        0 on success.
    """
    manifest = open_bundle(args).manifest
    if args.json:
        print_json({"model_id": manifest.model_id, "version": manifest.version,
                    "metrics": manifest.metrics.model_dump(mode="json"),
                    "privacy": manifest.privacy.model_dump(mode="json"),
                    "personas": [c.model_dump(mode="json") for c in manifest.personas]})
    else:
        print_cards(manifest)
    return 0
