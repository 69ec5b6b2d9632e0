"""What people read about users: values in units they use, lifecycle stages, outcomes.

The model's features are decayed masses ("0.177 purchases"), right for
clustering and wrong for a slide. Persona cards show instead, per feature, a
plain measure recomputed from the raw events over the spec's period ``P``
(``period_days``, else the longest half-life rounded to 7, 14, 30, 60, 90, 180
or 365 days):

* ``count``: events in the last ``P`` days (all events when the feature does not decay);
* ``sum``: the sum of the property over the last ``P`` days (in the feature's unit);
* ``mean``: the property's average per event over the last ``P`` days (users
  without such an event are left out);
* ``distinct`` / ``active_days``: distinct values / UTC days in the last ``P`` days;
* ``recency_days``: days since the last event (users without one are left out).

Lifecycle stages, with ``S`` the short horizon (the spec's shortest half-life
rounded like ``P``, at most ``P / 2``) and ``r`` the days since the user's last
event: **new** (first event within the last ``S`` days), **active** (``r <=
S``), **at risk** (``S < r <= P``: was active in the period, quiet lately) and
**lapsed** (``r > P``).

For an aggregated table the measures are the table's own values and there is
no lifecycle (a table has no time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import Feature, FeatureSpec, Window
from edgepersona.sdk.protocol.spec import SECONDS_PER_DAY
from edgepersona.trainer.data.events import EventLog
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.data.vocabulary import humanise, singular

__all__ = ["STAGES", "Measure", "UserFacts", "feature_label", "horizons", "log_facts", "measures",
           "table_facts"]

F64 = npt.NDArray[np.float64]
STAGES = ("new", "active", "at risk", "lapsed")
_NICE_DAYS = np.array([1.0, 7.0, 14.0, 30.0, 60.0, 90.0, 180.0, 365.0])


@dataclass(frozen=True)
class Measure:
    """How one feature is shown: ``{label}: {prefix}{number}{suffix}{period}``.

    Attributes:
        label: what is measured, in plain words ("purchases").
        unit: the feature's unit, if any ("£", "items", "days").
        period: the window phrase (" in the last 90 days", " per purchase"), or "".
    """

    label: str
    unit: str | None
    period: str


@dataclass(frozen=True)
class UserFacts:
    """Per-user facts for persona cards (never released per user; cards hold persona means).

    Attributes:
        display: one row per user, one column per feature, in the units of
            :func:`measures`; NaN where a measure does not apply to the user.
        stage: lifecycle stage per user (an index into :data:`STAGES`), or None.
        outcome: whether each user reached the outcome, or None.
        outcome_name: the outcome event or column.
        period_days: ``P``; short_days: ``S``.
    """

    display: F64
    stage: npt.NDArray[np.int64] | None = None
    outcome: npt.NDArray[np.bool_] | None = None
    outcome_name: str | None = None
    period_days: float | None = None
    short_days: float | None = None


def _nice(days: float) -> float:
    """The round number of days closest to ``days`` (on a log scale)."""
    return float(_NICE_DAYS[np.argmin(np.abs(np.log(_NICE_DAYS / max(days, 1.0))))])


def horizons(spec: FeatureSpec) -> tuple[float, float]:
    """The short horizon ``S`` and the period ``P`` of a spec, in days.

    Args:
        spec: the feature spec.

    Returns:
        ``(S, P)`` with ``S <= P / 2`` (see the module docstring).
    """
    half_lives = [h for f in spec.features for h in f.window.half_lives_days]
    period = spec.period_days or (_nice(max(half_lives)) if half_lives else 90.0)
    short = _nice(min(half_lives)) if half_lives else period / 4.0
    return min(short, period / 2.0), period


def feature_label(spec: FeatureSpec, feature: Feature) -> str:
    """A feature's label in plain words: its own ``label``, else built from the vocabulary.

    Args:
        spec: the spec (its ``event_labels`` name events).
        feature: the feature.

    Returns:
        E.g. "order lines" for a count of ``purchase`` with ``{"purchase": "order lines"}``,
        "purchase value" for a sum, else the humanised feature name.
    """
    if feature.label:
        return feature.label
    event = spec.event_labels.get(feature.event)
    if event and feature.aggregate == "count":
        return event
    if event and feature.aggregate in ("sum", "mean") and feature.property == "value":
        return ("average " if feature.aggregate == "mean" else "") + f"{singular(event)} value"
    return humanise(feature.name)


def measures(spec: FeatureSpec) -> tuple[Measure, ...]:
    """How each feature of a spec is shown in cards (see the module docstring).

    Args:
        spec: the feature spec.

    Returns:
        One measure per feature, in spec order.
    """
    _, period = horizons(spec)
    last = f" in the last {period:g} days"
    out = []
    for feature in spec.features:
        label = feature_label(spec, feature)
        event = spec.event_labels.get(feature.event, feature.event)
        if feature.window.kind == "all_time" and feature.aggregate != "mean":
            period_phrase = ""  # all time (a table's own column, an undecayed count)
            out.append(Measure(label, feature.unit or ("days" if feature.aggregate ==
                                                       "recency_days" else None), period_phrase))
            continue
        period_phrase = {"count": last, "sum": last, "distinct": last, "active_days": last,
                         "mean": f" per {singular(event)}",
                         "recency_days": ""}[feature.aggregate]
        unit = feature.unit or ("days" if feature.aggregate == "recency_days" else None)
        out.append(Measure(label, unit, period_phrase))
    return tuple(out)


def _plain(feature: Feature) -> Feature:
    """The feature without decay, so it counts or sums plainly (recency is unchanged)."""
    return feature.model_copy(update={"window": Window(), "transform": "none"})


def _all_time(spec: FeatureSpec) -> list[int]:
    """Features shown over all the data: undecayed ones (their measure names no period)."""
    return [j for j, f in enumerate(spec.features)
            if f.window.kind == "all_time" and f.aggregate not in ("mean", "recency_days")]


def log_facts(log: EventLog, spec: FeatureSpec, at: float | None = None,
              outcome: str | None = None) -> UserFacts:
    """Per-user display values, lifecycle stages and outcomes from an event log.

    Args:
        log: the event log.
        spec: the feature spec.
        at: the reference time in unix seconds (default: the log's last event).
        outcome: an outcome event; a user reached it if they have one by ``at``.

    Returns:
        The facts, one entry per user of the log.
    """
    reference = float(log.time.max()) if at is None else float(at)
    short, period = horizons(spec)
    flags = None
    if outcome is not None:
        flags = np.zeros(log.n_users, dtype=bool)
        flags[log.user[(log.time <= reference) & (log.event == outcome)]] = True
    return UserFacts(_display(log, spec, reference, period),
                     _stages(log, reference, short, period), flags, outcome, period, short)


def _display(log: EventLog, spec: FeatureSpec, reference: float, period: float) -> F64:
    """Every feature's plain measure per user (see the module docstring)."""
    keep = (log.time > reference - period * SECONDS_PER_DAY) & (log.time <= reference)
    recent = EventLog(log.user[keep], log.time[keep], log.event[keep],
                      {k: v[keep] for k, v in log.properties.items()}, log.user_keys)
    plain = FeatureSpec(features=tuple(_plain(f) for f in spec.features),
                        distinct_cap=spec.distinct_cap)
    display = (compute_features(recent, plain, reference) if keep.any()
               else np.zeros((log.n_users, len(spec.features))))
    whole = _all_time(spec)
    if whole:
        display[:, whole] = compute_features(log, plain, reference)[:, whole]
    seen = log.time <= reference
    for j, feature in enumerate(spec.features):
        if feature.aggregate == "recency_days":
            mask = seen & _matches(log, feature)
            latest = np.full(log.n_users, -np.inf)
            np.maximum.at(latest, log.user[mask], log.time[mask])
            display[:, j] = np.where(np.isfinite(latest), (reference - latest) / SECONDS_PER_DAY,
                                     np.nan)
        elif feature.aggregate == "mean":
            events = np.bincount(recent.user[_matches(recent, feature)], minlength=log.n_users)
            display[:, j] = np.where(events > 0, display[:, j], np.nan)
    return display


def _stages(log: EventLog, reference: float, short: float, period: float
            ) -> npt.NDArray[np.int64]:
    """Each user's lifecycle stage (an index into STAGES; -1 without any event by then)."""
    seen = log.time <= reference
    last = np.full(log.n_users, -np.inf)
    first = np.full(log.n_users, np.inf)
    np.maximum.at(last, log.user[seen], log.time[seen])
    np.minimum.at(first, log.user[seen], log.time[seen])
    since_last = (reference - last) / SECONDS_PER_DAY
    stage = np.select([(reference - first) / SECONDS_PER_DAY <= short, since_last <= short,
                       since_last <= period], [0, 1, 2], default=3).astype(np.int64)
    stage[~np.isfinite(last)] = -1
    return stage


def _matches(log: EventLog, feature: Feature) -> npt.NDArray[np.bool_]:
    """The events a feature draws on (all of them for ``*``)."""
    if feature.event == "*":
        return np.ones(len(log.time), dtype=bool)
    return np.asarray(log.event == feature.event)


def table_facts(values: F64, outcome: npt.NDArray[np.bool_] | None = None,
                outcome_name: str | None = None) -> UserFacts:
    """Facts from an aggregated table: its own values; no lifecycle.

    Args:
        values: the table's feature columns, one row per user.
        outcome: whether each user reached the outcome, if an outcome column was named.
        outcome_name: the outcome column.

    Returns:
        The facts.
    """
    return UserFacts(np.asarray(values, dtype=np.float64), None, outcome, outcome_name)
