"""The device under SIGKILL: a worker that forks one child per job (run as a script, not a test).

Importing the SDK costs ~0.4 s, more than the work between two kills, so this
worker imports only the modules a device needs (the client, the store, sync,
sealing; no onnxruntime: the numpy backend) once, then forks a fresh child for
every job. Each child opens its own ``PersonaClient`` after the fork, so it
starts exactly like a restarted app, only without the import cost.

Protocol, one line each way (the child writes to the worker's stdout, and
``os.write`` of one short line is atomic on a pipe)::

    test   -> worker   a job as JSON
    worker -> test     "forked PID"
    child  -> test     "ready", "try N" / "ack N", "installed 2", "updated 2",
                       "queued SEQ", "flushed ACCEPTED DUPLICATES REJECTED REMAINING",
                       "error TRACEBACK" (then the child exits with status 3)
    test   -> worker   "reap" (after the test killed the child)
    worker -> test     "reaped STATUS" (after every line of the child)

Events: number ``n`` is a ``purchase`` of value ``n`` at the job's fixed time,
for subject ``me`` (odd ``n``) or ``you`` (even ``n``); ``try N`` is written
before the call that folds events up to ``N``, ``ack N`` after it returned.
"""

from __future__ import annotations

import json
import os
import random
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgepersona.sdk import (
    ClientOptions,
    FileKeyProvider,
    HttpTransport,
    PersonaClient,
    SyncAgent,
    TrackedEvent,
)
from edgepersona.sdk.protocol.envelope import Sealer

SUBJECTS = ("you", "me")  # event n belongs to SUBJECTS[n % 2]


def emit(line: str) -> None:
    """Write one line to the test, unbuffered (a SIGKILL must not eat it)."""
    os.write(1, (line + "\n").encode())


def open_client(job: dict[str, Any], bundle: str) -> PersonaClient:
    """The device's client over the job's store, as an app opens it at start-up."""
    return PersonaClient.open(bundle, trusted_keys=[Path(job["trusted_key"]).read_bytes()],
                              store=job["store"], key_provider=FileKeyProvider(job["store"] + ".key"),
                              options=ClientOptions(backend="numpy"))


def event(number: int, at: float) -> TrackedEvent:
    """Event ``number`` (see the module docstring)."""
    return TrackedEvent(SUBJECTS[number % 2], "purchase", float(number), at)


def fold_next(client: PersonaClient, job: dict[str, Any], done: int, rng: random.Random) -> int:
    """Fold the next event (``track``) or batch (``track_many``); the new acknowledged count."""
    size = rng.randint(1, job["batch"]) if job["batch"] else 1
    upto = done + size
    emit(f"try {upto}")
    if job["batch"]:
        client.track_many([event(n, job["at"]) for n in range(done + 1, upto + 1)])
    else:
        one = event(upto, job["at"])
        client.track(one.event, one.value, subject=one.subject, at=one.at)
    emit(f"ack {upto}")
    return upto


def run_track(job: dict[str, Any], rng: random.Random) -> None:
    """Fold events for ever (until killed), acknowledging each call."""
    client = open_client(job, job["bundle"])
    emit("ready")
    done = job["start"]
    for _ in range(job["max_ops"]):
        done = fold_next(client, job, done, rng)


def install_atomically(target: Path, data: bytes) -> None:
    """What an app does with a downloaded bundle: write it beside, fsync, rename over the old one."""
    spare = target.with_name(target.name + ".download")
    with spare.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(spare, target)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def run_update(job: dict[str, Any], rng: random.Random) -> None:
    """Fold a few events, install v2 on disk, switch the client to it, keep folding."""
    client = open_client(job, job["installed"])
    emit("ready")
    done = job["start"]
    for _ in range(rng.randint(0, 3)):
        done = fold_next(client, job, done, rng)
    new = Path(job["v2"]).read_bytes()
    install_atomically(Path(job["installed"]), new)
    emit("installed 2")
    client.update(new)
    emit("updated 2")
    for _ in range(job["max_ops"]):
        done = fold_next(client, job, done, rng)


def run_flush(job: dict[str, Any], rng: random.Random) -> None:
    """Queue contributions and flush them to the loopback collector for ever (until killed)."""
    client = open_client(job, job["bundle"])
    agent = SyncAgent(client, Sealer(Path(job["collector_key"]).read_bytes(), app_id=job["app_id"]),
                      HttpTransport(job["url"], timeout=10.0), max_queue=1_000_000,
                      batch_size=job["batch"])
    emit("ready")
    for _ in range(job["max_ops"]):
        emit(f"queued {agent.contribute(subject=SUBJECTS[rng.randrange(2)])}")
        if rng.random() < 0.5:
            report = agent.flush()
            if report.errors:
                emit("error flush failed: " + "; ".join(report.errors))
                os._exit(3)
            emit(f"flushed {report.accepted} {report.duplicates} {report.rejected} {report.remaining}")


RUNNERS: dict[str, Callable[[dict[str, Any], random.Random], None]] = {
    "track": run_track, "update": run_update, "flush": run_flush}


def child(job: dict[str, Any]) -> None:
    """Run one job in the forked child and leave without returning to the worker loop."""
    code = 0
    try:
        RUNNERS[job["kind"]](job, random.Random(job["seed"]))
    except BaseException:  # reported to the test, which fails on it
        emit("error " + traceback.format_exc().replace("\n", " | "))
        code = 3
    os._exit(code)


def main() -> None:
    """Fork a child per job line; reap it when the test says so."""
    emit("worker ready")
    commands = sys.stdin.buffer
    while line := commands.readline():
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(job)
        emit(f"forked {pid}")
        if commands.readline().strip() != b"reap":
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        emit(f"reaped {status}")


if __name__ == "__main__":
    main()
