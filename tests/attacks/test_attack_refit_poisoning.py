"""Poisoning a refit through the real collector: forged contributions that pass its checks.

Anyone holding the collector's public key (every device does) can seal
well-formed envelopes. Here a forger mints pseudonyms and sends 6 % extra
contributions aimed at the smallest persona: within the bounds, one per
pseudonym, each claiming the persona nearest to its features (what a
consistency check would verify), at the farthest such point. Honest devices
send the same round as before. The scheduled refit must hold the poisoned
version and call the move concentrated, while the same round without the
forger is not called concentrated: the review gate tells poisoning from drift.
Real collector on loopback, real SQLite store, the same schedule cron runs.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import Contribution, Manifest, Sealer
from edgepersona.sdk.protocol.assign import model_space, numpy_assign
from edgepersona.sdk.protocol.manifest import parse_manifest
from edgepersona.trainer.collector import (
    CollectorConfig,
    LoopbackServer,
    create_app,
    encode_batch,
    open_store,
)
from edgepersona.trainer.release.export import write_bundle
from edgepersona.trainer.release.keys import generate_collector_key
from edgepersona.trainer.release.schedule import ScheduleOptions, ScheduleOutcome, run_schedule
from edgepersona.trainer.release.train import TrainResult

F64 = npt.NDArray[np.float64]
APP = "poison-test"
DAY = 20_100  # the first round's day bucket


class Clock:
    """The collector's settable clock (unix seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def farthest_claimable(manifest: Manifest, persona: int) -> F64:
    """The model-space point farthest from a persona's centre that is still nearest to it."""
    params = manifest.assigner
    box = model_space(params, np.array([params.lower, params.upper], dtype=np.float64))
    center, scale = np.asarray(params.center), np.asarray(params.scale)
    centroids = np.asarray(params.centroids)
    own = centroids[persona]
    best, reach = own, 0.0
    corners = np.array(np.meshgrid(*box.T)).reshape(box.shape[1], -1).T
    for corner in (corners - center) * scale:
        path = own + np.linspace(0.0, 1.0, 101)[:, None] * (corner - own)
        ok = np.linalg.norm(path[:, None] - centroids, axis=2).argmin(axis=1) == persona
        far = path[ok][-1]
        if np.linalg.norm(far - own) > reach:
            best, reach = far, float(np.linalg.norm(far - own))
    return np.asarray(best / scale + center, dtype=np.float64)


def send(url: str, sealer: Sealer, manifest: Manifest, t: F64, labels: npt.NDArray[np.int64],
         day: int) -> int:
    """Seal one contribution per row, each from a fresh pseudonym; the number accepted."""
    envelopes = [sealer.seal(Contribution(
        pseudonym=secrets.token_hex(16), pseudonym_epoch=0, sequence=1, day_bucket=day - i % 5,
        model_version=manifest.version, persona_index=int(p), features=tuple(map(float, x))))
        for i, (p, x) in enumerate(zip(labels, t, strict=True))]
    accepted = 0
    for start in range(0, len(envelopes), 200):
        request = urllib.request.Request(f"{url}/v1/sync", method="POST",
                                         data=encode_batch(envelopes[start:start + 200]),
                                         headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(request, timeout=20) as reply:
            accepted += int(json.loads(reply.read())["accepted"])
    return accepted


def two_rounds(work: Path, trained: TrainResult, rows: F64, key: Ed25519PrivateKey,
               public_key: bytes, *, forged_share: float) -> tuple[ScheduleOutcome, Manifest, str]:
    """Round 1 honest (the schedule publishes v2), round 2 honest plus forgeries; round 2's outcome."""
    shelf = work / "bundles"
    model = trained.manifest.model_id
    write_bundle(shelf / f"{model}-v1", trained.files)
    private, public = generate_collector_key(work / "keys")
    sealer = Sealer(public.read_bytes(), app_id=APP)
    store = open_store(f"sqlite:///{work / 'collector.db'}")
    clock = Clock(DAY * 86_400.0 + 3_600)
    app = create_app(CollectorConfig(app_id=APP, bundles_dir=shelf),
                     collector_private_key=private.read_bytes(), store=store, clock=clock)
    options = ScheduleOptions(k_min=5, min_move=0.0)
    now = datetime(2025, 6, 1, tzinfo=UTC)
    try:
        with LoopbackServer(app) as server:
            v1 = trained.manifest
            labels = numpy_assign(v1.assigner, rows)[0]
            assert send(server.url, sealer, v1, model_space(v1.assigner, rows), labels, DAY) == len(rows)
            first = run_schedule(shelf, store, key, [public_key], options, now=now)
            assert first.status == "published" and first.new_version == 2, first.line
            v2 = parse_manifest((shelf / f"{model}-v2" / "manifest.json").read_bytes())
            clock.now += 7 * 86_400.0
            labels = numpy_assign(v2.assigner, rows)[0]
            t = model_space(v2.assigner, rows)
            target = int(np.bincount(labels, minlength=len(v2.personas)).argmin())
            forged = round(forged_share * len(rows))
            if forged:
                t = np.vstack([t, np.tile(farthest_claimable(v2, target), (forged, 1))])
                labels = np.r_[labels, np.full(forged, target)]
                z = (t[-1] - np.asarray(v2.assigner.center)) * np.asarray(v2.assigner.scale)
                gaps = np.linalg.norm(np.asarray(v2.assigner.centroids) - z, axis=1)
                assert int(gaps.argmin()) == target  # it passes a consistency check
            assert send(server.url, sealer, v2, t, labels, DAY + 7) == len(t)
            return run_schedule(shelf, store, key, [public_key], options, now=now), v2, \
                v2.personas[target].id
    finally:
        store.close()


def test_forged_contributions_that_pass_the_checks_are_held_as_concentrated(
        trained: TrainResult, bundle_training_rows: F64, signing_key: Ed25519PrivateKey,
        public_key: bytes, tmp_path: Path) -> None:
    poisoned, _, target = two_rounds(tmp_path / "poisoned", trained, bundle_training_rows,
                                     signing_key, public_key, forged_share=0.06)
    assert poisoned.status == "held" and poisoned.drift is not None, poisoned.line
    assert poisoned.drift.suspect and "possible poisoning" in poisoned.line
    kinds = {p.id: p.kind for p in poisoned.drift.personas}
    assert kinds[target] == "concentrated"
    assert poisoned.serving == 2  # the collector keeps serving the last approved version
    honest, _, _ = two_rounds(tmp_path / "honest", trained, bundle_training_rows, signing_key,
                              public_key, forged_share=0.0)
    assert honest.drift is not None and not honest.drift.suspect, honest.line
