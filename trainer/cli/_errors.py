"""Exit codes and the one-line error every command prints instead of a traceback."""

from __future__ import annotations

__all__ = ["EXIT_AUDIT_FAILED", "EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "one_line"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUDIT_FAILED = 3


def one_line(exc: BaseException) -> str:
    """The error as one line, naming the type for errors that are not ours.

    Args:
        exc: the exception a command raised.

    Returns:
        The message to print after ``edgepersona: error:``.
    """
    from edgepersona.sdk import PersonaError

    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, PersonaError | FileNotFoundError | PermissionError | IsADirectoryError):
        return text
    if isinstance(exc, ModuleNotFoundError):
        return (f"{text}; this command needs the trainer extras:"
                " pip install 'edgepersona[trainer]'")
    return f"{type(exc).__name__}: {text} (run with --debug for the traceback)"
