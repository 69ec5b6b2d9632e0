"""Exit codes and the one-line error every command prints instead of a traceback."""

from __future__ import annotations

__all__ = ["EXIT_AUDIT_FAILED", "EXIT_CODES_EPILOG", "EXIT_ERROR", "EXIT_OK", "EXIT_USAGE",
           "one_line"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUDIT_FAILED = 3

EXIT_CODES_EPILOG = """exit codes:
  0  success (also when the reader closes the output early, as `| head` does)
  1  error: one line on stderr says what was expected and what to do (--debug: traceback)
  2  usage: a missing or invalid option or argument; nothing was read or written
  3  audit failed: `edgepersona audit` ran and at least one check failed"""

# The extra that provides each optional top-level module, for "pip install" advice.
_EXTRA_OF = {"fastapi": "server", "uvicorn": "server", "psycopg": "server", "starlette": "server",
             "dask": "dask", "distributed": "dask", "matplotlib": "bench"}


def one_line(exc: BaseException) -> str:
    """The error as one line, naming the type for errors that are not ours.

    Args:
        exc: the exception a command raised.

    Returns:
        The message to print after ``edgepersona: error:``.
    """
    from edgepersona.sdk import PersonaError

    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, PersonaError):
        return text
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        target = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        return f"cannot use {exc.filename}{target}: {exc.strerror.lower()}"
    if isinstance(exc, ModuleNotFoundError):
        extra = _EXTRA_OF.get((exc.name or "").partition(".")[0], "trainer")
        return (f"{text}; this command needs the {extra} extra:"
                f" pip install 'edgepersona[{extra}]'")
    summary = _validation_summary(exc)
    if summary is not None:
        return summary
    return f"{type(exc).__name__}: {text} (run with --debug for the traceback)"


def _validation_summary(exc: BaseException) -> str | None:
    """A pydantic validation error as field names and reasons, never the rejected values."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return None
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
                         for e in exc.errors(include_input=False, include_url=False))
    return f"invalid {exc.title}: {problems}"
