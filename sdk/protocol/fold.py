"""Folding raw events into decayed feature state, one event at a time, on the device.

No raw event is kept: each event updates O(1) numbers per matching feature
(plus at most ``distinct_cap`` remembered values for a distinct-count
feature). The state evaluates to exactly the aggregates defined in
:mod:`edgepersona.sdk.protocol.spec`, which the trainer computes in batch.

Each decayed accumulator keeps its own anchor time ``τ`` (the latest event it
saw) and holds ``Σ v_i · exp(-r (τ - t_i))``. A later event rescales it to the
new anchor; an earlier (out-of-order) event is added with its age relative to
the anchor. Both are exact, so arrival order does not change the result.
A distinct-count feature also keeps, per window component, the decayed sum of
its remembered values' weights, updated as values arrive, move or are evicted
(and recomputed from the remembered times every ``64 · distinct_cap``
evictions, so rounding cannot build up); evaluation is then a handful of vector operations
over all accumulators, whatever the number of remembered values.

Rules for time:

* out-of-order events are folded exactly as if they had arrived in order;
* duplicates are folded as separate events (the SDK does not deduplicate);
* an event later than ``now + max_future_seconds`` is refused with
  :class:`InputError` and changes nothing (the app's clock is wrong);
* the state cannot be evaluated before its latest folded event
  (:class:`InputError`): evaluate at the latest event time or later.

Rules that keep the state finite (the device and the trainer's batch path apply
the same ones):

* a numeric value or property must be finite and at most ``MAX_MAGNITUDE``
  (1e200) in absolute value, or the event is refused with :class:`InputError`
  and nothing is written; a numeric *string* beyond it does not enter sums and
  means (like a non-numeric string). Every accumulator is then bounded by
  1e200 times the number of events, far from overflow;
* a fold therefore cannot overflow: an update is ``value · scale + amount``
  with ``scale <= 1`` and ``|amount| <= 1e200``, and a stored state with a
  non-finite number is refused as corrupt when it is read;
* a string property value is at most ``MAX_STRING_CHARS`` (256) characters,
  an event name at most 128, a property name at most 64 and an event carries at
  most ``MAX_PROPERTIES`` (64) properties; longer or more are refused with
  :class:`InputError`.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from edgepersona.sdk.errors import InputError, StoreCorruptError
from edgepersona.sdk.protocol.event_rules import (
    MAX_MAGNITUDE,
    MAX_PROPERTIES,
    MAX_STRING_CHARS,
    PropertyValue,
    check_event,
    distinct_key,
    numeric_property,
)

if TYPE_CHECKING:
    from edgepersona.sdk.protocol.manifest_view import FeatureView, SpecView
    from edgepersona.sdk.protocol.spec import Feature, FeatureSpec

__all__ = [
    "MAX_MAGNITUDE",
    "MAX_PROPERTIES",
    "MAX_STRING_CHARS",
    "FoldPlan",
    "FoldState",
    "PropertyValue",
    "check_event",
    "decay_rate",
    "distinct_key",
    "numeric_property",
]

_LN2: Final = math.log(2.0)
_SECONDS_PER_DAY: Final = 86_400.0  # seconds: spec.SECONDS_PER_DAY, not imported (spec.py needs pydantic)


# Distinct features that have seen nothing share this map until their first value, so a
# gateway's many small subjects do not each carry empty dicts. Never written to.
_NO_VALUES: Final[dict[str | int, float]] = {}


def decay_rate(half_life_days: float) -> float:
    """Per-second decay rate of a half-life; 0 for no decay (``inf``)."""
    return 0.0 if math.isinf(half_life_days) else _LN2 / (half_life_days * _SECONDS_PER_DAY)


@dataclass(frozen=True, slots=True)
class _Slot:
    """How one feature reads an event: which accumulators and which property."""

    feature: int
    aggregate: str
    property: str | None
    sums: tuple[int, ...]     # accumulator indices for Σ v·w, one per window component
    counts: tuple[int, ...]   # accumulator indices for Σ w (distinct: Σ w over remembered values)
    distinct: int             # index into the distinct maps, -1 if unused


@dataclass(frozen=True, eq=False)
class FoldPlan:
    """A spec compiled for fast folding: per event name, the slots it feeds.

    Build it once per bundle with :meth:`from_spec` and share it between subjects.
    Accumulators ``0 .. persisted - 1`` are stored; the rest (one per window
    component of each distinct feature) are derived from the remembered values.
    """

    spec: FeatureSpec | SpecView
    rates: tuple[float, ...]
    mixes: tuple[float, ...]
    slots: tuple[_Slot, ...]
    by_event: Mapping[str, tuple[_Slot, ...]]
    any_event: tuple[_Slot, ...]
    distinct_count: int
    persisted: int
    distinct_accumulators: tuple[tuple[int, ...], ...]
    linear: npt.NDArray[np.float64]       # (features, accumulators): Σ mix · decayed value
    neg_rates: npt.NDArray[np.float64]
    means: tuple[_Slot, ...]  # blended means (several window components)
    recencies: tuple[tuple[int, float], ...]  # (feature, value when never seen)
    simple_means: tuple[tuple[int, int, int], ...] = ()  # (feature, sum, count) of one component

    @classmethod
    def from_spec(cls, spec: FeatureSpec | SpecView) -> FoldPlan:
        """Compile a spec.

        Args:
            spec: the feature spec (the pydantic model, or the device's light view of it).

        Returns:
            The plan.
        """
        rates: list[float] = []
        mixes: list[float] = []

        def new_accumulators(feature: Feature | FeatureView) -> tuple[int, ...]:
            start = len(rates)
            for mix, half_life in feature.window.components():
                rates.append(decay_rate(half_life))
                mixes.append(mix)
            return tuple(range(start, len(rates)))

        slots: list[_Slot] = []
        n_distinct = 0
        features: tuple[Feature | FeatureView, ...] = spec.features
        for index, feature in enumerate(features):
            agg = feature.aggregate
            sums = new_accumulators(feature) if agg in ("sum", "mean") else ()
            counts = new_accumulators(feature) if agg in ("count", "mean") else ()
            distinct = -1
            if agg in ("distinct", "active_days"):
                distinct, n_distinct = n_distinct, n_distinct + 1
            slots.append(_Slot(index, agg, feature.property, sums, counts, distinct))
        persisted = len(rates)
        derived = []
        for i, slot in enumerate(slots):  # derived accumulators of distinct features come last
            if slot.distinct >= 0:
                slots[i] = _Slot(slot.feature, slot.aggregate, slot.property, (),
                                 new_accumulators(spec.features[slot.feature]), slot.distinct)
                derived.append(slots[i].counts)
        return cls._assemble(spec, rates, mixes, slots, n_distinct, persisted, tuple(derived))

    @classmethod
    def _assemble(cls, spec: FeatureSpec | SpecView, rates: list[float], mixes: list[float],
                  slots: list[_Slot], n_distinct: int, persisted: int,
                  derived: tuple[tuple[int, ...], ...]) -> FoldPlan:
        """Index the slots by event and build the evaluation matrix."""
        by_event: dict[str, list[_Slot]] = {}
        for slot in slots:
            name = spec.features[slot.feature].event
            if name != "*":
                by_event.setdefault(name, []).append(slot)
        any_event = tuple(s for s in slots if spec.features[s.feature].event == "*")
        linear = np.zeros((len(slots), len(rates)))
        for slot in slots:
            if slot.aggregate in ("count", "distinct", "active_days"):
                linear[slot.feature, list(slot.counts)] = [mixes[i] for i in slot.counts]
            elif slot.aggregate == "sum":
                linear[slot.feature, list(slot.sums)] = [mixes[i] for i in slot.sums]
        recencies = tuple((s.feature, spec.features[s.feature].bounds[1]) for s in slots
                          if s.aggregate == "recency_days")
        return cls(spec, tuple(rates), tuple(mixes), tuple(slots),
                   {k: tuple(v) + any_event for k, v in by_event.items()}, any_event, n_distinct,
                   persisted, derived, linear,
                   # no decay as the smallest rate there is: exp(-5e-324 · age) is 1.0 for any
                   # age below 1e292 s, and a never-fed accumulator's infinite age gives 0, not NaN
                   -np.maximum(np.asarray(rates, dtype=np.float64), 5e-324),
                   tuple(s for s in slots if s.aggregate == "mean" and len(s.sums) > 1), recencies,
                   tuple((s.feature, s.sums[0], s.counts[0]) for s in slots
                         if s.aggregate == "mean" and len(s.sums) == 1))

    @property
    def spec_id(self) -> str:
        """A short digest of the spec: folded state is only valid under the same spec.

        The digest is of ``FeatureSpec.model_dump_json()``; a light
        :class:`~edgepersona.sdk.protocol.manifest_view.SpecView` writes the same text.
        """
        return hashlib.sha256(self.spec.model_dump_json().encode()).hexdigest()[:16]

    def new_state(self) -> FoldState:
        """A fresh, empty state for one subject.

        Returns:
            The state.
        """
        n = len(self.rates)
        return FoldState(self, array("d", bytes(8 * n)), array("d", [-math.inf]) * n,
                         [_NO_VALUES] * self.distinct_count, array("d", [-math.inf]) * len(self.slots))


@dataclass(slots=True, eq=False)
class FoldState:
    """The decayed feature state of one subject. Not thread-safe on its own.

    Attributes:
        plan: the compiled spec.
        values: accumulator values, each anchored at its own time (the entries
            from ``plan.persisted`` on are derived from ``seen``).
        anchors: each accumulator's anchor time (unix seconds).
        seen: per distinct feature, value → latest time seen (at most the cap).
        last: per feature, the latest time an event fed it (for recency).
        events: number of events folded.
        ignored: number of events whose name no feature uses.
        latest: the latest folded event time.
    """

    plan: FoldPlan
    values: array[float]
    anchors: array[float]
    seen: list[dict[str | int, float]]
    last: array[float]
    events: int = 0
    ignored: int = 0
    latest: float = field(default=-math.inf)
    _heaps: dict[int, list[tuple[float, str | int]]] | None = field(default=None, repr=False)
    _updates: int = 0  # evictions since the distinct sums were last recomputed exactly

    def to_bytes(self) -> bytes:
        """Serialise for the encrypted store (JSON; -inf marks "never").

        Returns:
            The state's bytes, tagged with the spec digest.
        """
        n, values, anchors = self.plan.persisted, self.values.tolist(), self.anchors.tolist()
        body = {"format": 1, "spec": self.plan.spec_id, "values": values[:n],
                "anchors": anchors[:n], "last": self.last.tolist(),
                "events": self.events, "ignored": self.ignored, "latest": self.latest,
                "seen": [sorted(([k, t] for k, t in seen.items()), key=str) for seen in self.seen],
                "derived": [values[n:], anchors[n:], self._updates]}
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
            n_acc, n_feat = plan.persisted, len(plan.slots)
            values, anchors, last = (list(map(float, body[k])) for k in ("values", "anchors", "last"))
            seen = [{(k if isinstance(k, str) else int(k)): float(t) for k, t in pairs}
                    for pairs in body["seen"]]
            if (body["format"] != 1 or len(values) != n_acc or len(anchors) != n_acc
                    or len(last) != n_feat or len(seen) != plan.distinct_count):
                raise ValueError("shape")
            extra = len(plan.rates) - n_acc
            state = cls(plan, array("d", values + [0.0] * extra),
                        array("d", anchors + [-math.inf] * extra), seen, array("d", last),
                        int(body["events"]), int(body["ignored"]), float(body["latest"]))
            derived = body.get("derived")  # absent in records of earlier versions: recompute
            if derived is not None and len(derived[0]) == len(derived[1]) == extra:
                state.values[n_acc:] = array("d", map(float, derived[0]))
                state.anchors[n_acc:] = array("d", map(float, derived[1]))
                state._updates = int(derived[2])
            else:
                state._recompute_distinct()
            if not all(map(math.isfinite, state.values)):
                raise ValueError("non-finite accumulator")
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError, IndexError):
            raise StoreCorruptError(
                "a stored feature state is unreadable; forget the subject or reset the store") from None
        return state

    def fold(self, event: str, at: float, props: Mapping[str, PropertyValue]) -> bool:
        """Fold one validated event; see :meth:`edgepersona.sdk.PersonaRuntime.track`.

        Nothing in a fold can fail once :func:`check_event` accepted the event,
        so the state is never left half-updated.

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
        last = self.last
        for slot in slots:
            if last[slot.feature] < at:
                last[slot.feature] = at
            prop = slot.property
            if slot.distinct >= 0:
                if slot.aggregate == "active_days":
                    self._remember(slot.distinct, int(at // _SECONDS_PER_DAY), at)
                elif prop is not None and props.get(prop) is not None:
                    self._remember(slot.distinct, distinct_key(props[prop]), at)
                continue
            number = numeric_property(props.get(prop)) if prop is not None else None
            if prop is not None and number is None:
                continue  # no usable number: the event does not enter this sum or mean
            for index in slot.counts:
                self._add(index, 1.0, at)
            if number is not None:
                for index in slot.sums:
                    self._add(index, number, at)
        self.events += 1
        if at > self.latest:
            self.latest = at
        return True

    def _add(self, index: int, amount: float, at: float) -> None:
        """Add ``amount`` at time ``at`` to one decayed accumulator (exact in any order)."""
        anchor = self.anchors[index]
        if at >= anchor:
            scale = 0.0 if anchor == -math.inf else math.exp(-self.plan.rates[index] * (at - anchor))
            self.values[index] = self.values[index] * scale + amount
            self.anchors[index] = at
        else:
            self.values[index] += amount * math.exp(-self.plan.rates[index] * (anchor - at))

    def _remember(self, which: int, key: str | int, at: float) -> None:
        """Keep the latest time of a distinct value; evict the oldest beyond the cap."""
        seen = self.seen[which]
        if seen is _NO_VALUES:  # the shared empty map: give this feature its own
            seen = self.seen[which] = {}
        previous = seen.get(key)
        if previous is not None and at <= previous:
            return
        seen[key] = at
        accumulators = self.plan.distinct_accumulators[which]
        for index in accumulators:
            self._add(index, 1.0, at)
        if previous is not None:
            for index in accumulators:
                self._add(index, -1.0, previous)
        heap = self._heaps.get(which) if self._heaps is not None else None
        if heap is not None:
            heapq.heappush(heap, (at, key))
        cap = self.plan.spec.distinct_cap
        if len(seen) > cap:
            self._evict(which, heap, cap)

    def _evict(self, which: int, heap: list[tuple[float, str | int]] | None, cap: int) -> None:
        """Drop the oldest remembered value (ties: the smaller one) and its weight."""
        seen = self.seen[which]
        if heap is None:  # built once the cap is first passed, so small states stay small
            heap = [(t, k) for k, t in seen.items()]
            heapq.heapify(heap)
            self._heaps = {**(self._heaps or {}), which: heap}
        while True:
            oldest, victim = heapq.heappop(heap)
            if seen.get(victim) == oldest:
                break
        del seen[victim]
        for index in self.plan.distinct_accumulators[which]:
            self._add(index, -1.0, oldest)
        if len(heap) > 4 * cap:  # drop stale entries now and then
            heap[:] = [(t, k) for k, t in seen.items()]
            heapq.heapify(heap)
        self._updates += 1
        if self._updates > 64 * cap:  # evictions subtract: re-add exactly now and then
            self._recompute_distinct()

    def _recompute_distinct(self) -> None:
        """Rebuild the derived distinct sums exactly from the remembered times."""
        rates = self.plan.rates
        for which, indices in enumerate(self.plan.distinct_accumulators):
            times = self.seen[which].values()
            anchor = max(times, default=-math.inf)
            for index in indices:
                self.anchors[index] = anchor
                self.values[index] = math.fsum(math.exp(-rates[index] * (anchor - t)) for t in times)
        self._updates = 0

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
        plan = self.plan
        decayed = np.subtract(at, np.frombuffer(self.anchors))
        np.multiply(decayed, plan.neg_rates, out=decayed)
        np.exp(decayed, out=decayed)
        np.multiply(decayed, np.frombuffer(self.values), out=decayed)
        out: npt.NDArray[np.float64] = plan.linear @ decayed
        for feature, never in plan.recencies:
            last = self.last[feature]
            out[feature] = never if last == -math.inf else (at - last) / _SECONDS_PER_DAY
        values = self.values
        for feature, total, count in plan.simple_means:
            # Sum and count share one anchor, so the decay cancels: exact even when
            # both would underflow at ``at`` (a user away for 1,000+ half-lives).
            base = values[count]
            out[feature] = values[total] / base if base > 0.0 else 0.0
        for slot in plan.means:
            out[slot.feature] = self._mean(slot, decayed)
        return out

    def evaluate_reference(self, at: float) -> npt.NDArray[np.float64]:
        """The feature vector computed feature by feature from the definitions (slow).

        Each aggregate is summed from its accumulators, and each distinct feature
        from its remembered times with ``math.fsum``, as the spec defines them. The
        conformance kit records these values; :meth:`evaluate` agrees with them to
        a relative 1e-12 (it keeps distinct sums incrementally and sums in another
        order), which is what the kit's vectors allow.

        Args:
            at: reference time, unix seconds, not before the latest folded event.

        Returns:
            One float64 per feature, in spec order.

        Raises:
            InputError: ``at`` is not finite or is before the latest folded event.
        """
        out = self.evaluate(at)  # checks ``at``; recency and one-component means are exact
        values, anchors, rates, mixes = self.values, self.anchors, self.plan.rates, self.plan.mixes
        for slot in self.plan.slots:
            feature, totals = self.plan.spec.features[slot.feature], [0.0, 0.0]
            if slot.distinct >= 0 and feature.window.kind == "all_time":
                out[slot.feature] = float(len(self.seen[slot.distinct]))
            elif slot.distinct >= 0:
                for mix, half in feature.window.components():  # left to right, as defined
                    rate, times = decay_rate(half), self.seen[slot.distinct].values()
                    totals[0] += mix * math.fsum(math.exp(-rate * (at - t)) for t in times)
                out[slot.feature] = totals[0]
            for which, indices in enumerate((slot.sums, slot.counts) if slot.distinct < 0 else ()):
                for i in indices:
                    if anchors[i] != -math.inf:
                        totals[which] += mixes[i] * values[i] * math.exp(-rates[i] * (at - anchors[i]))
            if slot.aggregate in ("sum", "count"):
                out[slot.feature] = totals[0] if slot.aggregate == "sum" else totals[1]
            elif slot.aggregate == "mean" and len(slot.sums) > 1:
                out[slot.feature] = totals[0] / totals[1] if totals[1] > 0.0 else 0.0
        return out

    def _mean(self, slot: _Slot, decayed: npt.NDArray[np.float64]) -> float:
        """A blended mean feature from its decayed sums and counts."""
        mixes = self.plan.mixes
        total = sum(mixes[i] * decayed[i] for i in slot.sums)
        count = sum(mixes[i] * decayed[i] for i in slot.counts)
        return float(total / count) if count > 0.0 else 0.0
