"""The ``edgepersona`` command line.

Every command prints one clear line and exits non-zero on error; ``--debug``
shows the traceback. Heavy imports (scikit-learn, onnx) happen inside the
commands that need them, so ``verify`` and ``inspect`` work on an SDK-only
install.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from edgepersona.trainer.cli._parser import build_parser

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The process exit code (also used by the console script).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("edgepersona: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"edgepersona: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _one_line(exc: BaseException) -> str:
    """The error as one line, naming the type for errors that are not ours."""
    from edgepersona.sdk import PersonaError

    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, PersonaError | FileNotFoundError | PermissionError | IsADirectoryError):
        return text
    if isinstance(exc, ModuleNotFoundError):
        return (f"{text}; this command needs the trainer extras:"
                " pip install 'edgepersona[trainer]'")
    return f"{type(exc).__name__}: {text} (run with --debug for the traceback)"
