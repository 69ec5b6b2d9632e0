"""Batch feature rows from an event log: the trainer's side of the feature spec.

Computes, vectorised over all users, exactly the aggregates the device folds
one event at a time (:mod:`edgepersona.sdk.protocol.fold`); a property test holds the
two to a relative difference of 1e-9. The device's limits hold here too, so every
feature stays finite: a number beyond ±1e200 or a string over 256 characters in a
property a feature reads is refused with :class:`InputError` (the device refuses
such an event the same way); a numeric string beyond ±1e200 counts as no number.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import Feature, FeatureSpec, InputError
from edgepersona.sdk.protocol.fold import (
    MAX_MAGNITUDE,
    MAX_STRING_CHARS,
    decay_rate,
    distinct_key,
    numeric_property,
)
from edgepersona.sdk.protocol.spec import SECONDS_PER_DAY
from edgepersona.trainer.data.events import EventLog

__all__ = ["compute_features"]

F64 = npt.NDArray[np.float64]


def compute_features(log: EventLog, spec: FeatureSpec, at: float | None = None) -> F64:
    """One raw feature row per user of the log, evaluated at a reference time.

    Args:
        log: the event log.
        spec: the feature spec.
        at: reference time in unix seconds (default: the log's last timestamp).
            Events after it are left out.

    Returns:
        Shape (users, features), float64, in spec order.

    Raises:
        InputError: the log is empty, ``at`` is not finite, or a property a
            feature reads holds a number beyond ±1e200 or a string over 256 characters.
    """
    if len(log.time) == 0:
        raise InputError("the event log has no usable events; check the bad-row report")
    reference = float(log.time.max()) if at is None else float(at)
    if not math.isfinite(reference):
        raise InputError(f"reference time must be finite unix seconds, got {at!r}")
    in_window = log.time <= reference
    out = np.zeros((log.n_users, len(spec.features)), dtype=np.float64)
    for j, feature in enumerate(spec.features):
        mask = in_window & (True if feature.event == "*" else log.event == feature.event)
        out[:, j] = _feature_column(log, feature, mask, reference, spec.distinct_cap)
    return out


def _kernel(feature: Feature, age_seconds: F64) -> F64:
    """Window weight of each event, summed per component like the device does."""
    weights = np.zeros_like(age_seconds)
    for mix, half_life in feature.window.components():
        weights += mix * np.exp(-decay_rate(half_life) * age_seconds)
    return weights


def _feature_column(log: EventLog, feature: Feature, mask: npt.NDArray[np.bool_],
                    reference: float, cap: int) -> F64:
    """One feature for every user."""
    n = log.n_users
    users, times = log.user[mask], log.time[mask]
    if feature.aggregate == "recency_days":
        last = np.full(n, -np.inf)
        np.maximum.at(last, users, times)
        return np.where(np.isfinite(last), (reference - last) / SECONDS_PER_DAY, feature.bounds[1])
    if feature.aggregate == "active_days":
        days = np.floor(times / SECONDS_PER_DAY).astype(np.int64)
        return _distinct(feature, users, times, days, n, reference, cap)
    raw = log.properties.get(feature.property) if feature.property else None
    if feature.aggregate == "distinct":
        if raw is None:
            return np.zeros(n)
        cells = raw[mask]
        _check_strings(cells, str(feature.property))
        present = np.array([c is not None and not _is_nan(c) for c in cells], dtype=bool)
        keys = np.array([_key(c) for c in cells[present]], dtype=str)
        return _distinct(feature, users[present], times[present], keys, n, reference, cap)
    values = np.ones(len(times))
    if feature.property is not None:
        values = _numeric(raw[mask] if raw is not None else None, len(times), feature.property)
        present = np.isfinite(values)
        users, times, values = users[present], times[present], values[present]
    anchor = np.full(len(times), reference)
    if feature.aggregate == "mean" and len(feature.window.components()) == 1:
        # As on the device: decay from each user's latest event, where it cancels in
        # the ratio, so a user away for 1,000+ half-lives does not underflow to 0/0.
        latest = np.full(n, -np.inf)
        np.maximum.at(latest, users, times)
        anchor = latest[users]
    weights = _kernel(feature, anchor - times)
    count = np.bincount(users, weights=weights, minlength=n).astype(np.float64)
    if feature.aggregate == "count":
        return count
    total = np.bincount(users, weights=weights * values, minlength=n).astype(np.float64)
    if feature.aggregate == "sum":
        return total
    return np.divide(total, count, out=np.zeros(n), where=count > 0)


def _check_magnitude(values: F64, name: str) -> None:
    """Refuse numbers the device refuses: beyond ±MAX_MAGNITUDE a sum could overflow."""
    beyond = int(np.count_nonzero(np.isfinite(values) & (np.abs(values) > MAX_MAGNITUDE)))
    if beyond:
        raise InputError(
            f"property {name!r} has {beyond} value(s) beyond ±{MAX_MAGNITUDE:g};"
            " numbers are limited so every sum stays finite: rescale the unit or drop those rows")


def _check_strings(cells: npt.NDArray[Any], name: str) -> None:
    """Refuse string values the device refuses (over MAX_STRING_CHARS characters)."""
    long = sum(1 for c in cells if isinstance(c, str) and len(c) > MAX_STRING_CHARS)
    if long:
        raise InputError(f"property {name!r} has {long} string value(s) over {MAX_STRING_CHARS}"
                         " characters, the limit of a string property; shorten or drop them")


def _is_nan(cell: Any) -> bool:
    """True for a float NaN cell (missing numeric property)."""
    return isinstance(cell, float) and math.isnan(cell)


def _key(cell: Any) -> str:
    """The distinct-count key of a property value, as the device computes it."""
    if isinstance(cell, str):
        return cell
    if isinstance(cell, int | float | np.integer | np.floating) and not isinstance(cell, bool):
        return distinct_key(float(cell))
    return str(cell)


def _numeric(raw: npt.NDArray[Any] | None, n: int, name: str) -> F64:
    """Property values as floats; NaN where absent or not a number (numbers beyond the limit refused)."""
    if raw is None:
        return np.full(n, np.nan)
    if raw.dtype.kind == "f":
        _check_magnitude(raw, name)
        return raw.astype(np.float64)
    out = np.full(n, np.nan)
    numbers = [_magnitude(c) for c in raw
               if isinstance(c, int | float | np.integer | np.floating) and not isinstance(c, bool)]
    _check_magnitude(np.asarray(numbers, dtype=np.float64), name)
    for i, cell in enumerate(raw):
        number = numeric_property(cell) if not isinstance(cell, bool) else None
        if number is not None:
            out[i] = number
    return out


def _magnitude(number: Any) -> float:
    """``abs(number)`` as a float; inf for an int beyond float range."""
    try:
        return abs(float(number))
    except OverflowError:
        return math.inf


def _distinct(feature: Feature, users: npt.NDArray[np.int64], times: F64,
              keys: npt.NDArray[Any], n: int, reference: float, cap: int) -> F64:
    """Σ window weight of each distinct key's latest time, keeping the ``cap`` most recent."""
    if len(users) == 0:
        return np.zeros(n)
    _, key_rank = np.unique(keys, return_inverse=True)
    order = np.lexsort((-times, key_rank, users))  # per (user, key): latest time first
    u, k, t = users[order], key_rank[order], times[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (k[1:] != k[:-1])
    u, k, t = u[first], k[first], t[first]
    order = np.lexsort((-k, -t, u))  # per user: most recent first, larger key first on ties
    u, t = u[order], t[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    rank = np.arange(len(u)) - np.repeat(starts, np.diff(np.r_[starts, len(u)]))
    keep = rank < cap
    if feature.window.kind == "all_time":
        return np.bincount(u[keep], minlength=n).astype(np.float64)
    weights = _kernel(feature, reference - t[keep])
    return np.bincount(u[keep], weights=weights, minlength=n).astype(np.float64)
