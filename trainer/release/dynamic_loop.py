"""The whole dynamic-persona loop on real data, in one process (demo and end-to-end test).

1. Train v1 on the retail log up to a cut-off day; sign it; put it on the
   collector's shelf.
2. Start the real collector (FastAPI + uvicorn on a loopback port, SQLite).
3. Edge gateways, each serving many customers, replay every customer's events
   one at a time through the device fold, assign on the device, seal one
   contribution per customer and sync over HTTP.
4. Behaviour moves on: the gateways fold the next months of events and sync
   again.
5. One scheduled round (``edgepersona schedule``) refits v2 from both syncs'
   cells, the older one decayed (60 % 7-day / 40 % 90-day blend); the drift
   gate decides publish or review (the demo approves as the reviewer).
6. The gateways pull v2, verify it and reassign.

Everything runs on a simulated clock at the data's dates, so day buckets and
the replay window behave as they would have in 2011.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edgepersona.sdk import (
    HttpTransport,
    InputError,
    Manifest,
    MemoryKeyProvider,
    PersonaClient,
    PersonaRuntime,
    Sealer,
    SyncAgent,
    TrackedEvent,
    Transport,
    load_spec_json,
)
from edgepersona.trainer.collector import (
    AggregateStore,
    CollectorConfig,
    LoopbackServer,
    create_app,
    open_store,
)
from edgepersona.trainer.data.events import EventLog, read_event_log
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.privacy.source_identity import opaque_source
from edgepersona.trainer.release.export import write_bundle
from edgepersona.trainer.release.keys import generate_collector_key, generate_signing_key, load_signing_key
from edgepersona.trainer.release.refit import DriftReport, approve_bundle
from edgepersona.trainer.release.schedule import ScheduleOptions, run_schedule
from edgepersona.trainer.release.train import TrainOptions, train_bundle

__all__ = ["LoopResult", "SimulatedClock", "run_dynamic_loop"]

APP_ID = "retail-demo"
MODEL_ID = "retail-personas"
CUTOFF = datetime(2011, 9, 1, tzinfo=UTC).timestamp()
GATEWAYS = 4


class SimulatedClock:
    """A settable clock shared by the devices and the collector."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        """Unix seconds now, as set."""
        return self.now


class RecordingTransport:
    """Wraps a transport and keeps every body that left a device (for leak scans)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.bodies: list[bytes] = []

    def post_sync(self, body: bytes) -> list[str]:
        """Record, then send."""
        self.bodies.append(body)
        return self.inner.post_sync(body)

    def get_bundle(self, version: int | None) -> bytes:
        """Fetch through the inner transport."""
        return self.inner.get_bundle(version)


@dataclass
class LoopResult:
    """What the loop produced, for the demo's printout and the end-to-end test."""

    work: Path
    v1: Manifest
    devices: int
    v2: Manifest | None = None
    drift: DriftReport | None = None
    synced: dict[str, int] = field(default_factory=dict)
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    raw_ids: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    db_path: Path = Path()


def _dataset(name: str) -> Path:
    """A file bundled with the trainer."""
    return Path(__file__).parents[1] / "datasets" / name


def _replay(clients: list[PersonaClient], log: EventLog, members: list[list[int]],
            start: float, end: float) -> None:
    """Fold each customer's events in (start, end] into its gateway, one transaction per gateway."""
    window = (log.time > start) & (log.time <= end)
    owner = {u: g for g, users in enumerate(members) for u in users}
    batches: list[list[TrackedEvent]] = [[] for _ in clients]
    names = [p for p in log.properties if p != "value"]
    for i in np.flatnonzero(window)[np.argsort(log.time[window], kind="stable")]:
        user = int(log.user[i])
        if user in owner:
            value = float(log.properties["value"][i])
            props = {n: log.properties[n][i] for n in names}
            batches[owner[user]].append(TrackedEvent(log.user_keys[user], str(log.event[i]),
                                                     None if np.isnan(value) else value,
                                                     float(log.time[i]), props))
    for client, batch in zip(clients, batches, strict=True):
        if batch:
            client.track_many(batch)


def _sync_all(agents: list[SyncAgent], members: list[list[int]], log: EventLog) -> dict[str, int]:
    """Each gateway seals one contribution per customer and flushes until its queue is empty."""
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0}
    for agent, users in zip(agents, members, strict=True):
        for user in users:
            agent.contribute(subject=log.user_keys[user])
        while True:
            report = agent.flush()
            for key in totals:
                totals[key] += getattr(report, key)
            if report.remaining == 0 or report.retry_after is not None:
                break
    return totals


def run_dynamic_loop(work: Path, *, customers: int = 300, seed: int = 7,
                     say: Callable[[str], None] = print) -> LoopResult:
    """Run the loop described in the module docstring inside ``work``.

    Args:
        work: an empty folder; everything is written inside it.
        customers: how many customers the gateways serve (the rest only train v1).
        seed: random seed for the fit and the customer sample.
        say: receives one line per step.

    Returns:
        The versions, the drift report, the devices' personas before and after,
        and everything that left a device.
    """
    rng = np.random.default_rng(seed)
    clock = SimulatedClock(CUTOFF)
    log = read_event_log(_dataset("retail_events.csv.gz"))
    spec = load_spec_json(_dataset("retail_spec.json").read_text(encoding="utf-8"))
    private, public, _kid = generate_signing_key(work / "keys")
    collector_private, collector_public = generate_collector_key(work / "keys")
    trusted = [public.read_bytes()]
    early = log.time <= CUTOFF
    active = np.unique(log.user[early])
    rows = compute_features(log.subset(active), spec, CUTOFF)
    v1 = train_bundle(rows, spec, load_signing_key(private),
                      TrainOptions(model_id=MODEL_ID, k=4, seed=seed, stability_rounds=2,
                                   expires_days=365.0),
                      lineage={"source": opaque_source([log.user_keys[u] for u in active],
                                                       work / "keys" / "source.key"),
                               "users": len(active)},
                      now=datetime.fromtimestamp(CUTOFF, UTC))
    shelf = work / "bundles"
    write_bundle(shelf / f"{MODEL_ID}-v1", v1.files)
    say(f"trainer: v1 with {len(v1.manifest.personas)} personas from {len(active):,} customers"
        f" active before {datetime.fromtimestamp(CUTOFF, UTC):%Y-%m-%d}")

    chosen = rng.choice(active, size=min(customers, len(active)), replace=False).tolist()
    members = [chosen[g::GATEWAYS] for g in range(GATEWAYS)]
    db_path = work / "collector.db"
    store = open_store(f"sqlite:///{db_path}")
    app = create_app(CollectorConfig(app_id=APP_ID, bundles_dir=shelf),
                     collector_private_key=collector_private.read_bytes(), store=store, clock=clock)
    result = LoopResult(work, v1.manifest, len(chosen), db_path=db_path)
    result.raw_ids = [log.user_keys[u] for u in chosen]
    clients: list[PersonaClient] = []
    try:
        with LoopbackServer(app) as server:
            say(f"collector: listening on {server.url} (SQLite at {db_path.name})")
            transport = RecordingTransport(HttpTransport(server.url))
            for g in range(GATEWAYS):
                (work / "gateways").mkdir(exist_ok=True)
                clients.append(PersonaClient.open(
                    shelf / f"{MODEL_ID}-v1", trusted_keys=trusted,
                    store=work / "gateways" / f"gateway-{g}.db",
                    key_provider=MemoryKeyProvider(secrets.token_bytes(32)), clock=clock))
            sealer = Sealer(collector_public.read_bytes(), app_id=APP_ID)
            agents = [SyncAgent(c, sealer, transport) for c in clients]
            _loop_phases(result, log, clients, agents, members, clock, say)
            result.v2, result.drift = _refit_and_publish(result, store, private, shelf, clock, say)
            versions = [agent.pull() for agent in agents]
            say(f"devices: pulled and verified v{max(versions)} from the collector")
            result.after = _personas(clients, members, log)
            result.bodies = transport.bodies
    finally:
        for client in clients:
            client.close()
        store.close()
    moved = sum(a != b for a, b in zip(result.before, result.after, strict=True))
    say(f"devices: {moved} of {len(chosen)} customers changed persona with the new version")
    return result


def _personas(clients: list[PersonaClient], members: list[list[int]], log: EventLog) -> list[str]:
    """Every served customer's persona id, in a fixed order."""
    return [client.assign(subject=log.user_keys[u]).persona_id
            for client, users in zip(clients, members, strict=True) for u in users]


def _loop_phases(result: LoopResult, log: EventLog, clients: list[PersonaClient],
                 agents: list[SyncAgent], members: list[list[int]], clock: SimulatedClock,
                 say: Callable[[str], None]) -> None:
    """Fold, assign and sync twice: at the cut-off and at the end of the log."""
    started = time.perf_counter()
    _replay(clients, log, members, -np.inf, CUTOFF)
    result.before = _personas(clients, members, log)
    result.synced = _sync_all(agents, members, log)
    say(f"devices: {result.devices} customers on {len(clients)} gateways folded their events on"
        f" the device and synced {result.synced['accepted']} sealed contributions"
        f" ({time.perf_counter() - started:.1f} s)")
    clock.now = float(log.time.max())
    _replay(clients, log, members, CUTOFF, clock.now)
    again = _sync_all(agents, members, log)
    for key, value in again.items():
        result.synced[key] += value
    say(f"devices: three months later, {again['accepted']} more contributions"
        f" ({again['duplicates']} duplicates, {again['rejected']} rejected)")


def _refit_and_publish(result: LoopResult, store: AggregateStore, private: Path, shelf: Path,
                       clock: SimulatedClock, say: Callable[[str], None]
                       ) -> tuple[Manifest, DriftReport]:
    """One scheduled round (``edgepersona schedule``); approve if the gate holds it back."""
    trusted = [(private.parent / "signing_key.pub.pem").read_bytes()]
    outcome = run_schedule(shelf, store, load_signing_key(private), trusted,
                           ScheduleOptions(k_min=5), now=datetime.fromtimestamp(clock.now, UTC))
    if outcome.drift is None or outcome.new_version is None:
        raise InputError(f"the scheduled refit proposed no version: {outcome.line}")
    say(outcome.drift.to_markdown(result.v1.version, outcome.new_version).rstrip())
    say(outcome.line)
    out = shelf / f"{MODEL_ID}-v{outcome.new_version}"
    if outcome.status == "held":
        approve_bundle(out)
        say(f"reviewer: approved v{outcome.new_version} (`edgepersona approve {out.name}`)")
    manifest = PersonaRuntime.open(out, trusted_keys=trusted, now=datetime.fromtimestamp(
        clock.now, UTC)).manifest
    return manifest, outcome.drift
