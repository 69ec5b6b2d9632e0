"""Shared pieces of the collector tests: constants, a fake clock, contributions, requests.

Import ``TestClient`` from here (see the note at its import).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepersona.sdk import Contribution, day_bucket
from edgepersona.sdk.protocol.manifest import AssignerParams
from edgepersona.trainer.collector import AggregateStore, nearest_personas

with warnings.catch_warnings():
    # starlette >= 1.x prefers the httpx2 fork for its TestClient and warns (once, on import)
    # when it finds httpx; the test extras install httpx, which works the same here.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

APP = "com.example.collector"
MODEL_ID = "test-personas"  # as tests/conftest.py trains it
T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z: the fake clock's start
TODAY = day_bucket(T0)
# The test spec's bounds (tests/conftest.py) in model space, as devices contribute them:
# clip, then log1p for sessions, spend and basket.
LOWER = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
UPPER = (math.log1p(200.0), math.log1p(5000.0), math.log1p(500.0), 50.0, 365.0, 90.0)
OCTETS = {"content-type": "application/octet-stream"}


class FakeClock:
    """A settable clock in POSIX seconds."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance_days(self, days: float) -> None:
        self.now += days * 86_400


def pseudonym_of(device: int) -> str:
    """A fixed 64-hex-character sync pseudonym per simulated device."""
    return hashlib.sha256(f"device-{device}".encode()).hexdigest()


# The test bundle's assigner parameters (every version shares them); set once per session by
# conftest.py, so contributions can be made consistent with the bundle as a device makes them.
ASSIGNER: list[AssignerParams] = []


def features_of(persona: int) -> tuple[float, ...]:
    """Model-space features at a persona's centroid: a device would assign exactly that persona."""
    params = ASSIGNER[0]
    centroid = np.asarray(params.centroids[persona]) / np.asarray(params.scale) + np.asarray(params.center)
    return tuple(float(v) for v in np.clip(centroid, LOWER, UPPER))


def persona_of(features: tuple[float, ...]) -> int:
    """The persona a device with the test bundle assigns to model-space features (0 if misshapen)."""
    if len(features) != len(ASSIGNER[0].center):
        return 0
    return min(nearest_personas(ASSIGNER[0], features))


def contribution(**changes: Any) -> Contribution:
    """A valid, consistent contribution for version 1 today; keyword arguments override fields.

    Given a persona index of the test bundle but no features, the features are
    that persona's centroid; given features but no persona index, the persona is
    the one they lead to. Given both, both are taken as they are.
    """
    fields: dict[str, Any] = {
        "pseudonym": pseudonym_of(0), "pseudonym_epoch": 1, "sequence": 1, "day_bucket": TODAY,
        "model_version": 1, "features": (2.4, 5.5, 3.7, 5.0, 3.0, 12.0)}
    persona = changes.get("persona_index")
    if "features" not in changes and persona is not None and 0 <= persona < len(ASSIGNER[0].centroids):
        fields["features"] = features_of(persona)
    fields.update(changes)
    fields.setdefault("persona_index", persona_of(fields["features"]))
    return Contribution(**fields)


__all__ = ["TestClient"]  # re-exported for the test modules


@dataclass(frozen=True)
class CollectorKeys:
    private: bytes
    public: bytes


def post(client: TestClient, body: bytes) -> Any:
    """POST a sync body as application/octet-stream."""
    return client.post("/v1/sync", content=body, headers=OCTETS)


def cells(store: AggregateStore, version: int = 1) -> list[tuple[Any, ...]]:
    """Every aggregate cell of a version as plain tuples (for before/after comparisons)."""
    return [(c.day_bucket, c.persona_index, c.aggregate.count, c.aggregate.sums.tolist(),
             c.aggregate.sumsq.tolist()) for c in store.daily_aggregates(version)]
