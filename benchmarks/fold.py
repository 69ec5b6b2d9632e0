"""Folding events on the device: per event, in memory and through the durable client.

* ``fold.retail`` / ``fold.spec16``: ``FoldState.fold`` per event on the
  bundled retail spec (6 features) and on the 16-feature benchmark spec; each
  subject's stream is folded from an empty state, so distinct-value sets grow
  to their cap as they would on a device.
* ``evaluate.spec16``: ``FoldState.evaluate`` (the feature vector ``assign`` needs).
* ``fold_assign.spec16``: fold one event, evaluate, ``PersonaRuntime.assign``.
* ``client.track_durable``: ``PersonaClient.track``, one SQLite commit with
  fsync per event (``synchronous=FULL``), on the scratch folder's disk.
* ``client.track_many_per_event``: ``track_many`` batches, time per event.
* ``client.assign``: ``PersonaClient.assign`` of a cached subject.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from edgepersona.sdk import FoldPlan, FoldState, MemoryKeyProvider, PersonaClient, PersonaRuntime

from ._fixtures import (
    Event,
    bench_bundle,
    client_events,
    retail_events,
    retail_spec,
    spec16_events,
)
from ._measure import RunConfig, SuiteResult, time_calls, time_each

__all__ = ["run"]


def _fold_streams(plan: FoldPlan, streams: list[list[Event]]) -> np.ndarray:
    """Fold every stream into a fresh state, timing each ``fold`` call."""
    out = []
    for events in streams:
        out.append(time_each(plan.new_state().fold, events))
    return np.concatenate(out)


def _filesystem(path: Path) -> str:
    """The file system type holding ``path`` (fsync cost depends on it)."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def run(cfg: RunConfig) -> SuiteResult:
    """Measure folding, alone and through the client."""
    result = SuiteResult("fold")
    subjects, per_subject = cfg.pick(4, 40), cfg.pick(2_000, 5_000)
    retail = [retail_events(per_subject, cfg.seed + i) for i in range(subjects)]
    app = [spec16_events(per_subject, cfg.seed + 100 + i) for i in range(subjects)]
    for _ in range(2):  # warm-up: compile paths, fill caches
        _fold_streams(FoldPlan.from_spec(retail_spec()), retail[:1])
    result.add("fold.retail", _fold_streams(FoldPlan.from_spec(retail_spec()), retail),
               "FoldState.fold per event, bundled retail spec (6 features)")
    bundle = bench_bundle(cfg)
    runtime = PersonaRuntime.open(bundle.files, trusted_keys=[bundle.public_pem])
    plan = runtime.fold_plan
    result.add("fold.spec16", _fold_streams(plan, app), "FoldState.fold per event, 16-feature spec")

    state = plan.new_state()
    for name, at, props in app[0]:
        state.fold(name, at, props)
    at_end = max(e[1] for e in app[0])
    result.add("evaluate.spec16", time_calls(lambda: state.evaluate(at_end), cfg.pick(2_000, 50_000)),
               "FoldState.evaluate, 16 features")

    row = state.evaluate(at_end)
    result.add("assign.spec16", time_calls(lambda: runtime.assign(row), cfg.pick(2_000, 50_000)),
               "PersonaRuntime.assign of an evaluated row")

    def fold_assign(live: FoldState, name: str, at: float, props: dict[str, float | str]) -> object:
        live.fold(name, at, props)
        return runtime.assign(live.evaluate(max(at, live.latest)))

    samples = []
    for events in app[:cfg.pick(2, 10)]:
        live = plan.new_state()
        samples.append(time_each(fold_assign, [(live, *event) for event in events]))
    result.add("fold_assign.spec16", np.concatenate(samples),
               "fold one event + evaluate + PersonaRuntime.assign")
    _client(cfg, result, app)

    fold_retail = result.measurements["fold.retail"].median_us
    fold16 = result.measurements["fold.spec16"].median_us
    result.target("fold median <= 5 µs (retail spec)", fold_retail, "<=", 5.0, "µs", "fold.retail median")
    result.target("fold median <= 5 µs (16-feature spec)", fold16, "<=", 5.0, "µs", "fold.spec16 median")
    result.figures["ratio_median.track_durable_over_fold"] = round(
        result.ratio("client.track_durable", "fold.spec16"), 1)
    result.figures["ratio_median.track_many_over_fold"] = round(
        result.ratio("client.track_many_per_event", "fold.spec16"), 2)
    result.figures["ratio_median.fold_assign_over_assign"] = round(
        result.ratio("fold_assign.spec16", "assign.spec16"), 2)
    return result


def _client(cfg: RunConfig, result: SuiteResult, app: list[list[Event]]) -> None:
    """Durable single-event tracking, batched tracking and assignment through PersonaClient."""
    bundle = bench_bundle(cfg)
    folder = cfg.scratch / "fold-client"
    folder.mkdir(exist_ok=True)
    result.figures["store_filesystem"] = _filesystem(folder.resolve())
    client = PersonaClient.open(bundle.files, trusted_keys=[bundle.public_pem],
                                store=folder / "store.db", key_provider=MemoryKeyProvider(os.urandom(32)))
    try:
        durable = client_events("durable", app[0][:cfg.pick(30, 400)])
        client.track(durable[0].event, durable[0].value, subject="durable", at=durable[0].at,
                     properties=durable[0].properties)  # warm: creates the subject's keys
        samples = time_each(
            lambda e: client.track(e.event, e.value, subject=e.subject, at=e.at, properties=e.properties),
            [(e,) for e in durable[1:]])
        result.add("client.track_durable", samples, "PersonaClient.track, one fsynced commit per event")

        batch = cfg.pick(250, 1_000)
        events = [e for i, stream in enumerate(app) for e in client_events(f"s{i % 8}", stream)]
        batches = [events[i:i + batch] for i in range(0, len(events) - batch + 1, batch)]
        batches = batches[:cfg.pick(4, 40)]
        per_event = []
        for chunk in batches:
            start = time.perf_counter_ns()
            client.track_many(chunk)
            per_event.append((time.perf_counter_ns() - start) // len(chunk))
        result.add("client.track_many_per_event", per_event,
                   f"PersonaClient.track_many, {batch}-event batches over 8 subjects, time per event")
        result.figures["track_many_batch_size"] = batch
        result.add("client.assign", time_calls(lambda: client.assign(subject="s1"), cfg.pick(1_000, 20_000)),
                   "PersonaClient.assign, cached subject (evaluate at the clock + assign)")
    finally:
        client.close()
