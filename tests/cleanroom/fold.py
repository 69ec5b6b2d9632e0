"""The fold (CONFORMANCE.md section 3): checking events, folding them, evaluating."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .errors import InputError

DAY = 86_400.0
NUMBER = re.compile(r"[+-]?(\d(_?\d)*(\.(\d(_?\d)*)?)?|\.\d(_?\d)*)([eE][+-]?\d(_?\d)*)?", re.ASCII)
SPECIAL = re.compile(r"[+-]?(inf|infinity|nan)", re.ASCII | re.IGNORECASE)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def check_event(event: Any, value: Any, at: Any, properties: dict[str, Any]) -> dict[str, Any]:
    """Section 3.2."""
    if not isinstance(event, str) or not event or len(event) > 128:
        raise InputError("event")
    if not _is_number(at) or not math.isfinite(at) or at < 0:
        raise InputError("at")
    if len(properties) > 64:
        raise InputError("properties")
    props: dict[str, Any] = {}
    for name, item in properties.items():
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise InputError("name")
        if isinstance(item, str) and len(item) > 256:
            raise InputError(name)
        if item is not None and not isinstance(item, str) and not (_is_number(item) and _bounded(item)):
            raise InputError(name)
        props[name] = float(item) if _is_number(item) else item
    if value is not None:
        if not _is_number(value) or not _bounded(value):
            raise InputError("value")
        props["value"] = float(value)
    return props


def _bounded(x: Any) -> bool:
    """Finite and within ±1e200 (an int too large for a float is not)."""
    try:
        return abs(float(x)) <= 1e200
    except OverflowError:
        return False


def number(p: Any) -> float | None:
    """Section 3.3, ``number(p)``."""
    if p is None:
        return None
    if isinstance(p, str):
        text = p.strip()
        if SPECIAL.fullmatch(text) or NUMBER.fullmatch(text) is None:
            return None
        x = float(text.replace("_", ""))
    else:
        x = float(p)
    return x if math.isfinite(x) and abs(x) <= 1e200 else None


def _shortest_digits(x: float) -> tuple[str, int]:
    """Digits d1..dn and e with x = 0.d1..dn x 10^e: fewest digits that read back as x, nearest x."""
    exact = Fraction(x)
    for n in range(1, 18):
        mantissa, exponent = f"{x:.{n - 1}e}".split("e")
        m, power = int(mantissa.replace(".", "")), int(exponent) - n + 1
        valid = [c for c in (m - 1, m, m + 1)
                 if len(str(c)) == n and float(f"{c}e{power}") == x]
        if valid:
            best = min(valid, key=lambda c: (abs(Fraction(c) * Fraction(10) ** power - exact), c % 2))
            digits = str(best).rstrip("0")
            return digits, power + n
    raise AssertionError("17 digits always suffice")


def key(p: Any) -> str:
    """Section 3.3, ``key(p)``: the shortest round-trip decimal, laid out as the rule says."""
    if isinstance(p, str):
        return p
    x = float(p)
    if x == 0:
        return "0.0"
    digits, e = _shortest_digits(abs(x))  # value = 0.d1...dn x 10^e
    sign = "-" if x < 0 else ""
    if -4 < e <= 16:
        if e <= 0:
            return f"{sign}0.{'0' * -e}{digits}"
        whole, fraction = digits[:e].ljust(e, "0"), digits[e:]
        return f"{sign}{whole}.{fraction or '0'}"
    tail = f".{digits[1:]}" if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{tail}e{'+' if e - 1 >= 0 else '-'}{abs(e - 1):02d}"


def components(window: dict[str, Any]) -> list[tuple[float, float]]:
    """(coefficient, per-second rate) pairs."""
    rate = lambda h: math.log(2.0) / (h * DAY)  # noqa: E731
    if window["kind"] == "all_time":
        return [(1.0, 0.0)]
    if window["kind"] == "half_life":
        return [(1.0, rate(window["half_lives_days"][0]))]
    return [(c, rate(h)) for c, h in zip(window["mix"], window["half_lives_days"], strict=True)]


@dataclass
class Acc:
    rate: float
    value: float = 0.0
    anchor: float | None = None

    def add(self, v: float, t: float) -> None:
        if self.anchor is None or t >= self.anchor:
            decay = 0.0 if self.anchor is None else math.exp(-self.rate * (t - self.anchor))
            self.value = self.value * decay + v
            self.anchor = t
        else:
            self.value += v * math.exp(-self.rate * (self.anchor - t))

    def decayed(self, t: float) -> float:
        return 0.0 if self.anchor is None else self.value * math.exp(-self.rate * (t - self.anchor))


@dataclass
class Feature:
    spec: dict[str, Any]
    mix: list[float]
    sums: list[Acc]
    counts: list[Acc]
    seen: dict[Any, float] = field(default_factory=dict)
    last: float | None = None


class State:
    """One subject's state under one spec."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.cap = spec["distinct_cap"]
        self.features = []
        for f in spec["features"]:
            parts = components(f["window"])
            self.features.append(Feature(f, [c for c, _ in parts], [Acc(r) for _, r in parts],
                                         [Acc(r) for _, r in parts]))
        self.folded, self.ignored, self.latest = 0, 0, -math.inf

    def fold(self, event: str, t: float, props: dict[str, Any]) -> None:
        readers = [f for f in self.features if f.spec["event"] in (event, "*")]
        if not readers:
            self.ignored += 1
            return
        for f in readers:
            self._fold_one(f, t, props)
        self.folded += 1
        self.latest = max(self.latest, t)

    def _fold_one(self, f: Feature, t: float, props: dict[str, Any]) -> None:
        agg, prop = f.spec["aggregate"], f.spec["property"]
        if agg == "count":
            for a in f.counts:
                a.add(1.0, t)
        elif agg in ("sum", "mean"):
            x = number(props.get(prop))
            if x is None:
                return
            for a in f.sums:
                a.add(x, t)
            if agg == "mean":
                for a in f.counts:
                    a.add(1.0, t)
        elif agg == "distinct":
            if props.get(prop) is not None:
                self._remember(f, key(props[prop]), t)
        elif agg == "active_days":
            self._remember(f, math.floor(t / DAY), t)
        elif agg == "recency_days":
            f.last = t if f.last is None else max(f.last, t)

    def _remember(self, f: Feature, u: Any, t: float) -> None:
        if u not in f.seen or t > f.seen[u]:
            f.seen[u] = t
        if len(f.seen) > self.cap:
            oldest = min(f.seen, key=lambda k: (f.seen[k], k))
            del f.seen[oldest]

    def evaluate(self, at: float) -> list[float]:
        """Section 3.4."""
        if not math.isfinite(at) or at < self.latest:
            raise InputError("evaluation time")
        return [self._value(f, at) for f in self.features]

    def _value(self, f: Feature, at: float) -> float:
        agg = f.spec["aggregate"]
        blend = lambda accs: sum(c * a.decayed(at) for c, a in zip(f.mix, accs, strict=True))  # noqa: E731
        if agg == "count":
            return blend(f.counts)
        if agg == "sum":
            return blend(f.sums)
        if agg == "mean":
            if len(f.mix) == 1:
                return f.sums[0].value / f.counts[0].value if f.counts[0].value > 0 else 0.0
            count = blend(f.counts)
            return blend(f.sums) / count if count > 0 else 0.0
        if agg in ("distinct", "active_days"):
            if f.spec["window"]["kind"] == "all_time":
                return float(len(f.seen))
            return sum(c * sum(math.exp(-a.rate * (at - t)) for t in f.seen.values())
                       for c, a in zip(f.mix, f.sums, strict=True))
        return float(f.spec["bounds"][1]) if f.last is None else (at - f.last) / DAY
