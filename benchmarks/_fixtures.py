"""Synthetic, seeded inputs: a 16-feature spec, user rows, event streams, a signed bundle.

The bundle is trained with the real trainer (``train_bundle``, k fixed at 8)
and signed with a fresh key made by ``trainer.keys``, so the benchmarks run
the very files a device would download. Everything is derived from
``RunConfig.seed``; two runs on one machine feed identical inputs.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import Feature, FeatureSpec, TrackedEvent, Window, load_spec_json

from ._measure import RunConfig

__all__ = [
    "BenchBundle",
    "Event",
    "K",
    "bench_bundle",
    "bundle_dir",
    "client_events",
    "retail_events",
    "retail_spec",
    "spec16",
    "spec16_events",
    "user_rows",
]

F64 = npt.NDArray[np.float64]
Event = tuple[str, float, dict[str, float | str]]  # (name, unix seconds, validated properties)

K = 8  # personas in the benchmark bundle
BUNDLE_CREATED = datetime(2025, 1, 1, tzinfo=UTC)
BUNDLE_EXPIRES_DAYS = 365.0 * 50  # days: valid for any run
STREAM_START = 1_700_000_000.0  # unix seconds (2023-11-14), well before any clock

_H = Window.half_life
_B = Window.blend


def spec16() -> FeatureSpec:
    """A 16-feature app spec using every aggregate, window kind and transform."""
    f = Feature
    return FeatureSpec(features=(
        f(name="sessions_7d", event="session", aggregate="count", window=_H(7.0),
          transform="log1p", bounds=(0.0, 200.0), weight=0.08),
        f(name="sessions_90d", event="session", aggregate="count", window=_H(90.0),
          transform="log1p", bounds=(0.0, 1000.0), weight=0.05),
        f(name="views", event="view", aggregate="count", window=_B((0.6, 7.0), (0.4, 60.0)),
          transform="log1p", bounds=(0.0, 2000.0), weight=0.08),
        f(name="view_categories", event="view", property="category", aggregate="distinct",
          window=_H(30.0), bounds=(0.0, 40.0), weight=0.05),
        f(name="view_items", event="view", property="item", aggregate="distinct",
          window=_H(30.0), transform="log1p", bounds=(0.0, 256.0), weight=0.05),
        f(name="searches", event="search", aggregate="count", window=_H(14.0),
          transform="log1p", bounds=(0.0, 500.0), weight=0.05),
        f(name="carts", event="add_to_cart", aggregate="count", window=_H(14.0),
          transform="log1p", bounds=(0.0, 300.0), weight=0.06),
        f(name="cart_value", event="add_to_cart", property="value", aggregate="mean",
          window=_H(30.0), transform="log1p", bounds=(0.0, 2000.0), weight=0.05),
        f(name="orders", event="purchase", aggregate="count", window=_B((0.6, 30.0), (0.4, 180.0)),
          transform="log1p", bounds=(0.0, 100.0), weight=0.1),
        f(name="spend", event="purchase", property="value", aggregate="sum",
          window=_B((0.6, 30.0), (0.4, 180.0)), transform="log1p", bounds=(0.0, 20_000.0),
          weight=0.1),
        f(name="basket", event="purchase", property="value", aggregate="mean", window=_H(90.0),
          transform="log1p", bounds=(0.0, 2000.0), weight=0.06),
        f(name="purchase_categories", event="purchase", property="category",
          aggregate="distinct", bounds=(0.0, 40.0), weight=0.05),
        f(name="support_contacts", event="support", aggregate="count", window=_H(60.0),
          transform="log1p", bounds=(0.0, 50.0), weight=0.05),
        f(name="recency", event="*", aggregate="recency_days", bounds=(0.0, 365.0), weight=0.07),
        f(name="active_days", event="*", aggregate="active_days", window=_H(30.0),
          bounds=(0.0, 90.0), weight=0.05),
        f(name="lifetime_events", event="*", aggregate="count", transform="log1p",
          bounds=(0.0, 100_000.0), weight=0.05),
    ))


def retail_spec() -> FeatureSpec:
    """The retail spec bundled with the trainer (6 features)."""
    text = importlib.resources.files("edgepersona.trainer.datasets").joinpath("retail_spec.json")
    return load_spec_json(text.read_text(encoding="utf-8"))


def user_rows(spec: FeatureSpec, n: int, seed: int, k: int = K) -> F64:
    """Raw feature rows around ``k`` archetypes, clipped to the spec's bounds.

    Each archetype sits at a random point of each feature's range (skewed low
    for log1p features, as real counts are); users scatter around it with a
    multiplicative log-normal jitter.
    """
    rng = np.random.default_rng(seed)
    low = np.array([f.bounds[0] for f in spec.features])
    high = np.array([f.bounds[1] for f in spec.features])
    skew = np.array([3.0 if f.transform == "log1p" else 1.0 for f in spec.features])
    unit = rng.uniform(0.05, 0.95, size=(k, len(low))) ** skew
    centres = low + (high - low) * unit
    truth = rng.integers(0, k, size=n)
    jitter = rng.lognormal(mean=0.0, sigma=0.35, size=(n, len(low)))
    return np.asarray(np.clip(centres[truth] * jitter, low, high), dtype=np.float64)


def _times(rng: np.random.Generator, n: int, mean_gap_s: float, start: float) -> F64:
    """Event times with exponential gaps; 2% arrive out of order (up to 3 h late)."""
    at = start + np.cumsum(rng.exponential(mean_gap_s, size=n))
    late = rng.random(n) < 0.02
    at[late] -= rng.uniform(0.0, 3 * 3600.0, size=int(late.sum()))
    return np.maximum(at, start)


def _skewed(rng: np.random.Generator, n: int, size: int) -> npt.NDArray[np.int64]:
    """Indices in ``0..size-1`` with a heavy head (a few popular items)."""
    return np.asarray((rng.pareto(1.1, size=n) * 20).astype(np.int64) % size)


def spec16_events(n: int, seed: int, start: float = STREAM_START) -> list[Event]:
    """One subject's app events for :func:`spec16` (3% use a name no feature reads)."""
    rng = np.random.default_rng(seed)
    names = np.array(["session", "view", "search", "add_to_cart", "purchase", "support", "scroll"])
    chosen = rng.choice(names, size=n, p=[0.22, 0.4, 0.12, 0.1, 0.1, 0.03, 0.03])
    at = _times(rng, n, 900.0, start)
    items, categories = _skewed(rng, n, 5_000), rng.integers(0, 40, size=n)
    values = rng.lognormal(3.5, 1.0, size=n)
    events: list[Event] = []
    for i, name in enumerate(chosen.tolist()):
        props: dict[str, float | str] = {}
        if name in ("view", "add_to_cart", "purchase"):
            props["item"] = f"item{items[i]}"
        if name in ("view", "purchase"):
            props["category"] = f"cat{categories[i]}"
        if name in ("add_to_cart", "purchase"):
            props["value"] = round(float(values[i]), 2)
        events.append((name, float(at[i]), props))
    return events


def retail_events(n: int, seed: int, start: float = STREAM_START) -> list[Event]:
    """One customer's invoice lines and returns for the bundled retail spec."""
    rng = np.random.default_rng(seed)
    at = _times(rng, n, 4 * 3600.0, start)
    products = _skewed(rng, n, 4_000)
    values = rng.lognormal(2.0, 1.0, size=n)
    is_return = rng.random(n) < 0.03
    invoice, events = 0, list[Event]()
    for i in range(n):
        if is_return[i]:
            events.append(("return", float(at[i]), {}))
            continue
        invoice += int(rng.random() < 0.25)
        props: dict[str, float | str] = {"invoice": f"INV{invoice}", "product": f"P{products[i]}",
                                         "value": round(float(values[i]), 2)}
        events.append(("purchase", float(at[i]), props))
    return events


def client_events(subject: str, events: list[Event]) -> list[TrackedEvent]:
    """The same events as ``PersonaClient.track_many`` input for one subject."""
    out = []
    for name, at, props in events:
        rest: dict[str, Any] = {k: v for k, v in props.items() if k != "value"}
        value = props.get("value")
        out.append(TrackedEvent(subject, name, value if isinstance(value, float) else None, at,
                                rest or None))
    return out


@dataclass(frozen=True)
class BenchBundle:
    """The signed k=8 benchmark bundle and what it was trained on."""

    files: Mapping[str, bytes]
    public_pem: bytes
    public_path: Path
    private: Ed25519PrivateKey
    spec: FeatureSpec
    rows: F64
    train_seconds: float


_CACHE: dict[Path, BenchBundle] = {}


def bench_bundle(cfg: RunConfig) -> BenchBundle:
    """Train (once per run) and sign the k=8, d=16 benchmark bundle."""
    if cfg.scratch in _CACHE:
        return _CACHE[cfg.scratch]
    import time

    from edgepersona.trainer.release.keys import generate_signing_key, load_signing_key
    from edgepersona.trainer.release.train import TrainOptions, train_bundle

    private_path, public_path, _kid = generate_signing_key(cfg.scratch / "signing-key")
    private = load_signing_key(private_path)
    spec = spec16()
    rows = user_rows(spec, cfg.pick(1_000, 5_000), cfg.seed)
    options = TrainOptions(model_id="bench-personas", version=1, k=K, seed=cfg.seed,
                           stability_rounds=0, expires_days=BUNDLE_EXPIRES_DAYS)
    started = time.perf_counter()
    result = train_bundle(rows, spec, private, options, lineage={"source": "synthetic benchmark"},
                          now=BUNDLE_CREATED)
    took = time.perf_counter() - started
    bundle = BenchBundle(dict(result.files), public_path.read_bytes(), public_path, private, spec,
                         rows, took)
    _CACHE[cfg.scratch] = bundle
    return bundle


def bundle_dir(cfg: RunConfig) -> Path:
    """The benchmark bundle written as a folder (for subprocesses)."""
    from edgepersona.trainer.release.export import write_bundle

    out = cfg.scratch / "bundle"
    if not out.exists():
        write_bundle(out, bench_bundle(cfg).files)
    return out
