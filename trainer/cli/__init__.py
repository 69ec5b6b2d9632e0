"""The ``edgepersona`` command line.

Every command prints one clear line and exits non-zero on error; ``--debug``
shows the traceback. Heavy imports (scikit-learn, onnx) happen inside the
commands that need them, so ``verify`` and ``inspect`` work on an SDK-only
install.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from edgepersona.trainer.cli._errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE, one_line
from edgepersona.trainer.cli._parser import build_parser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The process exit code (also used by the console script); the table is
        in ``edgepersona --help``.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help (0) or a usage error (2), already printed by argparse
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("edgepersona: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_went_away()
    except Exception as exc:
        if args.debug:
            raise
        print(f"edgepersona: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _reader_went_away() -> int:
    """Stop quietly when stdout's reader has closed (``assign --json | head``), as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
    except (OSError, ValueError):  # stdout is not a file (captured in-process)
        pass
    return EXIT_OK
