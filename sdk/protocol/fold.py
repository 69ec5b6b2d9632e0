"""Folding raw events into decayed feature state, one event at a time, on the device.

No raw event is kept: each event updates O(1) numbers per matching feature
(plus at most ``distinct_cap`` remembered values for a distinct-count
feature). The state evaluates to exactly the aggregates defined in
:mod:`edgepersona.sdk.protocol.spec`, which the trainer computes in batch.

Each decayed accumulator keeps its own anchor time ``τ`` (the latest event it
saw) and holds ``Σ v_i · exp(-r (τ - t_i))``. A later event rescales it to the
new anchor; an earlier (out-of-order) event is added with its age relative to
the anchor. Both are exact, so arrival order does not change the result.

Rules for time:

* out-of-order events are folded exactly as if they had arrived in order;
* duplicates are folded as separate events (the SDK does not deduplicate);
* an event later than ``now + max_future_seconds`` is refused with
  :class:`InputError` and changes nothing (the app's clock is wrong);
* the state cannot be evaluated before its latest folded event
  (:class:`InputError`): evaluate at the latest event time or later.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from edgepersona.sdk.errors import InputError, StoreCorruptError
from edgepersona.sdk.protocol.spec import SECONDS_PER_DAY, Feature, FeatureSpec

__all__ = [
    "FoldPlan",
    "FoldState",
    "PropertyValue",
    "check_event",
    "decay_rate",
    "distinct_key",
    "numeric_property",
]

PropertyValue = float | int | str | None
_LN2: Final = math.log(2.0)


def decay_rate(half_life_days: float) -> float:
    """Per-second decay rate of a half-life; 0 for no decay (``inf``)."""
    return 0.0 if math.isinf(half_life_days) else _LN2 / (half_life_days * SECONDS_PER_DAY)


@dataclass(frozen=True, slots=True)
class _Slot:
    """How one feature reads an event: which accumulators and which property."""

    feature: int
    aggregate: str
    property: str | None
    sums: tuple[int, ...]     # accumulator indices for Σ v·w, one per window component
    counts: tuple[int, ...]   # accumulator indices for Σ w
    distinct: int             # index into the distinct maps, -1 if unused


@dataclass(frozen=True)
class FoldPlan:
    """A spec compiled for fast folding: per event name, the slots it feeds.

    Build it once per bundle with :meth:`from_spec` and share it between subjects.
    """

    spec: FeatureSpec
    rates: tuple[float, ...]
    mixes: tuple[float, ...]
    slots: tuple[_Slot, ...]
    by_event: Mapping[str, tuple[_Slot, ...]]
    any_event: tuple[_Slot, ...]
    distinct_count: int

    @classmethod
    def from_spec(cls, spec: FeatureSpec) -> FoldPlan:
        """Compile a spec.

        Args:
            spec: the feature spec.

        Returns:
            The plan.
        """
        rates: list[float] = []
        mixes: list[float] = []
        slots: list[_Slot] = []
        n_distinct = 0

        def new_accumulators(feature: Feature) -> tuple[int, ...]:
            start = len(rates)
            for mix, half_life in feature.window.components():
                rates.append(decay_rate(half_life))
                mixes.append(mix)
            return tuple(range(start, len(rates)))

        for index, feature in enumerate(spec.features):
            agg = feature.aggregate
            sums = new_accumulators(feature) if agg in ("sum", "mean") else ()
            counts = new_accumulators(feature) if agg in ("count", "mean") else ()
            distinct = -1
            if agg in ("distinct", "active_days"):
                distinct, n_distinct = n_distinct, n_distinct + 1
            slots.append(_Slot(index, agg, feature.property, sums, counts, distinct))
        by_event: dict[str, list[_Slot]] = {}
        for slot in slots:
            name = spec.features[slot.feature].event
            if name != "*":
                by_event.setdefault(name, []).append(slot)
        any_event = tuple(s for s in slots if spec.features[s.feature].event == "*")
        return cls(spec, tuple(rates), tuple(mixes), tuple(slots),
                   {k: tuple(v) + any_event for k, v in by_event.items()}, any_event, n_distinct)

    @property
    def spec_id(self) -> str:
        """A short digest of the spec: folded state is only valid under the same spec."""
        return hashlib.sha256(self.spec.model_dump_json().encode()).hexdigest()[:16]

    def new_state(self) -> FoldState:
        """A fresh, empty state for one subject.

        Returns:
            The state.
        """
        n = len(self.rates)
        return FoldState(self, [0.0] * n, [-math.inf] * n,
                         [{} for _ in range(self.distinct_count)],
                         [-math.inf] * len(self.slots))


@dataclass
class FoldState:
    """The decayed feature state of one subject. Not thread-safe on its own.

    Attributes:
        plan: the compiled spec.
        values: accumulator values, each anchored at its own time.
        anchors: each accumulator's anchor time (unix seconds).
        seen: per distinct feature, value → latest time seen (at most the cap).
        last: per feature, the latest time an event fed it (for recency).
        events: number of events folded.
        ignored: number of events whose name no feature uses.
        latest: the latest folded event time.
    """

    plan: FoldPlan
    values: list[float]
    anchors: list[float]
    seen: list[dict[str | int, float]]
    last: list[float]
    events: int = 0
    ignored: int = 0
    latest: float = field(default=-math.inf)

    def to_bytes(self) -> bytes:
        """Serialise for the encrypted store (JSON; -inf marks "never").

        Returns:
            The state's bytes, tagged with the spec digest.
        """
        body = {"format": 1, "spec": self.plan.spec_id, "values": self.values,
                "anchors": self.anchors, "last": self.last, "events": self.events,
                "ignored": self.ignored, "latest": self.latest,
                "seen": [sorted(([k, t] for k, t in seen.items()), key=str) for seen in self.seen]}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, plan: FoldPlan, raw: bytes) -> FoldState | None:
        """Restore a state written by :meth:`to_bytes`.

        Args:
            plan: the active plan.
            raw: the stored bytes.

        Returns:
            The state, or None if it was folded under another spec (it cannot be
            converted: raw events are not kept).

        Raises:
            StoreCorruptError: the bytes are not a state this SDK wrote.
        """
        try:
            body = json.loads(raw)
            if body["spec"] != plan.spec_id:
                return None
            n_acc, n_feat = len(plan.rates), len(plan.slots)
            values, anchors, last = (list(map(float, body[k])) for k in ("values", "anchors", "last"))
            seen = [{(k if isinstance(k, str) else int(k)): float(t) for k, t in pairs}
                    for pairs in body["seen"]]
            if (body["format"] != 1 or len(values) != n_acc or len(anchors) != n_acc
                    or len(last) != n_feat or len(seen) != plan.distinct_count):
                raise ValueError("shape")
            return cls(plan, values, anchors, seen, last, int(body["events"]),
                       int(body["ignored"]), float(body["latest"]))
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
            raise StoreCorruptError(
                "a stored feature state is unreadable; forget the subject or reset the store") from None

    def fold(self, event: str, at: float, props: Mapping[str, PropertyValue]) -> bool:
        """Fold one validated event; see :meth:`edgepersona.sdk.PersonaRuntime.track`.

        Args:
            event: the event name.
            at: the event time, unix seconds, finite and already checked.
            props: property values, numeric ones finite and already checked.

        Returns:
            True if a feature used the event, False if it was ignored.
        """
        slots = self.plan.by_event.get(event, self.plan.any_event)
        if not slots:
            self.ignored += 1
            return False
        for slot in slots:
            self._fold_slot(slot, at, props)
        self.events += 1
        self.latest = max(self.latest, at)
        return True

    def _fold_slot(self, slot: _Slot, at: float, props: Mapping[str, PropertyValue]) -> None:
        """Apply one event to one feature's accumulators."""
        self.last[slot.feature] = max(self.last[slot.feature], at)
        prop = slot.property
        if slot.distinct >= 0:
            if slot.aggregate == "active_days":
                self._remember(slot.distinct, int(at // SECONDS_PER_DAY), at)
            elif prop is not None and props.get(prop) is not None:
                self._remember(slot.distinct, distinct_key(props[prop]), at)
            return
        number = numeric_property(props.get(prop)) if prop is not None else None
        if prop is not None and number is None:
            return  # no usable number: the event does not enter this sum or mean
        for index in slot.counts:
            self._add(index, 1.0, at)
        if number is not None:
            for index in slot.sums:
                self._add(index, number, at)

    def _add(self, index: int, amount: float, at: float) -> None:
        """Add ``amount`` at time ``at`` to one decayed accumulator (exact in any order)."""
        anchor = self.anchors[index]
        rate = self.plan.rates[index]
        if at >= anchor:
            scale = 0.0 if anchor == -math.inf else math.exp(-rate * (at - anchor))
            self.values[index] = self.values[index] * scale + amount
            self.anchors[index] = at
        else:
            self.values[index] += amount * math.exp(-rate * (anchor - at))

    def _remember(self, which: int, key: str | int, at: float) -> None:
        """Keep the latest time of a distinct value; evict the oldest beyond the cap."""
        seen = self.seen[which]
        previous = seen.get(key)
        if previous is None or at > previous:
            seen[key] = at
        if len(seen) > self.plan.spec.distinct_cap:
            oldest = min(seen.items(), key=lambda item: (item[1], item[0]))
            del seen[oldest[0]]

    def evaluate(self, at: float) -> npt.NDArray[np.float64]:
        """The raw feature vector at a reference time.

        Args:
            at: reference time, unix seconds, not before the latest folded event.

        Returns:
            One float64 per feature, in spec order.

        Raises:
            InputError: ``at`` is not finite or is before the latest folded event.
        """
        if not math.isfinite(at):
            raise InputError(f"reference time must be finite unix seconds, got {at!r}")
        if at < self.latest:
            raise InputError(
                f"cannot evaluate at {at!r}: the state already holds an event at {self.latest!r};"
                " evaluate at or after the latest event")
        out = np.empty(len(self.plan.slots), dtype=np.float64)
        features = self.plan.spec.features
        for slot in self.plan.slots:
            out[slot.feature] = self._value(slot, features[slot.feature], at)
        return out

    def _value(self, slot: _Slot, feature: Feature, at: float) -> float:
        """Evaluate one feature at ``at``."""
        agg = slot.aggregate
        if agg == "recency_days":
            last = self.last[slot.feature]
            return feature.bounds[1] if last == -math.inf else (at - last) / SECONDS_PER_DAY
        if slot.distinct >= 0:
            return self._distinct_value(slot.distinct, feature, at)
        total = self._blend(slot.sums, at) if slot.sums else 0.0
        if agg == "sum":
            return total
        count = self._blend(slot.counts, at)
        if agg == "count":
            return count
        if len(slot.sums) == 1:
            # Sum and count share one anchor, so the decay cancels: exact even when
            # both would underflow at ``at`` (a user away for 1,000+ half-lives).
            base = self.values[slot.counts[0]]
            return self.values[slot.sums[0]] / base if base > 0.0 else 0.0
        return total / count if count > 0.0 else 0.0

    def _blend(self, indices: tuple[int, ...], at: float) -> float:
        """Mix a feature's window components, each decayed from its anchor to ``at``."""
        total = 0.0
        rates, mixes = self.plan.rates, self.plan.mixes
        for index in indices:
            anchor = self.anchors[index]
            if anchor != -math.inf:
                total += mixes[index] * self.values[index] * math.exp(-rates[index] * (at - anchor))
        return total

    def _distinct_value(self, which: int, feature: Feature, at: float) -> float:
        """Σ over remembered values of the window weight of their latest time."""
        seen = self.seen[which]
        if feature.window.kind == "all_time":
            return float(len(seen))
        total = 0.0
        for mix, half_life in feature.window.components():
            rate = decay_rate(half_life)
            total += mix * math.fsum(math.exp(-rate * (at - t)) for t in seen.values())
        return total


def numeric_property(value: PropertyValue) -> float | None:
    """The number a sum or mean reads from a property value (device and trainer).

    Args:
        value: a number, a str or None.

    Returns:
        The finite float it denotes (numeric strings are parsed), or None when
        it is absent, not a number, NaN or infinite: such an event does not
        enter the sum or mean.
    """
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


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
        InputError: a wrong type, a NaN/inf number or a negative time.
    """
    if not isinstance(event, str) or not event:
        raise InputError(f"event must be a non-empty str, got {event!r}")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at) or at < 0:
        raise InputError(f"event time must be finite unix seconds >= 0, got {at!r}")
    props: dict[str, PropertyValue] = {}
    if properties:
        for key, item in properties.items():
            props[key] = _check_property(key, item)
    if value is not None:
        props["value"] = _check_property("value", value)
        if isinstance(props["value"], str):
            raise InputError(f"value must be a finite number, got {value!r}")
    return props


def _check_property(key: str, item: object) -> PropertyValue:
    """Accept finite numbers, strings and None; refuse the rest with the reason."""
    if item is None or isinstance(item, str):
        return item
    if isinstance(item, bool) or not isinstance(item, int | float | np.floating | np.integer):
        raise InputError(f"property {key!r} must be a number, str or None, got {type(item).__name__}")
    number = float(item)
    if not math.isfinite(number):
        raise InputError(f"property {key!r} must be finite, got {item!r}")
    return number
