"""Timing loops and the records every suite returns.

Every sample is one call timed with ``time.perf_counter_ns`` around it (the
timer's own cost is measured as ``timer`` where it matters and never
subtracted). The garbage collector stays on, as in an app; it is run once
before each timed section so earlier garbage is not billed to the next one.
Competing cases are interleaved in blocks, so a change of machine load during
the run hits every case alike.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "Call",
    "RunConfig",
    "SuiteResult",
    "Summary",
    "Target",
    "time_calls",
    "time_each",
    "time_interleaved",
    "time_spaced",
]

Call = Callable[[], object]
Samples = npt.NDArray[np.int64]
T = TypeVar("T")


@dataclass(frozen=True)
class RunConfig:
    """What the whole run was asked for.

    Attributes:
        quick: smoke-sized run (< 30 s) instead of the full one (~10 min on 2 cores).
        scratch: a private temporary folder for stores, bundles and keys.
        seed: the seed of every synthetic data set.
    """

    quick: bool
    scratch: Path
    seed: int = 20_250_101

    def pick(self, quick: T, full: T) -> T:
        """The quick or the full value of a size."""
        return quick if self.quick else full


@dataclass(frozen=True)
class Summary:
    """A distribution of samples in microseconds."""

    n: int
    min_us: float
    median_us: float
    p95_us: float
    p99_us: float
    max_us: float
    mean_us: float

    @classmethod
    def of_ns(cls, samples_ns: Sequence[int] | npt.NDArray[Any]) -> Summary:
        """Summarise raw nanosecond samples."""
        us = np.asarray(samples_ns, dtype=np.float64) / 1_000.0
        if us.size == 0:
            raise ValueError("no samples to summarise")
        p50, p95, p99 = np.percentile(us, [50.0, 95.0, 99.0])
        return cls(int(us.size), float(us.min()), float(p50), float(p95), float(p99),
                   float(us.max()), float(us.mean()))

    def as_dict(self) -> dict[str, float | int]:
        """JSON form, rounded to nanoseconds."""
        return {"n": self.n, "min_us": round(self.min_us, 3), "median_us": round(self.median_us, 3),
                "p95_us": round(self.p95_us, 3), "p99_us": round(self.p99_us, 3),
                "max_us": round(self.max_us, 3), "mean_us": round(self.mean_us, 3)}


@dataclass(frozen=True)
class Target:
    """A goal from the performance brief and whether this run met it.

    ``value`` and ``limit`` are in ``unit``; ``op`` is ``<=`` or ``>=``.
    """

    name: str
    value: float
    op: str
    limit: float
    unit: str
    detail: str

    @property
    def met(self) -> bool:
        """Whether the measured value is on the right side of the limit."""
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "value": round(self.value, 4), "op": self.op,
                "limit": self.limit, "unit": self.unit, "met": self.met, "detail": self.detail}


@dataclass
class SuiteResult:
    """What one suite measured.

    Attributes:
        name: the suite.
        measurements: latency distributions by key.
        labels: what each measurement is, in words.
        figures: every other number (ratios, throughput, memory, ...).
        targets: goals from the brief with met/missed.
        notes: caveats worth reading next to the numbers.
        samples: raw nanosecond samples kept for charts (not written to JSON).
        series: small tables written to JSON and charted (e.g. fit time by size).
    """

    name: str
    measurements: dict[str, Summary] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    samples: dict[str, Samples] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, samples_ns: Sequence[int] | npt.NDArray[Any], label: str, *,
            keep: bool = False) -> Summary:
        """Record a distribution; ``keep`` holds the raw samples for a chart."""
        summary = Summary.of_ns(samples_ns)
        self.measurements[key] = summary
        self.labels[key] = label
        if keep:
            self.samples[key] = np.asarray(samples_ns, dtype=np.int64)
        return summary

    def ratio(self, numerator: str, denominator: str, stat: str = "median_us") -> float:
        """``numerator / denominator`` of one statistic of two measurements."""
        top = getattr(self.measurements[numerator], stat)
        bottom = getattr(self.measurements[denominator], stat)
        return float(top / bottom) if bottom > 0 else math.inf

    def target(self, name: str, value: float, op: str, limit: float, unit: str, detail: str) -> None:
        """Record a goal and the measured value."""
        self.targets.append(Target(name, value, op, limit, unit, detail))


def _collect() -> None:
    """Run the collector now, so garbage from the previous section is not timed."""
    gc.collect()


def time_calls(call: Call, n: int, *, warmup: int = 100) -> Samples:
    """Time ``n`` calls of ``call`` one by one, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    _collect()
    clock = time.perf_counter_ns
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        start = clock()
        call()
        out[i] = clock() - start
    return out


def time_each(call: Callable[..., object], items: Iterable[Sequence[Any]]) -> Samples:
    """Time ``call(*item)`` for each item (stateful work such as folding a stream)."""
    clock = time.perf_counter_ns
    out: list[int] = []
    append = out.append
    for item in items:
        start = clock()
        call(*item)
        append(clock() - start)
    return np.asarray(out, dtype=np.int64)


def time_interleaved(cases: Mapping[str, Call], n: Mapping[str, int] | int, *, block: int = 500,
                     warmup: int = 200) -> dict[str, Samples]:
    """Time several cases in alternating blocks so load changes hit all of them.

    Args:
        cases: name → zero-argument call.
        n: samples per case (one number for all, or per name).
        block: calls per block for the case with the most samples; cases with
            fewer samples get proportionally smaller blocks.
        warmup: untimed calls per case first.

    Returns:
        name → nanosecond samples.
    """
    counts = {name: (n if isinstance(n, int) else n[name]) for name in cases}
    rounds = max(1, math.ceil(max(counts.values()) / block))
    for call in cases.values():
        for _ in range(warmup):
            call()
    _collect()
    clock = time.perf_counter_ns
    out = {name: np.empty(counts[name], dtype=np.int64) for name in cases}
    filled = dict.fromkeys(cases, 0)
    names = list(cases)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            call, buffer = cases[name], out[name]
            stop = min(counts[name], math.ceil(counts[name] * (r + 1) / rounds))
            for i in range(filled[name], stop):
                start = clock()
                call()
                buffer[i] = clock() - start
            filled[name] = stop
    return out


def time_spaced(cases: Mapping[str, Call], n: int, spacing_s: float, *,
                warmup: int = 20) -> dict[str, Samples]:
    """Time single calls that each follow ``spacing_s`` of idleness.

    The cases take turns, one call per tick, so every call is preceded by a
    sleep of ``spacing_s`` (the app is idle between assignments): caches and
    branch predictors cool down as they would on a device.

    Args:
        cases: name → zero-argument call.
        n: samples per case.
        spacing_s: idle seconds before each call.
        warmup: untimed calls per case first (back to back).

    Returns:
        name → nanosecond samples.
    """
    for call in cases.values():
        for _ in range(warmup):
            call()
    _collect()
    clock = time.perf_counter_ns
    names = list(cases)
    out = {name: np.empty(n, dtype=np.int64) for name in names}
    deadline = time.perf_counter() + spacing_s
    for i in range(n * len(names)):
        name = names[i % len(names)]
        pause = deadline - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        start = clock()
        cases[name]()
        out[name][i // len(names)] = clock() - start
        deadline = time.perf_counter() + spacing_s
    return out
