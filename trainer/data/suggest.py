"""Zero-configuration feature specs, proposed from an event log or a table.

For an event log: one decayed count per frequent event type (at least 1% of
events, at most 6 types), the sum and mean of ``value`` where events carry
one, the distinct count of every extra property column on the most frequent
event, active days and days since the last event. Windows blend 60% of a short
half-life (a twelfth of the log's span) with 40% of a long one (half the
span). Bounds come from the 1st and 99th percentiles of the computed features
and are flagged ``bounds_source = "data"``: fine for a first look, a privacy
leak under differential privacy, so declare them before a real release.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import Feature, FeatureSpec, InputError, Window
from edgepersona.trainer.data.events import EventLog
from edgepersona.trainer.data.features import compute_features

__all__ = ["suggest_spec", "suggest_table_spec"]

_MAX_EVENT_TYPES = 6
_MIN_EVENT_SHARE = 0.01
_WIDE = (0.0, 1e300)
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _window(log: EventLog) -> Window:
    """A short/long blend scaled to the log's time span."""
    span_days = max(1.0, float(log.time.max() - log.time.min()) / 86_400.0)
    short = max(1.0, round(span_days / 12.0))
    long = max(2.0 * short, round(span_days / 2.0))
    return Window.blend((0.6, short), (0.4, long))


def _slug(text: str) -> str:
    """A valid feature-name fragment from any event or column name (ASCII, no leading digit)."""
    ascii_text = text.lower().encode("ascii", "ignore").decode("ascii")
    slug = "_".join(part for part in "".join(c if c.isalnum() else " " for c in ascii_text).split())
    return (slug if slug and not slug[0].isdigit() else f"f_{slug}")[:40]


def _unique(features: list[Feature]) -> list[Feature]:
    """Rename features whose names collide after slugging (``_2``, ``_3``, ...)."""
    seen: dict[str, int] = {}
    out = []
    for feature in features:
        seen[feature.name] = seen.get(feature.name, 0) + 1
        if seen[feature.name] > 1:
            feature = feature.model_copy(update={"name": f"{feature.name}_{seen[feature.name]}"})
        out.append(feature)
    return out


def _draft_features(log: EventLog) -> list[Feature]:
    """Features with placeholder bounds; bounds are filled from the data afterwards."""
    window = _window(log)
    counts = Counter(log.event.tolist())
    frequent = [e for e, c in counts.most_common(_MAX_EVENT_TYPES)
                if c >= _MIN_EVENT_SHARE * len(log.event) and len(e) <= 128]
    features: list[Feature] = []
    values = log.properties["value"]
    for event in frequent:
        slug = _slug(event)
        features.append(Feature(name=f"{slug}_count", event=event, aggregate="count",
                                window=window, transform="log1p", bounds=_WIDE,
                                label=f"'{event}' events", high_name=f"Frequent '{event}'",
                                low_name=f"Rare '{event}'"))
        has_values = np.isfinite(values[log.event == event])
        if has_values.any():
            features.append(Feature(name=f"{slug}_value", event=event, property="value",
                                    aggregate="sum", window=window, bounds=_WIDE,
                                    label=f"'{event}' value", high_name=f"High '{event}' value",
                                    low_name=f"Low '{event}' value"))
            features.append(Feature(name=f"{slug}_avg_value", event=event, property="value",
                                    aggregate="mean", window=window, bounds=_WIDE,
                                    label=f"average '{event}' value",
                                    high_name=f"Big-ticket '{event}'",
                                    low_name=f"Small-ticket '{event}'"))
    top = frequent[0] if frequent else "*"
    for prop in sorted(p for p in log.properties if p != "value" and 0 < len(p) <= 64):
        features.append(Feature(name=f"distinct_{_slug(prop)}", event=top, property=prop,
                                aggregate="distinct", window=window, transform="log1p",
                                bounds=_WIDE, label=f"distinct {prop} values",
                                high_name=f"Many {prop} values", low_name=f"Few {prop} values"))
    features.append(Feature(name="active_days", event="*", aggregate="active_days",
                            window=window, bounds=_WIDE, label="active days",
                            high_name="Regulars", low_name="Occasional visitors"))
    features.append(Feature(name="days_since_last", event="*", aggregate="recency_days",
                            bounds=_WIDE, label="days since last activity",
                            high_name="Lapsed", low_name="Recently active"))
    return _unique(features)


def _with_bounds(features: list[Feature], rows: npt.NDArray[np.float64]) -> FeatureSpec:
    """Replace placeholder bounds by robust quantiles and mark them data-derived."""
    final = []
    for j, feature in enumerate(features):
        column = rows[:, j]
        low = min(float(np.quantile(column, 0.01)), 0.0)
        if feature.transform == "log1p":
            low = max(low, 0.0)
        high = float(np.quantile(column, 0.99))
        if high <= low:
            high = low + 1.0
        final.append(feature.model_copy(update={"bounds": (low, high), "bounds_source": "data"}))
    return FeatureSpec(features=tuple(final))


def suggest_spec(log: EventLog, at: float | None = None) -> FeatureSpec:
    """Propose a spec for an event log (see the module docstring).

    Args:
        log: the event log.
        at: the reference time for the bound quantiles (default: last event).

    Returns:
        The proposed spec; its bounds are data-derived.

    Raises:
        InputError: the log holds no usable events.
    """
    if len(log.time) == 0:
        raise InputError("cannot suggest a spec from an empty event log")
    draft = _draft_features(log)
    rows = compute_features(log, FeatureSpec(features=tuple(draft)), at)
    return _with_bounds(draft, rows)


def suggest_table_spec(columns: dict[str, npt.NDArray[np.float64]]) -> FeatureSpec:
    """Propose a spec for an aggregated table: one feature per numeric column.

    Skewed non-negative columns (99th percentile over 10x the median) get log1p.

    Args:
        columns: column name → finite values.

    Returns:
        The proposed spec; its bounds are data-derived.

    Raises:
        InputError: there is no numeric column.
    """
    columns = {n: v for n, v in columns.items() if _COLUMN_NAME.fullmatch(n)}
    if not columns:
        raise InputError("the table has no numeric column whose name is a valid feature name"
                         " (letters, digits, _; not starting with a digit)")
    features = []
    for name, values in columns.items():
        skewed = values.min() >= 0 and np.quantile(values, 0.99) > 10 * max(np.median(values), 1e-9)
        features.append(Feature(name=name, event=name, property="value", aggregate="sum",
                                transform="log1p" if skewed else "none", bounds=_WIDE))
    return _with_bounds(features, np.column_stack(list(columns.values())))
