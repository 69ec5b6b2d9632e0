"""What one tracked event may carry, checked before anything is folded (device and trainer).

The limits keep every folded accumulator finite and a subject's state small:
a number is finite and at most ``MAX_MAGNITUDE`` in absolute value, a string
property at most ``MAX_STRING_CHARS`` characters, an event name at most 128
and a property name at most 64 characters, at most ``MAX_PROPERTIES``
properties per event. :mod:`edgepersona.sdk.protocol.fold` explains why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import numpy as np

from edgepersona.sdk.errors import InputError

__all__ = [
    "MAX_MAGNITUDE",
    "MAX_PROPERTIES",
    "MAX_STRING_CHARS",
    "PropertyValue",
    "TimeInput",
    "check_event",
    "distinct_key",
    "numeric_property",
    "unix_seconds",
]

PropertyValue = float | int | str | None
TimeInput = float | int | str | datetime
"""A moment: unix seconds, an ISO 8601 string or a datetime (naive means UTC, as the CLI)."""
MAX_MAGNITUDE: Final = 1e200  # largest |number| accepted: ids up to any practical size, sums finite
MAX_STRING_CHARS: Final = 256  # characters in one string property value
MAX_PROPERTIES: Final = 64  # properties on one event
_MAX_EVENT_CHARS: Final = 128  # as FeatureSpec's event names
_MAX_KEY_CHARS: Final = 64  # as FeatureSpec's property names


def numeric_property(value: PropertyValue) -> float | None:
    """The number a sum or mean reads from a property value (device and trainer).

    Args:
        value: a number, a str or None.

    Returns:
        The float it denotes (numeric strings are parsed), or None when it is
        absent, not a number, NaN, infinite or beyond ``MAX_MAGNITUDE``: such an
        event does not enter the sum or mean.
    """
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if abs(number) <= MAX_MAGNITUDE else None


def distinct_key(value: PropertyValue) -> str:
    """The key a property value is counted under by distinct features (device and trainer).

    Args:
        value: a str or a number.

    Returns:
        The str itself, or ``repr(float(number))`` so ``3`` and ``3.0`` are one value.
    """
    return value if isinstance(value, str) else repr(float(value or 0.0))


def check_event(event: object, value: object, at: object,
                properties: Mapping[str, object] | None) -> dict[str, PropertyValue]:
    """Validate one ``track`` call before anything is folded.

    Args:
        event: the event name.
        value: the numeric value, or None.
        at: the event time in unix seconds.
        properties: extra properties, or None.

    Returns:
        The properties to fold, ``value`` included under the key ``"value"``.

    Raises:
        InputError: a wrong type, a NaN/inf number or one beyond ``MAX_MAGNITUDE``,
            a negative time, or a name, string or property count over its limit.
    """
    if not isinstance(event, str) or not event:
        raise InputError(f"event must be a non-empty str, got {event!r}")
    if len(event) > _MAX_EVENT_CHARS:
        raise InputError(f"event name must be at most {_MAX_EVENT_CHARS} characters,"
                         f" got {len(event)}")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at) or at < 0:
        raise InputError(f"event time must be finite unix seconds >= 0, got {at!r}")
    props: dict[str, PropertyValue] = {}
    if properties:
        if len(properties) > MAX_PROPERTIES:
            raise InputError(f"an event carries at most {MAX_PROPERTIES} properties,"
                             f" got {len(properties)}")
        for key, item in properties.items():
            if not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY_CHARS:
                raise InputError(f"property names must be str of 1 to {_MAX_KEY_CHARS}"
                                 f" characters, got {str(key)[:_MAX_KEY_CHARS]!r}...")
            props[key] = _check_property(key, item)
    if value is not None:
        props["value"] = _check_property("value", value)
        if isinstance(props["value"], str):
            raise InputError(f"value must be a finite number, got {value!r}")
    return props


def _check_property(key: str, item: object) -> PropertyValue:
    """Accept bounded numbers, short strings and None; refuse the rest with the reason."""
    if item is None:
        return item
    if isinstance(item, str):
        if len(item) > MAX_STRING_CHARS:
            raise InputError(f"property {key!r} is {len(item)} characters long; string"
                             f" properties are limited to {MAX_STRING_CHARS} characters")
        return item
    if isinstance(item, bool) or not isinstance(item, int | float | np.floating | np.integer):
        raise InputError(f"property {key!r} must be a number, str or None, got {type(item).__name__}")
    try:
        number = float(item)
    except OverflowError:  # an int beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise InputError(f"property {key!r} must be finite, got {item!r}")
    if abs(number) > MAX_MAGNITUDE:
        raise InputError(f"property {key!r} is {number:g}; numbers are limited to"
                         f" ±{MAX_MAGNITUDE:g} so sums stay finite (rescale the unit)")
    return number


def unix_seconds(at: object) -> float:
    """Unix seconds from a number, an ISO 8601 string or a datetime (naive means UTC).

    Args:
        at: unix seconds (returned as given; checked where used), an ISO 8601
            string such as ``"2026-12-04T17:00:00Z"``, or a datetime.

    Returns:
        The moment in unix seconds.

    Raises:
        InputError: a string that is not ISO 8601, or another type.
    """
    if isinstance(at, int | float) and not isinstance(at, bool):
        return at
    moment = at
    if isinstance(at, str):
        try:
            moment = datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"time {at!r} is not ISO 8601 (e.g. '2026-12-04T17:00:00Z');"
                             " pass unix seconds, an ISO 8601 string or a datetime") from None
    if not isinstance(moment, datetime):
        raise InputError(f"time must be unix seconds, an ISO 8601 string or a datetime,"
                         f" got {type(at).__name__}")
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
