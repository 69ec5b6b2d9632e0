"""An edge gateway: one PersonaClient holding many subjects.

Runs in a fresh child process (``python -m benchmarks.gateway``) so its
memory figures are not blurred by the other suites. The client keeps every
subject cached (``cache_subjects`` = subjects), so the memory per subject is
that of a live, cached state plus the store's per-subject costs.

* memory per subject: RSS growth (``VmRSS``) while the subjects' events are
  folded and committed, divided by the subjects; the same with
  ``tracemalloc`` (Python allocations only) in a second, traced pass;
* ``track_many``: events per second in 1,000-event batches (one commit each);
* ``assign``: ``PersonaClient.assign`` of random cached subjects;
* ``track_durable``: single ``track`` calls (one fsynced commit each).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from ._fixtures import bench_bundle, bundle_dir, client_events, spec16_events
from ._machine import rss_mib
from ._measure import RunConfig, SuiteResult, Summary, time_calls

__all__ = ["run"]

BATCH = 1_000  # events per track_many call


def run(cfg: RunConfig) -> SuiteResult:
    """Run the gateway child and turn its report into a suite result."""
    result = SuiteResult("gateway")
    folder = bundle_dir(cfg)
    subjects = cfg.pick(500, 10_000)
    args = [sys.executable, "-m", "benchmarks.gateway", "--bundle", str(folder),
            "--public-key", str(bench_bundle(cfg).public_path), "--subjects", str(subjects),
            "--events-per-subject", str(cfg.pick(4, 5)), "--scratch", str(cfg.scratch),
            "--seed", str(cfg.seed), "--samples", str(cfg.pick(500, 20_000))]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=1_800,
                          cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"gateway child failed: {done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout)
    for key, body in report.pop("measurements").items():
        result.measurements[key] = Summary(**body["summary"])
        result.labels[key] = body["label"]
    result.figures.update(report)
    result.target("gateway memory per subject <= 2 KiB", report["rss_per_subject_kib"], "<=", 2.0,
                  "KiB", f"VmRSS growth / {subjects} cached subjects")
    result.notes.append("Memory per subject counts the cached fold state, the store's per-subject"
                        " keys and caches and SQLite's page cache growth; tracemalloc sees Python"
                        " objects only.")
    return result


def _populate(client: Any, batches: list[list[Any]]) -> list[int]:
    """Commit every batch; nanoseconds per batch."""
    out = []
    for batch in batches:
        start = time.perf_counter_ns()
        client.track_many(batch)
        out.append(time.perf_counter_ns() - start)
    return out


def _batches(subjects: int, per_subject: int, seed: int) -> list[list[Any]]:
    """Every subject's events, interleaved across subjects, cut into batches."""
    streams = [client_events(f"user-{i:06d}", spec16_events(per_subject, seed + i))
               for i in range(subjects)]
    events = [stream[j] for j in range(per_subject) for stream in streams]
    return [events[i:i + BATCH] for i in range(0, len(events), BATCH)]


def _open(args: argparse.Namespace, name: str, subjects: int) -> Any:
    """A client on a fresh store holding every subject in its cache."""
    from edgepersona.sdk import ClientOptions, MemoryKeyProvider, PersonaClient

    folder = Path(args.scratch) / f"gateway-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    return PersonaClient.open(args.bundle, trusted_keys=[Path(args.public_key).read_bytes()],
                              store=folder / "store.db", key_provider=MemoryKeyProvider(os.urandom(32)),
                              options=ClientOptions(cache_subjects=subjects))


def _measurement(samples: Any, label: str) -> dict[str, Any]:
    return {"summary": Summary.of_ns(samples).as_dict(), "label": label}


def _child(args: argparse.Namespace) -> dict[str, Any]:
    """Populate, measure memory and throughput; the report as JSON data."""
    subjects, per_subject = args.subjects, args.events_per_subject
    batches = _batches(subjects, per_subject, args.seed)
    client = _open(args, "rss", subjects)
    gc.collect()
    rss_before = rss_mib() or 0.0
    batch_ns = _populate(client, batches)
    gc.collect()
    rss_after = rss_mib() or 0.0
    events = sum(len(b) for b in batches)
    rng = np.random.default_rng(args.seed)
    picks = iter([f"user-{i:06d}" for i in rng.integers(0, subjects, args.samples + 100)])
    assign = time_calls(lambda: client.assign(subject=next(picks)), args.samples, warmup=100)
    durable_events = [e for b in batches[-1:] for e in b][:min(200, args.samples // 10)]
    durable = []
    for e in durable_events:
        start = time.perf_counter_ns()
        client.track(e.event, e.value, subject=e.subject, at=e.at, properties=e.properties)
        durable.append(time.perf_counter_ns() - start)
    store_bytes = sum(p.stat().st_size for p in (Path(args.scratch) / "gateway-rss").iterdir())
    client.close()
    gc.collect()

    traced_client = _open(args, "traced", subjects)
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    _populate(traced_client, batches)
    gc.collect()
    traced_after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    traced_client.close()
    per_event = np.asarray(batch_ns) / np.asarray([len(b) for b in batches])
    return {
        "subjects": subjects,
        "events": events,
        "events_per_subject": per_subject,
        "rss_before_mib": round(rss_before, 1),
        "rss_after_mib": round(rss_after, 1),
        "rss_per_subject_kib": round((rss_after - rss_before) * 1024 / subjects, 2),
        "tracemalloc_per_subject_kib": round((traced_after - traced_before) / 1024 / subjects, 2),
        "store_file_bytes_per_subject": round(store_bytes / subjects, 1),
        "track_many_events_per_s": round(events / (sum(batch_ns) / 1e9), 1),
        "assign_per_s": round(1e9 / float(np.median(assign)), 1),
        "measurements": {
            "track_many_per_event": _measurement(per_event.astype(np.int64),
                                                 f"track_many, {BATCH}-event batches, time per event"),
            "assign": _measurement(assign, f"PersonaClient.assign, random one of {subjects} cached subjects"),
            "track_durable": _measurement(durable, "PersonaClient.track, one fsynced commit per event"),
        },
    }


def main() -> None:
    """Child entry point: print the report as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--public-key", required=True)
    parser.add_argument("--subjects", type=int, required=True)
    parser.add_argument("--events-per-subject", type=int, required=True)
    parser.add_argument("--scratch", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--samples", type=int, required=True)
    print(json.dumps(_child(parser.parse_args())))


if __name__ == "__main__":
    main()
