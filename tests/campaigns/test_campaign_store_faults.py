"""Campaign 3: a full disk and a read-only store: a clear StoreError, the last good state kept.

We run as root in CI, and root ignores permission bits, so each fault is made
in a way that works there too:

* **simulated at the SQLite layer** (every fault, mid-session): the store's
  connection is wrapped so that, while armed, its writes (or only its
  ``COMMIT``) raise ``sqlite3.OperationalError`` with the SQLite code of a
  full disk (13), a read-only database (8) or a failed write (778,
  ``SQLITE_IOERR_WRITE``);
* **a real full disk**: a child process lowers its own ``RLIMIT_FSIZE`` (no
  privilege needed, root is bound by it too) and ignores ``SIGXFSZ``, so
  SQLite's next write past the limit fails with ``EFBIG``; then it raises
  the limit again (the fault clears) and goes on;
* **a real read-only folder**: the store's owner is an unprivileged user;
  as root the child drops to uid/gid 65534 (``nobody``), otherwise it runs
  as the caller, and the folder and files are made read-only with chmod.
  (A read-only bind mount or a tiny tmpfs needs CAP_SYS_ADMIN, which CI
  containers usually lack; a folder that turns read-only while the store is
  open does not affect the file descriptors SQLite already holds, so the
  mid-session case is the simulated one.)

Rules checked: the error is :class:`StoreError`, never
:class:`StoreCorruptError` (whose documented recovery, a reset, would throw
the data away); its message names the cause; the client keeps answering from
the last committed state; a failed ``update`` leaves the old bundle active;
after the fault clears the same client writes again, and a reopened store
holds exactly what was acknowledged.

Short and long runs are the same (each fault is deterministic)::

    python -m pytest tests/campaigns/test_campaign_store_faults.py
"""

from __future__ import annotations

import ctypes
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from campaign_testkit import BundleFiles

from edgepersona.sdk import (
    ClientOptions,
    EncryptedStore,
    FileKeyProvider,
    MemoryTransport,
    PersonaClient,
    Sealer,
    StoreCorruptError,
    StoreError,
    SyncAgent,
    TrackedEvent,
)
from edgepersona.sdk.protocol.envelope import generate_collector_keypair

AT = 1_735_776_000.0  # 2025-01-02: every event's time
FAULTS = {  # SQLite result code → (name, the words of StoreError's message)
    13: ("SQLITE_FULL", "the disk is full"),
    8: ("SQLITE_READONLY", "read-only"),
    778: ("SQLITE_IOERR_WRITE", "disk I/O error"),
}


class FaultSwitch:
    """Which SQLite statements fail, and with which code, while armed."""

    def __init__(self) -> None:
        self.code: int | None = None
        self.only_commit = False

    def fails(self, sql: str) -> bool:
        verb = sql.lstrip().split(None, 1)[0].upper()
        return self.code is not None and (verb == "COMMIT" if self.only_commit else
                                          verb in ("INSERT", "UPDATE", "DELETE", "COMMIT"))

    def error(self) -> sqlite3.OperationalError:
        assert self.code is not None
        name, _ = FAULTS[self.code]
        error = sqlite3.OperationalError(f"simulated {name}")
        error.sqlite_errorcode, error.sqlite_errorname = self.code, name
        return error


class FaultyConnection:
    """A sqlite3 connection whose writes raise the switch's error while it is armed."""

    def __init__(self, conn: sqlite3.Connection, switch: FaultSwitch) -> None:
        self._conn, self._switch = conn, switch

    def execute(self, sql: str, *params: Any) -> sqlite3.Cursor:
        if self._switch.fails(sql):
            raise self._switch.error()
        return self._conn.execute(sql, *params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        if self._switch.fails(sql):
            raise self._switch.error()
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.fixture
def switch(monkeypatch: pytest.MonkeyPatch) -> FaultSwitch:
    """Every store opened in the test gets a connection behind this switch."""
    armed, connect = FaultSwitch(), EncryptedStore._connect
    monkeypatch.setattr(EncryptedStore, "_connect", lambda self: FaultyConnection(connect(self), armed))
    return armed


def open_client(store: Path, files: BundleFiles, bundle: Path | None = None) -> PersonaClient:
    return PersonaClient.open(bundle or files.v1, trusted_keys=[files.trusted_key.read_bytes()], store=store,
                              key_provider=FileKeyProvider(f"{store}.key"),
                              options=ClientOptions(backend="numpy"))


def sync_agent(client: PersonaClient) -> SyncAgent:
    _, public = generate_collector_keypair()
    never_called = MemoryTransport(lambda body: b"", lambda version: b"")
    return SyncAgent(client, Sealer(public, app_id="faults"), never_called)


@pytest.mark.parametrize("only_commit", [False, True], ids=["write-fails", "commit-fails"])
@pytest.mark.parametrize("code", sorted(FAULTS))
def test_a_full_or_read_only_store_fails_clearly_and_keeps_the_last_good_state(
        switch: FaultSwitch, tmp_path: Path, bundle_archives: BundleFiles, code: int,
        only_commit: bool) -> None:
    store = tmp_path / "device.db"
    with open_client(store, bundle_archives) as client:
        agent = sync_agent(client)
        client.track("purchase", 1.0, at=AT)
        agent.contribute(at=AT)
        good = client.features(at=AT)
        switch.code, switch.only_commit = code, only_commit
        writes: dict[str, Callable[[], object]] = {
            "track": lambda: client.track("purchase", 50.0, at=AT),
            "track_many": lambda: client.track_many([TrackedEvent("me", "purchase", 60.0, AT),
                                                     TrackedEvent("you", "purchase", 70.0, AT)]),
            "contribute": lambda: agent.contribute(at=AT),
            "update": lambda: client.update(bundle_archives.v2.read_bytes()),
        }
        for name, write in writes.items():
            with pytest.raises(StoreError) as caught:
                write()
            assert not isinstance(caught.value, StoreCorruptError), name
            message = str(caught.value)
            assert FAULTS[code][1] in message and "last committed state is kept" in message, message
        assert client.features(at=AT) == good, "the client must answer from the last committed state"
        assert client.runtime.version == 1, "a failed update must leave the old bundle active"
        assert agent.counters["queued"] == 1
        switch.code = None  # the fault clears: the same client writes again
        client.track("purchase", 2.0, at=AT)
    with open_client(store, bundle_archives) as client:
        assert client.features(at=AT)[1] == 3.0 and client.subjects() == ["me"]
        assert client.runtime.version == 1 and sync_agent(client).counters["queued"] == 1


FILLER = """
import glob, json, os, resource, signal, sys
from edgepersona.sdk import ClientOptions, FileKeyProvider, PersonaClient, StoreError, TrackedEvent
bundle, trusted, store, at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
client = PersonaClient.open(bundle, trusted_keys=[open(trusted, "rb").read()], store=store,
                            key_provider=FileKeyProvider(store + ".key"),
                            options=ClientOptions(backend="numpy"))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
limit = max(os.path.getsize(p) for p in glob.glob(store + "*")) + 256 * 1024
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
for batch in range(1, 10_000):
    try:
        client.track_many([TrackedEvent(f"b{batch}-{i}", "purchase", 1.0, at) for i in range(40)])
    except StoreError as error:
        print(json.dumps({"full": batch, "type": type(error).__name__, "message": str(error)}), flush=True)
        break
    print(json.dumps({"ack": batch}), flush=True)
read = len(client.subjects())
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # the fault clears
client.track_many([TrackedEvent("after", "purchase", 1.0, at)])
print(json.dumps({"read": read, "recovered": True}), flush=True)
client.close()
"""


def test_a_real_full_disk_keeps_every_acknowledged_batch(tmp_path: Path,
                                                         bundle_archives: BundleFiles) -> None:
    store = tmp_path / "device.db"
    args = [str(bundle_archives.v1), str(bundle_archives.trusted_key), str(store), str(AT)]
    done = subprocess.run([sys.executable, "-c", FILLER, *args], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    acked = [line["ack"] for line in lines if "ack" in line]
    [full] = [line for line in lines if "full" in line]
    assert full["type"] == "StoreError" and ("disk is full" in full["message"] or "I/O" in full["message"])
    assert lines[-1] == {"read": 40 * len(acked), "recovered": True}
    with open_client(store, bundle_archives) as client:
        subjects = set(client.subjects())
    assert subjects == {f"b{b}-{i}" for b in acked for i in range(40)} | {"after"}
    print(f"\n[campaign] full disk (RLIMIT_FSIZE): {len(acked)} batches acknowledged and kept, the"
          f" failing batch {full['full']} refused whole: {full['message']}")


OWNER_SCRIPT = """
import json, sys
from edgepersona.sdk import ClientOptions, FileKeyProvider, PersonaClient, PersonaError
bundle, trusted, store, at, write = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
capabilities = int(next(l for l in open("/proc/self/status") if l.startswith("CapEff:")).split()[1], 16)
try:
    client = PersonaClient.open(bundle, trusted_keys=[open(trusted, "rb").read()], store=store,
                                key_provider=FileKeyProvider(store + ".key"),
                                options=ClientOptions(backend="numpy"))
    features = client.features(at=at)
    if write == "write":
        client.track("purchase", 5.0, at=at)
    client.close()
    print(json.dumps({"features": features, "capabilities": capabilities}))
except PersonaError as error:
    print(json.dumps({"type": type(error).__name__, "message": str(error), "capabilities": capabilities}))
"""
PR_CAPBSET_DROP = 24
BYPASSING_PERMISSIONS = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def bound_by_permissions() -> None:
    """preexec_fn: take the capabilities that let root ignore permission bits out of the bounding set.

    A root process keeps only the bounding set across ``exec``, so the child
    runs as root (it can still reach a root-only interpreter) but chmod binds it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in BYPASSING_PERMISSIONS:
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run_store_owner(folder: Path, files: BundleFiles, action: str) -> dict[str, Any]:
    args = [sys.executable, "-c", OWNER_SCRIPT, str(files.v1), str(files.trusted_key),
            str(folder / "device.db"), str(AT), action]
    as_root = os.geteuid() == 0
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False,
                              preexec_fn=bound_by_permissions if as_root else None)
    except subprocess.SubprocessError as error:
        pytest.skip(f"cannot drop CAP_DAC_OVERRIDE for the child (no CAP_SETPCAP?): {error}")
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    if as_root and result["capabilities"] & sum(1 << c for c in BYPASSING_PERMISSIONS):
        pytest.skip("the child still holds CAP_DAC_OVERRIDE: chmod cannot make a folder read-only for it")
    return result


def set_modes(folder: Path, folder_mode: int, file_mode: int) -> None:
    for path in folder.glob("device.db*"):
        os.chmod(path, file_mode)
    os.chmod(folder, folder_mode)


def test_a_read_only_store_folder_fails_clearly_and_the_data_survives(
        tmp_path: Path, bundle_archives: BundleFiles) -> None:
    folder = tmp_path / "device"
    folder.mkdir()
    written = run_store_owner(folder, bundle_archives, "write")
    assert "features" in written, written
    set_modes(folder, 0o555, 0o444)
    try:
        refused = run_store_owner(folder, bundle_archives, "write")
    finally:
        set_modes(folder, 0o755, 0o600)
    assert refused.get("type") == "StoreError", refused
    again = run_store_owner(folder, bundle_archives, "read")
    assert again["features"][1] == 5.0, again
    print(f"\n[campaign] read-only store folder: {refused['message']}")
