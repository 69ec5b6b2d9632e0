"""What the anti-forgery checks cost the collector: ingest with them against ingest without.

``python -m benchmarks.collector_checks [--batches 40] [--batch 200] [--db URL]``

Two :class:`Collector` cores over the same kind of store (SQLite in a scratch
file, or ``--db`` naming an *empty* PostgreSQL database or schema, used by both
in turn: each run adds fresh contributions) ingest the same kind of batches of
honest, pre-sealed contributions (16 features, the benchmark bundle's own
persona, 4 per pseudonym so every one takes a quota slot) in interleaved
rounds:

* ``checked``: the defaults: the consistency check (the persona recomputed from
  the features with the bundle) and the per-pseudonym daily quota (4 keyed
  slots per contribution);
* ``unchecked``: the same collector with both turned off.

Reported (JSON on stdout): per-batch ingest time, median and p99, for each; the
ratio of the medians (``checked / unchecked``); and per envelope, the median
cost of the consistency check alone (it runs once per batch: the batch's cost
divided by its size) against opening the envelope (HPKE), the peer it runs
beside. Timings are wall-clock ``perf_counter`` on a shared machine: read the
ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgepersona.sdk import Contribution, Sealer, day_bucket
from edgepersona.sdk.protocol.envelope import Opener, generate_collector_keypair
from edgepersona.trainer.collector import (
    BundleShelf,
    Collector,
    CollectorConfig,
    Outcome,
    consistent_personas,
    encode_batch,
    nearest_personas,
    open_store,
)
from edgepersona.trainer.release.export import zip_bundle

from ._fixtures import bench_bundle
from ._measure import RunConfig

__all__ = ["main", "run"]

_T0 = 1_750_000_000.0  # the fixed clock of both collectors
APP_ID = "bench-checks"


def _bundles_folder(scratch: Path) -> Path:
    """The benchmark bundle (k=8, 16 features), trained now, as a bundles folder."""
    folder = scratch / "bundles"
    folder.mkdir(parents=True, exist_ok=True)
    zip_bundle(bench_bundle(RunConfig(quick=True, scratch=scratch)).files, folder / "bench-personas-v1.zip")
    return folder


def _percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` quantile (nearest rank) of some timings."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _bodies(sealer: Sealer, bundles: Path, *, prefix: str, batches: int, batch: int) -> list[bytes]:
    """Batches of honest contributions: features from the bundle's space, their own persona."""
    shape = BundleShelf(bundles).approved()[1].shape
    assert shape.assigner is not None
    rng = np.random.default_rng(7)
    low, high = np.array(shape.lower), np.array(shape.upper)
    bodies = []
    for b in range(batches):
        envelopes = []
        for i in range(batch):
            index = b * batch + i
            features = tuple(float(v) for v in low + rng.uniform(size=len(low)) * (high - low))
            envelopes.append(sealer.seal(Contribution(
                pseudonym=hashlib.sha256(f"{prefix}-{index // 4}".encode()).hexdigest(),
                pseudonym_epoch=1, sequence=index % 4 + 1, day_bucket=day_bucket(_T0), model_version=1,
                persona_index=min(nearest_personas(shape.assigner, features)), features=features)))
        bodies.append(encode_batch(envelopes))
    return bodies


def _timed(call: Callable[[], Any]) -> float:
    """Seconds one call takes."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def run(*, batches: int, batch: int, db: str | None, scratch: Path) -> dict[str, Any]:
    """Measure both collectors in interleaved rounds (see the module docstring).

    Args:
        batches: Batches ingested by each collector.
        batch: Envelopes per batch.
        db: An empty database URL, or None for SQLite files in ``scratch``.
        scratch: A private scratch folder.

    Returns:
        The report.
    """
    bundles = _bundles_folder(scratch)
    private, public = generate_collector_keypair()
    sealer = Sealer(public, app_id=APP_ID)
    configs = {"checked": CollectorConfig(app_id=APP_ID, bundles_dir=bundles),
               "unchecked": CollectorConfig(app_id=APP_ID, bundles_dir=bundles, consistency_check=False,
                                            pseudonym_daily_quota=None)}
    stores = {name: open_store(db or f"sqlite:///{scratch / (name + '.db')}") for name in configs}
    cores = {name: Collector(config, collector_private_key=private, store=stores[name], clock=lambda: _T0)
             for name, config in configs.items()}
    bodies = {name: _bodies(sealer, bundles, prefix=name, batches=batches, batch=batch) for name in configs}
    times: dict[str, list[float]] = {name: [] for name in configs}
    for round_number in range(batches):
        order = list(configs) if round_number % 2 == 0 else list(reversed(configs))
        for name in order:
            body = bodies[name][round_number]
            times[name].append(_timed(lambda core=cores[name], body=body: core.ingest(body)))
    accepted = {name: cores[name].counts()[Outcome.ACCEPTED] for name in configs}
    for store in stores.values():
        store.close()
    report: dict[str, Any] = {"batch": batch, "batches": batches, "backend": "postgresql" if db else "sqlite",
                              "accepted": accepted}
    for name, values in times.items():
        report[name] = {"median_ms": round(statistics.median(values) * 1e3, 2),
                        "p99_ms": round(_percentile(values, 0.99) * 1e3, 2)}
    report["ratio_checked_to_unchecked"] = round(statistics.median(times["checked"])
                                                 / statistics.median(times["unchecked"]), 3)
    report["per_envelope"] = _per_envelope(sealer, Opener(private), bundles, batch)
    return report


def _per_envelope(sealer: Sealer, opener: Opener, bundles: Path, batch: int) -> dict[str, float]:
    """Median µs per envelope: the batch's consistency check against opening one envelope."""
    shape = BundleShelf(bundles).approved()[1].shape
    assert shape.assigner is not None
    params = shape.assigner
    rng = np.random.default_rng(11)
    low, high = np.array(shape.lower), np.array(shape.upper)
    rows = [tuple(float(v) for v in low + rng.uniform(size=len(low)) * (high - low)) for _ in range(batch)]
    claimed = [min(nearest_personas(params, row)) for row in rows]
    envelope = sealer.seal(Contribution(
        pseudonym="ab" * 32, pseudonym_epoch=1, sequence=1, day_bucket=day_bucket(_T0), model_version=1,
        persona_index=claimed[0], features=rows[0]))
    check = [_timed(lambda: consistent_personas(params, rows, claimed)) / batch for _ in range(200)]
    opening = [_timed(lambda: opener.open(envelope, app_id=APP_ID)) for _ in range(2000)]
    return {"consistency_check_us": round(statistics.median(check) * 1e6, 1),
            "open_envelope_us": round(statistics.median(opening) * 1e6, 1),
            "ratio_check_to_open": round(statistics.median(check) / statistics.median(opening), 3)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the report as JSON.

    Args:
        argv: Command-line arguments (default: ``sys.argv``).

    Returns:
        0.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.collector_checks",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=40, help="batches per collector (40)")
    parser.add_argument("--batch", type=int, default=200, help="envelopes per batch (200)")
    parser.add_argument("--db", default=None, help="an empty database URL (default: SQLite in scratch)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        report = run(batches=args.batches, batch=args.batch, db=args.db, scratch=Path(scratch))
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
