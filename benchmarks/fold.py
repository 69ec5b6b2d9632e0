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
* ``client.assign``: ``PersonaClient.assign`` of a cached subject (default
  backend); ``client.assign_fastest`` the same with ``backend="fastest"``.
* ``peer.ort_run``: ``InferenceSession.run`` on the same graph, SDK session
  options, float32 input ready: the peer of the device-path ratios, timed in
  blocks alternating with the cases it is compared to.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from edgepersona.sdk import (
    ClientOptions,
    FoldPlan,
    FoldState,
    MemoryKeyProvider,
    PersonaClient,
    PersonaRuntime,
)
from edgepersona.sdk.protocol.assign import INPUT_NAME, session_options

from ._fixtures import (
    Event,
    bench_bundle,
    client_events,
    retail_events,
    retail_spec,
    spec16_events,
)
from ._measure import Call, RunConfig, SuiteResult, time_calls, time_each, time_interleaved

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
    row = state.evaluate(at_end)
    ort_run = _ort_run(bundle.files["model.onnx"], row)
    n = cfg.pick(2_000, 50_000)
    timed = time_interleaved({"evaluate.spec16": lambda: state.evaluate(at_end),
                              "assign.spec16": lambda: runtime.assign(row),
                              "peer.ort_run": ort_run}, n, block=cfg.pick(500, 2_000))
    result.add("evaluate.spec16", timed["evaluate.spec16"], "FoldState.evaluate, 16 features")
    result.add("assign.spec16", timed["assign.spec16"], "PersonaRuntime.assign of an evaluated row")

    def fold_assign(live: FoldState, name: str, at: float, props: dict[str, float | str]) -> object:
        live.fold(name, at, props)
        return runtime.assign(live.evaluate(max(at, live.latest)))

    samples, peer = [], [timed["peer.ort_run"]]
    for events in app[:cfg.pick(2, 10)]:
        live = plan.new_state()
        samples.append(time_each(fold_assign, [(live, *event) for event in events]))
        peer.append(time_calls(ort_run, len(events), warmup=10))  # alternates with each stream
    result.add("fold_assign.spec16", np.concatenate(samples),
               "fold one event + evaluate + PersonaRuntime.assign")
    result.add("peer.ort_run", np.concatenate(peer),
               "InferenceSession.run, SDK session options, float32 input ready (the peer)")
    _client(cfg, result, app, ort_run)

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
    result.target("PersonaClient.assign (cached) <= 1.5x raw ORT run",
                  result.ratio("client.assign", "client.peer.ort_run"), "<=", 1.5, "x",
                  "client.assign median / client.peer.ort_run median (interleaved)")
    result.target("fold one event + evaluate + assign <= 2x raw ORT run",
                  result.ratio("fold_assign.spec16", "peer.ort_run"), "<=", 2.0, "x",
                  "fold_assign.spec16 median / peer.ort_run median")
    result.figures["ratio_median.client_assign_fastest_over_ort_run"] = round(
        result.ratio("client.assign_fastest", "client.peer.ort_run"), 3)
    result.figures["ratio_median.evaluate_over_ort_run"] = round(
        result.ratio("evaluate.spec16", "peer.ort_run"), 3)
    return result


def _ort_run(model: bytes, row: np.ndarray) -> Call:
    """A raw onnxruntime ``run`` of the bundle's graph on one prepared float32 row."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, sess_options=session_options(),
                                   providers=["CPUExecutionProvider"])
    feed = {INPUT_NAME: row[None, :].astype(np.float32)}
    return lambda: session.run(None, feed)


def _client(cfg: RunConfig, result: SuiteResult, app: list[list[Event]], ort_run: Call) -> None:
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
        fastest = PersonaClient.open(bundle.files, trusted_keys=[bundle.public_pem],
                                     store=folder / "store-fastest.db",
                                     key_provider=MemoryKeyProvider(os.urandom(32)),
                                     options=ClientOptions(backend="fastest"))
        fastest.track_many([e for e in events if e.subject == "s1"][:batch])
        chosen = fastest.runtime.backend
        timed = time_interleaved({"client.assign": lambda: client.assign(subject="s1"),
                                  "client.assign_fastest": lambda: fastest.assign(subject="s1"),
                                  "client.peer.ort_run": ort_run},
                                 cfg.pick(1_000, 20_000), block=cfg.pick(250, 1_000))
        fastest.close()
        result.add("client.assign", timed["client.assign"],
                   "PersonaClient.assign, cached subject (evaluate at the clock + assign)")
        result.add("client.assign_fastest", timed["client.assign_fastest"],
                   f"PersonaClient.assign, cached subject, backend='fastest' ({chosen})")
        result.add("client.peer.ort_run", timed["client.peer.ort_run"],
                   "InferenceSession.run, SDK session options (the peer, interleaved)")
    finally:
        client.close()
