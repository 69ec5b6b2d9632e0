"""Coverage-guided fuzzing of what the device reads back from its own storage.

Targets: folded state records (``FoldState.from_bytes``), feature specs
(``load_spec_json`` then ``FoldPlan.from_spec``), the persisted trusted-key
record (``load_trust``) and whole encrypted store files (open, list subjects,
read every record). A record read from a mutated store file must be the one
written or absent, never altered. Any exception that is not a PersonaError is
a crash, except the known bugs listed in ``KNOWN_BUGS`` (counted and reported
at exit; pass ``--strict`` first to make them crash too).

Run: ``python fuzz/fuzz_store.py -atheris_runs=100000`` (or ``-max_total_time=120``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris
from _harness import mutated, tolerate_known_bug

with atheris.instrument_imports(include=["edgepersona"]):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edgepersona.sdk import (
        EncryptedStore,
        FoldPlan,
        FoldState,
        MemoryKeyProvider,
        PersonaError,
        load_spec_json,
    )
    from edgepersona.sdk.protocol.trust import TrustedKeys, dump_trust, load_trust

REFERENCE = Path(__file__).resolve().parent.parent / "models" / "reference"
SPEC_TEXT = json.dumps(json.loads((REFERENCE / "manifest.json").read_bytes())["spec"])
PLAN = FoldPlan.from_spec(load_spec_json(SPEC_TEXT))
STRICT = "--strict" in sys.argv
# FoldState.from_bytes lets these out for huge numbers and deep nesting (sdk/_fold.py).
KNOWN_BUGS: tuple[type[BaseException], ...] = () if STRICT else (OverflowError, RecursionError)
MASTER_KEY = bytes(range(1, 33))
RECORDS = {("", "trusted_version"): b"3", ("alice", "fold_state"): b'{"x": 1}',
           ("bob", "fold_state"): bytes(range(256))}
TRUST_RECORD = dump_trust(TrustedKeys([Ed25519PrivateKey.generate().public_key()],
                                       revoked=["aaaaaaaaaaaaaaaa"], rotation=1))
WORK = Path(tempfile.gettempdir()) / f"edgepersona-fuzz-store-{os.getpid()}"


def _fresh_work_folder() -> None:
    """Clear folders of finished runs (libFuzzer ends the process without Python's atexit)."""
    for folder in WORK.parent.glob("edgepersona-fuzz-store-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)
    WORK.mkdir(exist_ok=True)


_fresh_work_folder()


def _state() -> bytes:
    state = PLAN.new_state()
    for day, event in enumerate(sorted(PLAN.by_event)):
        state.fold(event, 1_735_000_000.0 + day * 86_400, {"value": 3.5, "category": "books"})
    return state.to_bytes()


def _store_file() -> bytes:
    path = WORK / "base.db"
    with EncryptedStore.open(path, MemoryKeyProvider(MASTER_KEY)) as store:
        store.put_many((s, n, v) for (s, n), v in RECORDS.items())
    return path.read_bytes()


STATE, STORE = _state(), _store_file()


def _read_store(raw: bytes) -> None:
    """Open a mutated store file and read everything; records must be authentic or gone."""
    path = WORK / "fuzzed.db"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(raw)
    with EncryptedStore.open(path, MemoryKeyProvider(MASTER_KEY)) as store:
        store.subjects()
        for (subject, name), value in RECORDS.items():
            if store.get(subject, name) not in (value, None):
                raise AssertionError(f"record {subject!r}/{name!r} came back altered")


def test_one_input(data: bytes) -> None:
    """One fuzz case; PersonaError is the declared way to refuse."""
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 3)
    try:
        if target == 0:
            FoldState.from_bytes(PLAN, mutated(fdp, STATE, document=json.loads(STATE)))
        elif target == 1:
            raw = mutated(fdp, SPEC_TEXT.encode(), document=json.loads(SPEC_TEXT))
            FoldPlan.from_spec(load_spec_json(raw.decode("utf-8", "replace") if fdp.ConsumeBool()
                                              else raw))
        elif target == 2:
            load_trust([], mutated(fdp, TRUST_RECORD, document=json.loads(TRUST_RECORD)))
        else:
            _read_store(mutated(fdp, STORE))
    except PersonaError:
        return
    except KNOWN_BUGS as exc:
        tolerate_known_bug(f"{type(exc).__name__} from FoldState.from_bytes")


if __name__ == "__main__":
    atheris.Setup([arg for arg in sys.argv if arg != "--strict"], test_one_input)
    atheris.Fuzz()
