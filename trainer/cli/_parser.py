"""The ``edgepersona`` argument parser, composed from one module per sub-command."""

from __future__ import annotations

import argparse

from edgepersona.trainer.cli import (
    _approve,
    _assign,
    _audit,
    _inspect,
    _keys,
    _quickstart,
    _refit,
    _report,
    _serve,
    _spec,
    _train,
    _verify,
)

__all__ = ["build_parser"]

# In the order ``--help`` lists them; each module owns its options and its handler.
_COMMANDS = (_keys, _spec, _train, _verify, _inspect, _assign, _refit, _approve, _report, _audit,
             _quickstart, _serve)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``edgepersona`` argument parser.

    Returns:
        The parser; each sub-command sets ``handler``.
    """
    root = argparse.ArgumentParser(prog="edgepersona", description=(
        "Privacy-first personas: train on the server, assign on the device."))
    root.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = root.add_subparsers(metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(sub)
    return root
