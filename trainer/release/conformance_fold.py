"""Conformance cases for the fold: event sequences, the features they give, and refusals.

Three specs are folded: the reference bundle's, a *coverage* spec with every
aggregate under every window kind and a small distinct cap (so eviction
happens), and a *wildcard* spec whose features read every event (``"*"``).
Event sequences are random but seeded: out of order, duplicates, bursts at one
instant, long gaps, numeric strings, numbers as distinct values, missing
properties, and events no feature uses.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import (
    ClientOptions,
    FeatureSpec,
    MemoryKeyProvider,
    PersonaClient,
    load_spec_json,
)
from edgepersona.sdk.protocol import FoldPlan, check_event
from edgepersona.trainer.release.conformance_cases import outcome_of

__all__ = ["COVERAGE_SPEC", "WILDCARD_SPEC", "fold_section"]

_WINDOWS = {"all": {"kind": "all_time"},
            "hl": {"kind": "half_life", "half_lives_days": [7]},
            "bl": {"kind": "blend", "half_lives_days": [3, 60], "mix": [0.7, 0.3]}}
_SOURCES = {"count": ("a", None), "sum": ("a", "value"), "mean": ("b", "amount"),
            "distinct": ("b", "item"), "active_days": ("a", None)}

COVERAGE_SPEC: dict[str, Any] = {
    "schema_version": 1, "distinct_cap": 3,
    "features": [
        *({"name": f"{agg}_{w}", "event": event, "aggregate": agg, "window": window,
           "bounds": [0, 1000], **({"property": prop} if prop else {})}
          for agg, (event, prop) in _SOURCES.items() for w, window in _WINDOWS.items()),
        {"name": "recency_b", "event": "b", "aggregate": "recency_days", "bounds": [0, 400]},
    ],
}
WILDCARD_SPEC: dict[str, Any] = {
    "schema_version": 1, "distinct_cap": 2,
    "features": [
        {"name": "events", "event": "*", "aggregate": "count", "window": _WINDOWS["hl"],
         "bounds": [0, 100]},
        {"name": "items", "event": "*", "aggregate": "distinct", "property": "item",
         "window": _WINDOWS["bl"], "bounds": [0, 100]},
        {"name": "days", "event": "*", "aggregate": "active_days", "bounds": [0, 100]},
        {"name": "spend", "event": "a", "aggregate": "sum", "property": "value", "bounds": [0, 1e6]},
        {"name": "recency", "event": "*", "aggregate": "recency_days", "bounds": [0, 400]},
    ],
}
_ITEMS = ("x", "y", "z", "w", "X", "é", "3", 3, 3.0, 1e16, 1e-7, 0.0, -0.0, 12345.678, 1.5e-5, 2**53,
          2.0**-24, -2.5)
_AMOUNTS = (12.5, 0.0, 3, " 12.5 ", "1_0", "1e3", ".5", "abc", "inf", "nan", "", None)
_DAY = 86_400.0


def _events(rng: random.Random, names: tuple[str, ...], start: float) -> list[dict[str, Any]]:
    """One event sequence: out of order, duplicates, bursts at one instant and long gaps."""
    events: list[dict[str, Any]] = []
    at = start
    for _ in range(rng.randint(1, 30)):
        at += rng.choice([0.0, 0.0, 1.0, 3600.5, _DAY * rng.random() * 40, _DAY * 400])
        when = at - rng.choice([0.0, 0.0, 0.0, _DAY * 3, 12.25])  # some arrive late
        props: dict[str, Any] = {"invoice": f"inv{rng.randint(1, 6)}",
                                 "product": f"sku{rng.randint(1, 300)}",
                                 "item": rng.choice(_ITEMS), "amount": rng.choice(_AMOUNTS)}
        if rng.random() < 0.15:
            del props["item"]
        value = round(rng.uniform(0.5, 400.0), 2) if rng.random() < 0.85 else None
        events.append({"event": rng.choice(names), "value": value, "at": when, "properties": props})
        if rng.random() < 0.1:
            events.append(dict(events[-1]))  # a duplicate
    return events


def _fold(spec: FeatureSpec, events: list[dict[str, Any]], at: float) -> dict[str, Any]:
    """Fold events in order and evaluate: the expected features and counters."""
    state = FoldPlan.from_spec(spec).new_state()
    for e in events:
        state.fold(e["event"], e["at"], check_event(e["event"], e["value"], e["at"], e["properties"]))
    return {"events": events, "at": at, "features": state.evaluate_reference(at).tolist(),
            "folded": state.events, "ignored": state.ignored, "latest": state.latest}


def _group(name: str, spec: FeatureSpec, names: tuple[str, ...], seed: int,
           count: int) -> dict[str, Any]:
    rng = random.Random(seed)  # noqa: S311 - reproducible vectors, not secrets
    cases = []
    for index in range(count):
        events = _events(rng, names, 1_300_000_000.0 + rng.random() * 1e8)
        latest = max(e["at"] for e in events)
        gap = rng.choice([0.0, 0.5, _DAY, _DAY * 90]) if index else _DAY * 20_000
        cases.append(_fold(spec, events, latest + gap))
    return {"name": name, "spec": spec.model_dump(mode="json"), "cases": cases}


_REFUSED_EVENTS: tuple[dict[str, Any], ...] = (
    {"event": "", "value": None, "at": 10.0, "properties": {}},
    {"event": 5, "value": None, "at": 10.0, "properties": {}},
    {"event": "a", "value": None, "at": -1.0, "properties": {}},
    {"event": "a", "value": None, "at": "10", "properties": {}},
    {"event": "a", "value": None, "at": True, "properties": {}},
    {"event": "a", "value": "12", "at": 10.0, "properties": {}},
    {"event": "a", "value": True, "at": 10.0, "properties": {}},
    {"event": "a", "value": None, "at": 10.0, "properties": {"item": False}},
    {"event": "a", "value": None, "at": 10.0, "properties": {"item": [1]}},
    {"event": "a", "value": None, "at": 10.0, "properties": {"item": {"k": 1}}},
    {"event": "a", "value": 3, "at": 0, "properties": {"item": "x", "n": None, "k": 2}},
    {"event": "a", "value": 2.5, "at": 10.0, "properties": {"value": "ignored: value wins"}},
)


def _checked_events() -> list[dict[str, Any]]:
    """Events refused before anything is folded (InputError), and accepted ones normalised."""
    cases = []
    for e in _REFUSED_EVENTS:
        outcome, props = outcome_of(check_event, e["event"], e["value"], e["at"], e["properties"])
        cases.append({**e, "outcome": outcome, **({"folded_properties": props} if props else {})})
    return cases


def _evaluation_cases(spec: FeatureSpec) -> list[dict[str, Any]]:
    """Evaluating before the latest folded event is refused; at it, allowed."""
    events: list[dict[str, Any]] = [{"event": "a", "value": 1.0, "at": 1000.0, "properties": {}},
              {"event": "a", "value": 1.0, "at": 500.0, "properties": {}},
              {"event": "c", "value": 1.0, "at": 5000.0, "properties": {}}]  # ignored: not latest
    state = FoldPlan.from_spec(spec).new_state()
    for e in events:
        state.fold(e["event"], e["at"], check_event(e["event"], e["value"], e["at"], e["properties"]))
    cases = []
    for at in (999.5, 1000.0, 0.0, 4999.0):
        outcome, _ = outcome_of(state.evaluate, at)
        cases.append({"spec": "coverage", "events": events, "at": at, "outcome": outcome})
    return cases


def _future_cases(files: Mapping[str, bytes], key: Ed25519PrivateKey) -> list[dict[str, Any]]:
    """The device refuses an event later than its clock plus ``max_future_seconds``."""
    now, cases = 1_767_225_600.0, []
    with tempfile.TemporaryDirectory() as folder:
        client = PersonaClient.open(files, trusted_keys=[key.public_key()],
                                    store=Path(folder) / "state.db",
                                    key_provider=MemoryKeyProvider(bytes(32)),
                                    options=ClientOptions(max_future_seconds=300.0),
                                    clock=lambda: now)
        with client:
            for at in (now - 86_400.0, now, now + 300.0, now + 300.001, now + 86_400.0):
                outcome, _ = outcome_of(client.track, "purchase", 5.0, at=at)
                cases.append({"now": now, "max_future_seconds": 300.0, "at": at, "outcome": outcome})
    return cases


def fold_section(reference: FeatureSpec, files: Mapping[str, bytes],
                 key: Ed25519PrivateKey) -> dict[str, Any]:
    """Every fold vector of the kit.

    Args:
        reference: the reference bundle's spec.
        files: the reference bundle (the future-event rule runs on a real client).
        key: the key it is signed with.

    Returns:
        ``groups`` (spec and cases), ``checked_events``, ``evaluation`` and ``future``.
    """
    coverage = load_spec_json(json.dumps(COVERAGE_SPEC))
    wildcard = load_spec_json(json.dumps(WILDCARD_SPEC))
    return {
        "groups": [_group("reference", reference, ("purchase", "return", "page_view"), 1234, 20),
                   _group("coverage", coverage, ("a", "b", "c"), 99, 30),
                   _group("wildcard", wildcard, ("a", "b"), 7, 15)],
        "checked_events": _checked_events(),
        "evaluation": _evaluation_cases(coverage),
        "future": _future_cases(files, key),
    }
