"""Argument types: each option's value is checked by argparse, before any work starts.

A bad value is a usage error (exit code 2) naming the option, what was expected
and what was given; nothing has been read or written yet.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

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


def _int_type(what: str, inside: Callable[[int], bool]) -> Callable[[str], int]:
    """An argparse type for a whole number ``what`` (e.g. "a whole number ≥ 1")."""
    def check(text: str) -> int:
        value = int(_number(text, int, what))
        if not inside(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    check.__doc__ = f"An argparse type: {what}."
    return check


def _float_type(what: str, inside: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse type for a finite number ``what`` (e.g. "a number in (0, 1)")."""
    def check(text: str) -> float:
        value = _number(text, float, what)
        if not inside(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    check.__doc__ = f"An argparse type: {what}."
    return check


positive_int = _int_type("a whole number ≥ 1", lambda v: v >= 1)
non_negative_int = _int_type("a whole number ≥ 0", lambda v: v >= 0)
positive_float = _float_type("a number > 0", lambda v: v > 0)
fraction = _float_type("a number in [0, 1)", lambda v: 0 <= v < 1)
probability = _float_type("a number in (0, 1)", lambda v: 0 < v < 1)
days = _float_type(f"days in (0, {_MAX_DAYS}]", lambda v: 0 < v <= _MAX_DAYS)
port = _int_type("a port in 0-65535", lambda v: 0 <= v <= 65_535)  # 0: any free port



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
