"""Argument types: each option's value is checked by argparse, before any work starts.

A bad value is a usage error (exit code 2) naming the option, what was expected
and what was given; nothing has been read or written yet.
"""

from __future__ import annotations

import argparse
import math
import re

from edgepersona.sdk import InputError
from edgepersona.trainer.cli._args import parse_at

__all__ = [
    "budget",
    "days",
    "fraction",
    "k_or_auto",
    "k_range",
    "model_id",
    "moment",
    "non_negative_int",
    "port",
    "positive_float",
    "positive_floats",
    "positive_int",
    "probability",
]


_MAX_DAYS = 36_500  # days; validity beyond a century is a typo


def _number(text: str, kind: type[int] | type[float], what: str) -> float:
    """``text`` as a finite int or float, or a usage error saying what was expected."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number ≥ 1.

    Args:
        text: the option's value.

    Returns:
        The number.

    Raises:
        argparse.ArgumentTypeError: it is not one.
    """
    value = int(_number(text, int, "a whole number ≥ 1"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number ≥ 0.

    Args:
        text: the option's value.

    Returns:
        The number.

    Raises:
        argparse.ArgumentTypeError: it is not one.
    """
    value = int(_number(text, int, "a whole number ≥ 0"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0.

    Args:
        text: the option's value.

    Returns:
        The number.

    Raises:
        argparse.ArgumentTypeError: it is not one.
    """
    value = _number(text, float, "a number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1).

    Args:
        text: the option's value.

    Returns:
        The number.

    Raises:
        argparse.ArgumentTypeError: it is not one.
    """
    value = _number(text, float, "a number in [0, 1)")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def probability(text: str) -> float:
    """An argparse type: a number in (0, 1), such as DP's δ.

    Args:
        text: the option's value.

    Returns:
        The number.

    Raises:
        argparse.ArgumentTypeError: it is not one.
    """
    value = _number(text, float, "a number in (0, 1)")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def days(text: str) -> float:
    """An argparse type: a validity in days, in (0, 36500].

    Args:
        text: the option's value.

    Returns:
        The number of days.

    Raises:
        argparse.ArgumentTypeError: it is out of range.
    """
    value = _number(text, float, f"days in (0, {_MAX_DAYS}]")
    if not 0 < value <= _MAX_DAYS:
        raise argparse.ArgumentTypeError(f"expected days in (0, {_MAX_DAYS}], got {text!r}")
    return value


def k_or_auto(text: str) -> int | str:
    """An argparse type: ``auto`` or a number of personas ≥ 2.

    Args:
        text: the option's value.

    Returns:
        ``"auto"`` or the number.

    Raises:
        argparse.ArgumentTypeError: it is neither.
    """
    if text == "auto":
        return text
    what = "a number of personas ≥ 2 or 'auto'"
    value = int(_number(text, int, what)) if text.strip().lstrip("-").isdigit() else None
    if value is None or value < 2:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def k_range(text: str) -> tuple[int, int]:
    """An argparse type: ``LOW,HIGH`` candidates for auto k, 2 ≤ LOW ≤ HIGH.

    Args:
        text: the option's value.

    Returns:
        (low, high).

    Raises:
        argparse.ArgumentTypeError: it is not such a pair.
    """
    parts = text.split(",")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        low, high = int(parts[0]), int(parts[1])
        if 2 <= low <= high:
            return low, high
    raise argparse.ArgumentTypeError(f"expected LOW,HIGH with 2 ≤ LOW ≤ HIGH (e.g. 3,8), got {text!r}")


def positive_floats(text: str) -> list[float]:
    """An argparse type: comma-separated numbers > 0 (``--epsilon-sweep 0.5,1,2``).

    Args:
        text: the option's value.

    Returns:
        The numbers.

    Raises:
        argparse.ArgumentTypeError: one of them is not a number > 0.
    """
    try:
        return [positive_float(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers > 0 (e.g. 0.5,1,2), got {text!r}") from None


def budget(text: str) -> tuple[float, float]:
    """An argparse type: ``EPS[,DELTA]``, a total privacy budget (δ defaults to 1e-5).

    Args:
        text: the option's value.

    Returns:
        (ε, δ).

    Raises:
        argparse.ArgumentTypeError: ε is not > 0 or δ not in (0, 1).
    """
    parts = text.split(",")
    try:
        if len(parts) > 2:
            raise argparse.ArgumentTypeError(text)
        return positive_float(parts[0]), probability(parts[1]) if len(parts) == 2 else 1e-5
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected EPS[,DELTA] with EPS > 0 and DELTA in (0, 1), got {text!r}") from None


def moment(text: str) -> float:
    """An argparse type: a time as ISO 8601 (naive means UTC) or unix seconds.

    Args:
        text: the option's value.

    Returns:
        Unix seconds.

    Raises:
        argparse.ArgumentTypeError: it is neither.
    """
    try:
        value = parse_at(text)
    except InputError:
        value = None
    if value is None:
        raise argparse.ArgumentTypeError(f"expected ISO 8601 or unix seconds, got {text!r}")
    return value


def port(text: str) -> int:
    """An argparse type: a TCP port, 0-65535 (0: any free port).

    Args:
        text: the option's value.

    Returns:
        The port.

    Raises:
        argparse.ArgumentTypeError: it is out of range.
    """
    value = int(_number(text, int, "a port in 0-65535"))
    if not 0 <= value <= 65_535:
        raise argparse.ArgumentTypeError(f"expected a port in 0-65535, got {text!r}")
    return value


_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # the manifest's model_id rule


def model_id(text: str) -> str:
    """An argparse type: a model name the manifest accepts (letters, digits, ``.``, ``_``, ``-``).

    Args:
        text: the option's value.

    Returns:
        The name.

    Raises:
        argparse.ArgumentTypeError: the manifest would refuse it.
    """
    if not _MODEL_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            "expected 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit,"
            f" got {text!r}")
    return text
