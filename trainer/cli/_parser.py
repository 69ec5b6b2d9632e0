"""The ``edgepersona`` argument parser, composed from one module per sub-command."""

from __future__ import annotations

import argparse
from typing import NoReturn

from edgepersona.trainer.cli import (
    _approve,
    _assign,
    _audit,
    _inspect,
    _keys,
    _quickstart,
    _refit,
    _report,
    _schedule,
    _serve,
    _spec,
    _train,
    _verify,
)
from edgepersona.trainer.cli._errors import EXIT_CODES_EPILOG, EXIT_USAGE

__all__ = ["build_parser"]

# In the order ``--help`` lists them; each module owns its options and its handler.
_COMMANDS = (_keys, _spec, _train, _verify, _inspect, _assign, _refit, _schedule, _approve, _report,
             _audit, _quickstart, _serve)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``edgepersona`` argument parser.

    Returns:
        The parser; each sub-command sets ``handler``. ``--debug`` is accepted
        before or after the sub-command, and ``--help`` ends with the exit codes.
    """
    root = _Parser(prog="edgepersona", description=(
        "Privacy-first personas: train on the server, assign on the device."),
        epilog=EXIT_CODES_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    root.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = root.add_subparsers(metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(sub)
    for parser in _commands_of(root):
        # SUPPRESS: a sub-command without --debug leaves the root's value alone.
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="show tracebacks on errors")
        parser.epilog = parser.epilog or EXIT_CODES_EPILOG
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return root


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line that points at ``--help``."""

    def error(self, message: str) -> NoReturn:
        """Print one line and exit with the usage code (2); nothing has been read or written.

        Args:
            message: argparse's description of the problem.
        """
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _commands_of(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every sub-command parser under ``parser``, at any depth (``keys generate``)."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found.append(child)
                found.extend(_commands_of(child))
    return found
