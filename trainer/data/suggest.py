"""Zero-configuration feature specs, proposed from an event log or a table.

For an event log: one decayed count per frequent event type (at least 1% of
events, at most 6 types), the sum and mean of ``value`` where events carry
one, the distinct count of every extra property column on the most frequent
event, active days and days since the last event. Windows blend 60% of a short
half-life (a twelfth of the log's span) with 40% of a long one (half the
span). Names and labels are plain words ("purchases", "Frequent buyers"), and
the spec's ``event_labels`` hold the humanised event names for reports.

Features that are the same for every user, or move in lockstep with an earlier
one over users (``|r| >= 0.98``), are dropped: they would count one behaviour
twice. "Not yet determined" is on: ``min_events`` from the typical user's event
count, ``min_confidence`` from a trial fit. Bounds are coarse round numbers
chosen from noisy quantiles (:mod:`edgepersona.trainer.data.bounds`), flagged
``bounds_source = "coarse"``. Every such decision is written in the spec's
``notes``.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import Feature, FeatureSpec, InputError, Window
from edgepersona.trainer.data.bounds import BOUND_EPSILON, coarse_bounds
from edgepersona.trainer.data.events import EventLog
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.data.vocabulary import (
    actor_noun,
    humanise,
    is_money_event,
    is_order_id,
    plural,
    singular,
)

__all__ = ["DUPLICATE_R", "drop_duplicates", "suggest_min_confidence", "suggest_spec",
           "suggest_table_spec"]

F64 = npt.NDArray[np.float64]
DUPLICATE_R = 0.98  # |correlation over users| at which two features count as one
_CODE_WORDS = {"region", "channel", "type", "browser", "system", "systems", "country", "code",
               "category", "segment", "group", "class", "gender", "id", "zip", "postcode"}

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


def _event_phrases(event: str, noun: str) -> dict[str, tuple[str, str, str]]:
    """(label, high name, low name) of an event's count, value sum and mean, in plain words."""
    actor = actor_noun(event)
    item = singular(noun)
    money = is_money_event(event)
    return {
        "count": (noun, f"Frequent {actor}" if actor else f"Many {noun}",
                  f"Occasional {actor}" if actor else f"Few {noun}"),
        "sum": (f"{item} value", "Big spenders" if money else f"High {item} value",
                "Small spenders" if money else f"Low {item} value"),
        "mean": (f"average {item} value",
                 f"Big-ticket {actor}" if actor else f"High average {item} value",
                 f"Small-ticket {actor}" if actor else f"Low average {item} value"),
    }


def _draft_features(log: EventLog, exclude: tuple[str, ...] = ()) -> list[Feature]:
    """Features with placeholder bounds; bounds are filled from the data afterwards."""
    window = _window(log)
    counts = Counter(e for e in log.event.tolist() if e not in exclude)
    frequent = [e for e, c in counts.most_common(_MAX_EVENT_TYPES)
                if c >= _MIN_EVENT_SHARE * len(log.event) and len(e) <= 128]
    features: list[Feature] = []
    values = log.properties["value"]
    for event in frequent:
        slug, phrases = _slug(event), _event_phrases(event, plural(humanise(event)))
        label, high, low = phrases["count"]
        features.append(Feature(name=f"{slug}_count", event=event, aggregate="count",
                                window=window, transform="log1p", bounds=_WIDE,
                                label=label, high_name=high, low_name=low))
        if np.isfinite(values[log.event == event]).any():
            for aggregate, suffix in (("sum", "value"), ("mean", "avg_value")):
                label, high, low = phrases[aggregate]
                features.append(Feature(name=f"{slug}_{suffix}", event=event, property="value",
                                        aggregate=aggregate, window=window, bounds=_WIDE,  # type: ignore[arg-type]
                                        label=label, high_name=high, low_name=low))
    top = frequent[0] if frequent else "*"
    for prop in sorted(p for p in log.properties if p != "value" and 0 < len(p) <= 64):
        noun = plural(humanise(prop))
        orders = is_order_id(prop)  # distinct invoices are orders, not "different invoices"
        label = "orders" if orders else f"different {noun}"
        features.append(Feature(name=f"distinct_{_slug(prop)}", event=top, property=prop,
                                aggregate="distinct", window=window, transform="log1p",
                                bounds=_WIDE, label=label, high_name=f"Many {label}",
                                low_name=f"Few {label}"))
    features.append(Feature(name="active_days", event="*", aggregate="active_days",
                            window=window, bounds=_WIDE, label="active days",
                            high_name="Regulars", low_name="Rare visitors"))
    features.append(Feature(name="days_since_last", event="*", aggregate="recency_days",
                            bounds=_WIDE, label="days since last activity",
                            high_name="Lapsed", low_name="Recently active"))
    return _unique(features)


def _transformed(features: list[Feature], rows: F64) -> F64:
    """Rows as the model sees them (log1p where asked), for comparing features."""
    out = rows.copy()
    for j, feature in enumerate(features):
        if feature.transform == "log1p":
            out[:, j] = np.log1p(np.maximum(out[:, j], 0.0))
    return out


def drop_duplicates(features: list[Feature], rows: F64, threshold: float = DUPLICATE_R
                    ) -> tuple[list[Feature], F64, list[str]]:
    """Drop features that are constant or move (nearly) in lockstep with an earlier one.

    Two features correlated at ``|r| >= threshold`` over users measure the same
    behaviour; keeping both counts it twice in the distance. The earlier one
    (counts before values, events before properties) is kept.

    Args:
        features: the candidate features, in priority order.
        rows: their values, one row per user.
        threshold: the absolute correlation at which a feature is a duplicate.

    Returns:
        The kept features, their rows, and one sentence per dropped feature
        (everything is kept when no feature varies at all, e.g. for one user).
    """
    z = _transformed(features, rows)
    spread = z.std(axis=0)
    kept: list[int] = []
    notes: list[str] = []
    for j, feature in enumerate(features):
        if spread[j] <= 1e-12 * max(1.0, float(np.abs(z[:, j]).max())):
            notes.append(f"dropped {feature.name}: it is the same for every user")
            continue
        twin = next((i for i in kept if abs(float(np.corrcoef(z[:, i], z[:, j])[0, 1]))
                     >= threshold), None)
        if twin is None:
            kept.append(j)
            continue
        r = float(np.corrcoef(z[:, twin], z[:, j])[0, 1])
        notes.append(f"dropped {feature.name}: it moves with {features[twin].name} over users"
                     f" (r = {r:.2f}), so it would count the same behaviour twice")
    if not kept:  # e.g. a one-user sample: nothing can be told apart, so keep everything
        return features, rows, [f"every feature is the same for all {len(rows)} user(s), so none"
                                " was dropped; suggest from more users to find duplicates"]
    return [features[j] for j in kept], rows[:, kept], notes


def _with_bounds(features: list[Feature], rows: F64, seed: int | None) -> list[Feature]:
    """Coarse, noisy, rounded-outward bounds (see :mod:`edgepersona.trainer.data.bounds`)."""
    final = []
    for j, feature in enumerate(features):
        low, high = coarse_bounds(rows[:, j], feature.aggregate,
                                  log1p=feature.transform == "log1p",
                                  seed=None if seed is None else seed + j)
        final.append(feature.model_copy(update={"bounds": (low, high), "bounds_source": "coarse"}))
    return final


def _bounds_note(n_features: int) -> str:
    """How the bounds were chosen, for the spec's notes."""
    return (f"bounds of the {n_features} features are round numbers near each feature's 1st and"
            f" 99th percentile, chosen with the exponential mechanism (ε = {BOUND_EPSILON:g} per"
            " bound, not spent from a ledger) on a coarse grid (1, 2, 5 times a power of ten), so"
            " they reveal no individual's value; declare your own for a private release")


def suggest_spec(log: EventLog, at: float | None = None, *, seed: int | None = None,
                 exclude_events: tuple[str, ...] = ()) -> FeatureSpec:
    """Propose a spec for an event log (see the module docstring).

    Args:
        log: the event log.
        at: the reference time for the bound quantiles (default: last event).
        seed: a seed for the noisy bounds and the trial fit (None: the OS's randomness).
        exclude_events: events never turned into features (e.g. an outcome).

    Returns:
        The proposed spec; its ``notes`` say what was dropped and how the
        thresholds and bounds were chosen.

    Raises:
        InputError: the log holds no usable events.
    """
    if len(log.time) == 0:
        raise InputError("cannot suggest a spec from an empty event log")
    draft = _draft_features(log, exclude_events)
    rows = compute_features(log, FeatureSpec(features=tuple(draft)), at)
    kept, rows, notes = drop_duplicates(draft, rows)
    min_events, events_note = _min_events(log)
    min_confidence, confidence_note = suggest_min_confidence(kept, rows, seed)
    window = _window(log)
    labels = {f.event: plural(humanise(f.event)) for f in kept if f.event != "*"}
    return FeatureSpec(features=tuple(_with_bounds(kept, rows, seed)), min_events=min_events,
                       min_confidence=min_confidence, period_days=_nice_days(
                           max(window.half_lives_days)), event_labels=labels,
                       notes=(*notes, events_note, confidence_note, _bounds_note(len(kept))))


def _min_events(log: EventLog) -> tuple[int, str]:
    """Fewest events before a persona is named: a twentieth of the typical user's, 2 to 10."""
    per_user = np.bincount(log.user, minlength=log.n_users)
    typical = float(np.median(per_user))
    threshold = int(min(10, max(2, round(typical / 20))))
    return threshold, (f"min_events = {threshold}: a user with fewer events is not yet"
                       f" determined (the typical user here has {typical:g} events)")


def suggest_min_confidence(features: list[Feature], rows: F64, seed: int | None,
                           k: int = 4) -> tuple[float, str]:
    """Confidence below which a persona is 'not yet determined', from a trial fit.

    A quick k-means on the standardised features finds how sure assignments
    usually are; the least certain twentieth of users (rounded down to a
    multiple of 0.05, between 0.05 and 0.5) sets the threshold.

    Args:
        features: the spec's features.
        rows: their values, one row per user.
        seed: the trial fit's seed (None: the OS's randomness).
        k: personas in the trial fit.

    Returns:
        The threshold and a sentence explaining it.
    """
    from sklearn.cluster import KMeans

    z = _transformed(features, rows)
    z = (z - z.mean(axis=0)) / np.maximum(z.std(axis=0), 1e-12)
    k = min(k, len(np.unique(z, axis=0)))
    if k < 2:
        return 0.05, ("min_confidence = 0.05: too few different users for a trial fit, so the"
                      " smallest threshold is used")
    fit = KMeans(n_clusters=k, n_init=1, random_state=_seed(seed)).fit(z)
    nearest = np.sort(fit.transform(z), axis=1)
    confidence = 1.0 - nearest[:, 0] / np.maximum(nearest[:, 1], 1e-12)
    threshold = float(np.clip(np.floor(np.quantile(confidence, 0.05) * 20) / 20, 0.05, 0.5))
    share = float((confidence < threshold).mean())
    return threshold, (f"min_confidence = {threshold:.2f}: assignments less sure than this are"
                       f" not yet determined ({share:.0%} of users in a trial fit of {k} personas)")


def _looks_like_a_code(name: str, values: F64) -> bool:
    """A column of a few whole numbers named like a category (region, channel, browser, ...)."""
    words = set(humanise(name).lower().split())
    whole = bool(np.all(values == np.round(values)))
    return whole and len(np.unique(values)) <= 64 and bool(words & _CODE_WORDS)


def _seed(seed: int | None) -> int:
    """A seed for scikit-learn: the given one, or fresh from the OS."""
    return secrets.randbits(31) if seed is None else seed


def _nice_days(days: float) -> float:
    """The round period closest to a half-life: 7, 14, 30, 60, 90, 180 or 365 days."""
    choices = np.array([7.0, 14.0, 30.0, 60.0, 90.0, 180.0, 365.0])
    return float(choices[np.argmin(np.abs(np.log(choices / max(days, 1.0))))])


def suggest_table_spec(columns: dict[str, npt.NDArray[np.float64]], *, seed: int | None = None,
                       exclude: tuple[str, ...] = ()) -> FeatureSpec:
    """Propose a spec for an aggregated table: one feature per numeric column.

    Skewed non-negative columns (99th percentile over 10x the median) get
    log1p; duplicated columns are dropped and bounds are coarse, as for logs.

    Args:
        columns: column name → finite values.
        seed: a seed for the noisy bounds and the trial fit (None: the OS's randomness).
        exclude: columns never turned into features (e.g. an outcome).

    Returns:
        The proposed spec, with notes on what was dropped and chosen.

    Raises:
        InputError: there is no numeric column.
    """
    columns = {n: v for n, v in columns.items() if _COLUMN_NAME.fullmatch(n) and n not in exclude}
    if not columns:
        raise InputError("the table has no numeric column whose name is a valid feature name"
                         " (letters, digits, _; not starting with a digit)")
    codes = [n for n, v in columns.items() if _looks_like_a_code(n, v)]
    columns = {n: v for n, v in columns.items() if n not in codes} or columns
    features = []
    for name, values in columns.items():
        skewed = values.min() >= 0 and np.quantile(values, 0.99) > 10 * max(np.median(values), 1e-9)
        label = humanise(name)
        features.append(Feature(name=name, event=name, property="value", aggregate="sum",
                                transform="log1p" if skewed else "none", bounds=_WIDE,
                                label=label, high_name=f"High {label}", low_name=f"Low {label}"))
    kept, rows, notes = drop_duplicates(features, np.column_stack(list(columns.values())))
    notes = [f"dropped {n}: its whole-number values look like category codes, not amounts"
             for n in codes if n not in columns] + notes
    min_confidence, confidence_note = suggest_min_confidence(kept, rows, seed)
    events_note = ("min_events stays 1: a table row is already one user's summary, so there"
                   " are no events to wait for")
    return FeatureSpec(features=tuple(_with_bounds(kept, rows, seed)),
                       min_confidence=min_confidence,
                       notes=(*notes, events_note, confidence_note, _bounds_note(len(kept))))
