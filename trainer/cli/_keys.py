"""``edgepersona keys``: ``generate`` a key pair here; ``rotate`` lives in its own module."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgepersona.sdk import InputError
from edgepersona.trainer.cli import _rotate
from edgepersona.trainer.cli._args import Subparsers
from edgepersona.trainer.cli._render import console

__all__ = ["add_parser", "keys_generate"]


def add_parser(sub: Subparsers) -> None:
    """Add ``keys generate`` and ``keys rotate``.

    Args:
        sub: the root parser's sub-commands.
    """
    keys = sub.add_parser("keys", help="manage keys").add_subparsers(metavar="ACTION", required=True)
    gen = keys.add_parser("generate", help="create a key pair in a folder")
    gen.add_argument("--out", required=True, help="folder for the key files")
    gen.add_argument("--kind", choices=["signing", "collector"], default="signing",
                     help="signing: Ed25519 bundle key; collector: HPKE sync key")
    gen.add_argument("--hybrid", action="store_true",
                     help="collector key for the post-quantum ML-KEM-768 + X25519 suite")
    gen.set_defaults(handler=keys_generate)
    _rotate.add_parser(keys)


def keys_generate(args: argparse.Namespace) -> int:
    """``edgepersona keys generate``: a signing or collector key pair.

    Args:
        args: ``out``, ``kind`` and ``hybrid``.

    Returns:
        0 on success.
    """
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder for the key files")
    if args.kind == "collector":
        from edgepersona.trainer.release.keys import generate_collector_key

        private, public = generate_collector_key(out, hybrid=args.hybrid)
        console.print(f"collector key: {private} (keep it on the collector)\npublic: {public}"
                      " (configure devices with it)")
        return 0
    from edgepersona.trainer.release.keys import generate_signing_key

    private, public, kid = generate_signing_key(out)
    console.print(f"signing key {kid}\n  private: {private} (mode 0600, never ship it)\n"
                  f"  public:  {public} (give it to devices as --trusted-key)")
    return 0
