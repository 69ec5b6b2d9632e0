"""The encrypted local store: round trips, tamper evidence, crypto-shredding, threads, crashes."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given, settings, strategies as st

import edgepersona.sdk._store as store_module
from edgepersona.sdk._store import EncryptedStore, FileKeyProvider, MemoryKeyProvider
from edgepersona.sdk._store_keys import MasterKeys, encode_fields, unseal
from edgepersona.sdk.errors import InputError, StoreCorruptError, StoreError

KEY = bytes(range(32))
SUBJECTS = ("alice@example.org", "bob-7f3a", "carol ünïcode")


def _open(path: Path, provider: store_module.KeyProvider | None = None) -> EncryptedStore:
    return EncryptedStore.open(path, provider or MemoryKeyProvider(KEY))


def _sql(path: Path) -> closing[sqlite3.Connection]:
    """A plain SQLite connection to a closed store: the attacker's view."""
    return closing(sqlite3.connect(path, isolation_level=None))


def _all_file_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state.db"
    with _open(path) as store:
        for subject in SUBJECTS:
            store.put_many(
                [(subject, "fold", subject.encode() * 40), (subject, "meta", b"m:" + subject.encode())]
            )
        store.put(EncryptedStore.GLOBAL, "trusted-version", b"17")
    yield path


# ---------------------------------------------------------------------------- round trips

record_keys = st.tuples(
    st.one_of(st.just(EncryptedStore.GLOBAL), st.text(min_size=1, max_size=30)),
    st.text(min_size=1, max_size=30),
)


@settings(max_examples=40, deadline=None)
@given(records=st.dictionaries(record_keys, st.binary(max_size=3000), max_size=8))
def test_round_trip(records: dict[tuple[str, str], bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.db"
        provider = MemoryKeyProvider()
        with EncryptedStore.open(path, provider) as store:
            store.put_many((s, n, v) for (s, n), v in records.items())
            assert all(store.get(s, n) == v for (s, n), v in records.items())
        with EncryptedStore.open(path, provider) as store:
            assert all(store.get(s, n) == v for (s, n), v in records.items())
            assert store.subjects() == sorted({s for s, _ in records if s})


def test_get_put_delete_semantics(tmp_path: Path) -> None:
    with _open(tmp_path / "s.db") as store:
        assert store.get("alice", "fold") is None
        store.put("alice", "fold", b"1")
        store.put("alice", "fold", b"2")
        assert store.get("alice", "fold") == b"2"
        assert store.get("alice", "other") is None
        assert store.get("nobody", "fold") is None
        assert store.delete("alice", "fold") is True
        assert store.delete("alice", "fold") is False
        assert store.delete("nobody", "fold") is False
        assert store.get("alice", "fold") is None
        store.put(EncryptedStore.GLOBAL, "queue", b"")
        assert store.get(EncryptedStore.GLOBAL, "queue") == b""
        assert store.subjects() == ["alice"]
        assert "alice" not in repr(store)


def test_bad_arguments(tmp_path: Path) -> None:
    with _open(tmp_path / "s.db") as store:
        with pytest.raises(TypeError, match="must be bytes"):
            store.put("a", "n", "text")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="subject must be a str"):
            store.get(b"a", "n")  # type: ignore[arg-type]
        with pytest.raises(InputError, match="non-empty"):
            store.put("a", "", b"")
        with pytest.raises(InputError, match="UTF-8"):
            store.put("\udc00", "n", b"")
        with pytest.raises(InputError, match="GLOBAL"):
            store.forget(EncryptedStore.GLOBAL)
        # A bad item anywhere in a batch writes nothing.
        with pytest.raises(TypeError):
            store.put_many([("a", "n", b"ok"), ("a", "m", None)])  # type: ignore[list-item]
        assert store.get("a", "n") is None
    with pytest.raises(StoreError, match="closed"):
        store.get("a", "n")
    store.close()  # idempotent


# ---------------------------------------------------------------------------- tamper evidence


ALL_RECORDS = [(s, n) for s in SUBJECTS for n in ("fold", "meta")] + [
    (EncryptedStore.GLOBAL, "trusted-version")
]


def _count_corrupt(path: Path) -> int:
    corrupt = 0
    with _open(path) as store:
        for subject, name in ALL_RECORDS:
            try:
                store.get(subject, name)
            except StoreCorruptError:
                corrupt += 1
    return corrupt


def _swap(path: Path, table: str, column: str, rowid_a: int, rowid_b: int) -> None:
    with _sql(path) as db:
        query = f"SELECT {column} FROM {table} WHERE rowid = ?"
        a, b = (db.execute(query, (r,)).fetchone()[0] for r in (rowid_a, rowid_b))
        db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (b, rowid_a))
        db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (a, rowid_b))


def test_ciphertexts_swapped_within_a_subject_are_detected(filled: Path) -> None:
    with _sql(filled) as db:
        rows = db.execute("SELECT rowid, ref FROM records ORDER BY ref").fetchall()
    (a, _), (b, _) = next((x, y) for x, y in itertools.pairwise(rows) if x[1] == y[1])
    _swap(filled, "records", "sealed", a, b)
    assert _count_corrupt(filled) == 2


def test_ciphertexts_swapped_between_subjects_are_detected(filled: Path) -> None:
    with _sql(filled) as db:
        rows = db.execute("SELECT rowid, ref FROM records ORDER BY ref").fetchall()
    (a, ref_a), (b, ref_b) = rows[0], rows[-1]
    assert ref_a != ref_b
    _swap(filled, "records", "sealed", a, b)
    assert _count_corrupt(filled) == 2


def test_subject_keys_swapped_between_subjects_are_detected(filled: Path) -> None:
    _swap(filled, "subjects", "wrapped", 1, 2)
    assert _count_corrupt(filled) >= 2  # every record of both subjects
    _swap(filled, "subjects", "wrapped", 1, 2)
    _swap(filled, "subjects", "sealed_name", 1, 2)
    with _open(filled) as store, pytest.raises(StoreCorruptError):
        store.subjects()


def test_flipped_ciphertext_byte_is_detected(filled: Path) -> None:
    with _sql(filled) as db:
        sealed = db.execute("SELECT sealed FROM records ORDER BY length(sealed) DESC").fetchone()[0]
    data = bytearray(filled.read_bytes())
    at = data.find(sealed)
    assert at >= 0 and data.find(sealed, at + 1) < 0
    data[at + len(sealed) // 2] ^= 0x01
    filled.write_bytes(bytes(data))
    with _open(filled) as store, pytest.raises(StoreCorruptError, match=r"EncryptedStore\.reset"):
        for subject in SUBJECTS:
            store.get(subject, "fold")


def test_random_byte_flips_never_yield_wrong_data(filled: Path, tmp_path: Path) -> None:
    original = filled.read_bytes()
    expected = {(s, "fold"): s.encode() * 40 for s in SUBJECTS}
    rng = random.Random(11)
    outcomes = {"corrupt": 0, "intact": 0, "missing": 0}
    for trial in range(150):
        data = bytearray(original)
        data[rng.randrange(100 if trial < 30 else len(data))] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{trial}.db"
        path.write_bytes(bytes(data))
        try:
            with _open(path) as store:
                got = {key: store.get(*key) for key in expected}
        except StoreCorruptError:
            outcomes["corrupt"] += 1
            continue
        assert all(value in (expected[key], None) for key, value in got.items())
        outcomes["intact" if got == expected else "missing"] += 1
    assert outcomes["corrupt"] > 0


@pytest.mark.parametrize("fraction", [0.95, 0.5, 0.2, 0.01])
def test_truncated_store_is_corrupt(filled: Path, fraction: float) -> None:
    data = filled.read_bytes()
    filled.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(StoreCorruptError, match="reset_if_corrupt=True"):
        _open(filled)
    with EncryptedStore.open(filled, MemoryKeyProvider(KEY), reset_if_corrupt=True) as store:
        assert store.subjects() == []


def test_an_emptied_file_is_a_new_store(filled: Path) -> None:
    filled.write_bytes(b"")  # documented: nothing left to recover, so not an error
    with _open(filled) as store:
        assert store.subjects() == []
        assert store.get(EncryptedStore.GLOBAL, "trusted-version") is None


def test_wrong_key_is_corrupt_and_reset_recovers(filled: Path) -> None:
    with pytest.raises(StoreCorruptError, match="written under another master key: no key"):
        _open(filled, MemoryKeyProvider(bytes(32)))
    provider = MemoryKeyProvider(KEY)
    EncryptedStore.reset(filled, provider)
    assert provider.load_keys() != [KEY]
    with EncryptedStore.open(filled, provider) as store:
        assert store.subjects() == []


def test_a_missing_key_file_is_not_a_wrong_key_and_never_advises_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with EncryptedStore.open(path, FileKeyProvider(tmp_path / "s.db.key")) as store:
        store.put("alice", "fold", b"kept")
    (tmp_path / "s.db.key").rename(tmp_path / "backup.key")
    for reset_if_corrupt in (False, True):  # a missing key is not corruption: nothing is reset
        with pytest.raises(StoreError) as missing:
            EncryptedStore.open(path, FileKeyProvider(tmp_path / "s.db.key"),
                                reset_if_corrupt=reset_if_corrupt)
        assert not isinstance(missing.value, StoreCorruptError)
        message = str(missing.value)
        assert f"master key file {tmp_path / 's.db.key'} is missing" in message
        assert "Restore the key" in message and "lose its local state" in message
        assert "reset(" not in message and "reset_if_corrupt" not in message
    (tmp_path / "s.db.key").write_bytes(b"torn")  # present but not a key file
    with pytest.raises(StoreError, match=r"s\.db\.key is damaged \(not a valid key file\)") as damaged:
        EncryptedStore.open(path, FileKeyProvider(tmp_path / "s.db.key"))
    assert not isinstance(damaged.value, StoreCorruptError)
    with pytest.raises(StoreError, match=r"MemoryKeyProvider.*holds no master key") as empty:
        EncryptedStore.open(path, MemoryKeyProvider())
    assert not isinstance(empty.value, StoreCorruptError)
    (tmp_path / "backup.key").replace(tmp_path / "s.db.key")  # restored from the backup
    with EncryptedStore.open(path, FileKeyProvider(tmp_path / "s.db.key")) as store:
        assert store.get("alice", "fold") == b"kept"


def test_wrong_key_and_damage_have_their_own_messages(filled: Path, tmp_path: Path) -> None:
    other = FileKeyProvider(tmp_path / "other.key")
    other.add_key(os.urandom(32))
    with pytest.raises(StoreCorruptError) as wrong:
        EncryptedStore.open(filled, other)
    assert "was written under another master key" in str(wrong.value)
    assert "other.key" in str(wrong.value) and "EncryptedStore.reset(" in str(wrong.value)
    with _sql(filled) as db:
        db.execute("UPDATE records SET sealed = zeroblob(40)")
    with _open(filled) as store, pytest.raises(StoreCorruptError) as damaged:
        store.get(SUBJECTS[0], "fold")
    assert "failed authentication (the file was tampered with, truncated or damaged)" in str(damaged.value)
    assert "another master key" not in str(damaged.value)


def test_garbage_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(StoreCorruptError):
        _open(path)


def test_newer_format_is_a_store_error_not_corruption(filled: Path) -> None:
    # A future format derives its own key id, so ours does not verify.
    with _sql(filled) as db:
        db.execute("UPDATE meta SET value = ? WHERE name = 'format'", ((2).to_bytes(4, "big"),))
        db.execute("UPDATE meta SET value = ? WHERE name = 'key_id'", (os.urandom(32),))
    with pytest.raises(StoreError, match="upgrade the SDK") as caught:
        _open(filled)
    assert not isinstance(caught.value, StoreCorruptError)


def test_damaged_format_field_is_corruption(filled: Path) -> None:
    with _sql(filled) as db:
        db.execute("UPDATE meta SET value = ? WHERE name = 'format'", ((2).to_bytes(4, "big"),))
    with pytest.raises(StoreCorruptError, match="format record is damaged"):
        _open(filled)


def test_edited_column_types_are_corrupt(filled: Path) -> None:
    with _sql(filled) as db:
        db.execute("UPDATE subjects SET wrapped = 42")
    with _open(filled) as store, pytest.raises(StoreCorruptError):
        store.get(SUBJECTS[0], "fold")


# ---------------------------------------------------------------------------- privacy


def test_subject_names_never_reach_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    names = ["patient-4711@clinic.example", "ünïque-subject-name"]
    provider = FileKeyProvider(tmp_path / "s.db.key")
    with EncryptedStore.open(path, provider) as store:
        for name in names:
            store.put(name, "fold-state", b"x" * 100)
        store.put(EncryptedStore.GLOBAL, "pseudonym-secret", KEY)
        raw_while_open = _all_file_bytes(tmp_path)
        store.forget(names[0])
    raw = raw_while_open + _all_file_bytes(tmp_path)
    for name in [*names, "fold-state", "pseudonym-secret"]:
        for encoding in ("utf-8", "utf-16-le"):
            assert raw.count(name.encode(encoding)) == 0, name
    assert raw.count(KEY) == 0


def test_forget_survives_an_old_copy_of_the_store(tmp_path: Path) -> None:
    path, old_copy = tmp_path / "s.db", tmp_path / "old-copy.db"
    provider = FileKeyProvider(tmp_path / "s.db.key")
    secret_fold = b"alice's fold state " * 20
    with EncryptedStore.open(path, provider) as store:
        store.put("alice", "fold", secret_fold)
        store.put("bob", "fold", b"bob")
    shutil.copyfile(path, old_copy)  # e.g. a backup taken before the user asked to be forgotten
    (stolen_key,) = provider.load_keys()  # only to prove the control below, then destroyed
    with EncryptedStore.open(path, provider) as store:
        assert store.forget("alice") is True
        assert store.forget("alice") is False
        assert store.subjects() == ["bob"]
        assert store.get("alice", "fold") is None
        assert store.get("bob", "fold") == b"bob"

    # The old copy opened with the current provider: refused as corrupt, nothing readable.
    with pytest.raises(StoreCorruptError):
        EncryptedStore.open(old_copy, provider)
    # An attacker holding every current file cannot unwrap any key in the old copy.
    (current_key,) = provider.load_keys()
    assert current_key != stolen_key
    with _sql(old_copy) as db:
        store_id = dict(db.execute("SELECT name, value FROM meta").fetchall())["store_id"]
        wrapped = db.execute("SELECT ref, wrapped FROM subjects").fetchall()
    for key in (current_key, *provider.load_keys()):
        master = MasterKeys.derive(key, store_id)
        for ref, blob in wrapped:
            for subject in (b"alice", b"bob", b""):
                with pytest.raises(InvalidTag):
                    unseal(master.wrap, blob, _dek_aad(store_id, ref, subject))
    # The old key is gone from every file the store and the provider wrote.
    assert _all_file_bytes(tmp_path).count(stolen_key) == 0
    # Control: had the old key survived, the old copy would give alice's data away.
    stolen = MasterKeys.derive(stolen_key, store_id)
    assert any(_try_unseal(stolen, blob, _dek_aad(store_id, ref, b"alice")) for ref, blob in wrapped)
    with EncryptedStore.open(old_copy, MemoryKeyProvider(stolen_key)) as leaked:
        assert leaked.get("alice", "fold") == secret_fold


def _dek_aad(store_id: bytes, ref: bytes, subject: bytes) -> bytes:
    """The associated data of a wrapped subject key, as the module docstring describes it."""
    context = encode_fields(b"edgepersona/store/v1", store_id, (1).to_bytes(4, "big"))
    return encode_fields(context, b"data-key", ref, subject)


def _try_unseal(master: MasterKeys, blob: bytes, aad: bytes) -> bool:
    try:
        unseal(master.wrap, blob, aad)
    except InvalidTag:
        return False
    return True


class _CrashingProvider(MemoryKeyProvider):
    """Fails like a crash at the point where the old key would be destroyed."""

    crash = True

    def destroy_other_keys(self, keep: bytes) -> None:
        if self.crash and len(self.load_keys()) > 1:
            raise StoreError("simulated crash before the old key was destroyed")
        super().destroy_other_keys(keep)


def _traces(store: EncryptedStore, subject: str) -> set[bytes]:
    """Every byte string the subject's rows hold now: row keys, wrapped key, sealed name and values."""
    conn = store._conn
    assert conn is not None
    sid = store._master.subject_id(subject.encode())
    row = conn.execute("SELECT ref, sid, wrapped, sealed_name FROM subjects WHERE sid = ?", (sid,)).fetchone()
    if row is None:
        return set()
    found = set(row)
    for rid, sealed in conn.execute("SELECT rid, sealed FROM records WHERE ref = ?", (row[0],)):
        found |= {rid, sealed}
    return found


def _store_files(path: Path) -> bytes:
    """The raw bytes of the store file and every side file SQLite may have written."""
    parts = [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    return b"".join(part.read_bytes() for part in parts if part.exists())


# Seeds 25 and 34 are workloads where secure_delete and a WAL checkpoint alone leave stale
# copies of the subject's cells in rebalanced pages (found by running 40 seeds without the
# VACUUM of forget: 2 leaked, as the issue saw 2 of 16 records); 0 and 1 are ordinary ones.
# Long form: EDGEPERSONA_FORGET_SEEDS=40 runs seeds 0..39.
_FORGET_SEEDS = int(os.environ.get("EDGEPERSONA_FORGET_SEEDS", "0"))


@pytest.mark.parametrize("seed", sorted({0, 1, 25, 34} | set(range(_FORGET_SEEDS))))
def test_forget_leaves_no_byte_of_the_subject_in_any_file(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "s.db"
    subjects = ["victim", "ann", "ben", "cy", "dee"]
    seen: set[bytes] = set()
    with EncryptedStore.open(path, FileKeyProvider(tmp_path / "s.db.key")) as store:
        for step in range(300):  # interleaved writes, rewrites, deletes and other forgets
            subject, name = rng.choice(subjects), f"record-{rng.randrange(16)}"
            store.put(subject, name, rng.randbytes(rng.choice([12, 200, 3000, 9000])))
            if rng.random() < 0.1:
                store.delete(subject, f"record-{rng.randrange(16)}")
            if step % 60 == 59:
                store.put(f"passer-by-{step}", "fold", b"x" * 500)
                store.forget(f"passer-by-{step}")
            seen |= _traces(store, "victim")
        assert len(seen) > 40
        assert any(trace in _store_files(path) for trace in seen)  # control: the scan finds them
        assert store.forget("victim") is True
        left = [trace.hex() for trace in seen if trace in _store_files(path)]
        assert left == [], "forget left pages of the subject while the store is open"
    left = [trace.hex() for trace in seen if trace in _store_files(path)]
    assert left == [], "forget left pages of the subject after close"


class _FailingVacuum:
    """A connection whose VACUUM fails as on a full disk."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "VACUUM":
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = 13  # type: ignore[attr-defined]
            raise error
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


class _Killed(BaseException):
    """Stands for the process dying at that point (nothing after it runs)."""


def test_forget_killed_before_its_scrub_is_scrubbed_by_the_next_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    live.mkdir()
    connect = EncryptedStore._connect

    class KilledAtVacuum(_FailingVacuum):
        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql == "VACUUM":  # the disk as the dying process leaves it: copy every file now
                shutil.copytree(live, crashed)
                raise _Killed
            return self._conn.execute(sql, *args)

    monkeypatch.setattr(EncryptedStore, "_connect", lambda self: KilledAtVacuum(connect(self)))
    with _open(live / "s.db", FileKeyProvider(live / "s.db.key")) as store:
        traces: set[bytes] = set()
        for i in range(60):
            store.put("victim" if i % 3 else f"other-{i % 4}", f"r{i % 10}", os.urandom(300 + 97 * i))
            traces |= _traces(store, "victim")
        with pytest.raises(_Killed):
            store.forget("victim")
    monkeypatch.undo()
    provider = FileKeyProvider(crashed / "s.db.key")
    assert len(provider.load_keys()) == 2  # killed mid-rotation
    assert any(trace in _store_files(crashed / "s.db") for trace in traces)  # control
    with _open(crashed / "s.db", provider) as reopened:
        assert [t.hex() for t in traces if t in _store_files(crashed / "s.db")] == []
        assert reopened.subjects() == sorted({f"other-{i % 4}" for i in range(60) if i % 3 == 0})
    assert len(provider.load_keys()) == 1
    assert [t.hex() for t in traces if t in _store_files(crashed / "s.db")] == []


def test_a_failed_scrub_still_shreds_and_says_how_to_finish(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, provider = tmp_path / "s.db", MemoryKeyProvider(KEY)
    connect = EncryptedStore._connect
    monkeypatch.setattr(EncryptedStore, "_connect", lambda self: _FailingVacuum(connect(self)))
    with _open(path, provider) as store:
        store.put("alice", "fold", b"a" * 300)
        store.put("bob", "fold", b"b")
        with pytest.raises(StoreError, match=r"the subject is forgotten .* call scrub\(\)") as caught:
            store.forget("alice")
        assert "alice" not in str(caught.value)
        assert provider.load_keys() != [KEY] and len(provider.load_keys()) == 1  # old key destroyed
        assert store.subjects() == ["bob"] and store.get("alice", "fold") is None
    monkeypatch.undo()  # the cause is fixed
    with _open(path, provider) as store:
        store.scrub()
        assert store.subjects() == ["bob"] and store.get("bob", "fold") == b"b"


@settings(max_examples=25, deadline=None)
@given(
    operations=st.lists(
        st.tuples(st.sampled_from(["ann", "ben", "cy", "victim"]), st.sampled_from(["a", "b", "c"]),
                  st.binary(max_size=5000), st.booleans()),
        min_size=1, max_size=40),
    forget_at=st.integers(min_value=0, max_value=40),
)
def test_forget_keeps_every_other_subject_intact(
        operations: list[tuple[str, str, bytes, bool]], forget_at: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path, provider = Path(folder) / "s.db", FileKeyProvider(Path(folder) / "s.db.key")
        model: dict[tuple[str, str], bytes] = {}
        with EncryptedStore.open(path, provider) as store:
            for index, (subject, name, value, delete) in enumerate(operations):
                if index == forget_at:
                    assert store.forget("victim") is any(s == "victim" for s, _ in model)
                    model = {key: v for key, v in model.items() if key[0] != "victim"}
                if delete:
                    assert store.delete(subject, name) is ((subject, name) in model)
                    model.pop((subject, name), None)
                else:
                    store.put(subject, name, value)
                    model[(subject, name)] = value
            store.forget("victim")
            model = {key: v for key, v in model.items() if key[0] != "victim"}
        with EncryptedStore.open(path, provider) as store:
            assert "victim" not in store.subjects()
            for subject in ("ann", "ben", "cy", "victim"):
                for name in ("a", "b", "c"):
                    assert store.get(subject, name) == model.get((subject, name))


def test_forget_interrupted_after_commit_is_finished_by_the_next_open(tmp_path: Path) -> None:
    path, provider = tmp_path / "s.db", _CrashingProvider(KEY)
    with EncryptedStore.open(path, provider) as store:
        store.put("alice", "fold", b"a")
        store.put("bob", "fold", b"b")
        with pytest.raises(StoreError, match="simulated crash"):
            store.forget("alice")
    assert len(provider.load_keys()) == 2
    provider.crash = False
    with EncryptedStore.open(path, provider) as store:
        assert store.subjects() == ["bob"]
        assert store.get("bob", "fold") == b"b"
    assert provider.load_keys() != [KEY] and len(provider.load_keys()) == 1


def test_forget_interrupted_before_commit_is_undone_by_the_next_open(tmp_path: Path) -> None:
    path, provider = tmp_path / "s.db", FileKeyProvider(tmp_path / "k")
    with EncryptedStore.open(path, provider) as store:
        store.put("alice", "fold", b"a")
    (key,) = provider.load_keys()
    provider.add_key(os.urandom(32))  # the crash came right after the new key was staged
    with EncryptedStore.open(path, provider) as store:
        assert store.get("alice", "fold") == b"a"
    assert provider.load_keys() == [key]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "s.db"]


def test_file_key_provider_recovers_from_every_step(tmp_path: Path) -> None:
    provider = FileKeyProvider(tmp_path / "k")
    assert provider.load_keys() == []
    first, second = os.urandom(32), os.urandom(32)
    provider.add_key(first)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    provider.add_key(second)
    with pytest.raises(StoreError, match="already pending"):
        provider.add_key(os.urandom(32))
    assert provider.load_keys() == [first, second]
    # Crash after the old file was shredded, before the rename: only the new key is valid.
    (tmp_path / "k").write_bytes(bytes(48))
    (tmp_path / ".k.next.stray.tmp").write_bytes(second)
    assert provider.load_keys() == [second]
    provider.destroy_other_keys(second)
    assert provider.load_keys() == [second]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]
    with pytest.raises(StoreError, match="not held"):
        provider.destroy_other_keys(first)
    (tmp_path / "k").write_bytes((tmp_path / "k").read_bytes()[:-1])  # torn
    assert provider.load_keys() == []


# ---------------------------------------------------------------------------- environment


def test_missing_folder_is_a_clear_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        _open(tmp_path / "no" / "such" / "s.db")
    with pytest.raises(StoreError, match="cannot write key file"):
        FileKeyProvider(tmp_path / "no" / "k").add_key(KEY)


def test_disk_full_keeps_the_last_good_state(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with _open(path) as store:
        store.put("alice", "fold", b"good")
        assert store._conn is not None
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages + 1}")
        with pytest.raises(StoreError, match=r"disk is full.*last committed state is kept"):
            store.put_many([("alice", "fold", b"new"), ("bob", "fold", os.urandom(200_000))])
        assert store.get("alice", "fold") == b"good"
        assert store.subjects() == ["alice"]
        store._conn.execute("PRAGMA max_page_count = 1073741823")
        store.put("alice", "fold", b"small still fits")
    with _open(path) as store:
        assert store.get("alice", "fold") == b"small still fits"


def test_failed_forget_closes_and_the_next_open_settles_the_keys(tmp_path: Path) -> None:
    path, provider = tmp_path / "s.db", MemoryKeyProvider(KEY)
    with _open(path, provider) as store:
        for subject in SUBJECTS:
            store.put(subject, "fold", subject.encode())
    with _sql(path) as db:  # damage the sealed names, which forget must re-seal
        db.execute("UPDATE subjects SET sealed_name = zeroblob(48)")
    with _open(path, provider) as store:
        with pytest.raises(StoreCorruptError):
            store.forget(SUBJECTS[0])
        assert len(provider.load_keys()) == 2  # the rotation is left for the next open
        with pytest.raises(StoreError, match="closed"):
            store.get(SUBJECTS[1], "fold")
    with _open(path, provider) as store:
        assert all(store.get(s, "fold") == s.encode() for s in SUBJECTS)  # rolled back
    assert provider.load_keys() == [KEY]


def test_a_store_is_opened_once(tmp_path: Path) -> None:
    with _open(tmp_path / "s.db"), pytest.raises(StoreError, match="another"):
        _open(tmp_path / "s.db")


def test_threads_share_one_store(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with _open(tmp_path / "s.db") as store:

        def work(worker: int) -> None:
            try:
                for i in range(40):
                    store.put(f"subject-{worker}", "counter", str(i).encode())
                    assert store.get(f"subject-{worker}", "counter") == str(i).encode()
                    if worker == 0 and i % 5 == 0:
                        store.put(f"victim-{i}", "fold", b"x")
                        assert store.forget(f"victim-{i}")
                    if worker == 1:
                        assert all(s.startswith(("subject-", "victim-")) for s in store.subjects())
            except BaseException as exc:  # collected and re-raised in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert store.subjects() == sorted(f"subject-{w}" for w in range(8))
        assert all(store.get(f"subject-{w}", "counter") == b"39" for w in range(8))


# ---------------------------------------------------------------------------- crash safety

_WRITER = """
import sys, types
sdk_dir, path, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
# Load only the store module, not the whole SDK, so each of hundreds of runs starts fast.
package = types.ModuleType("edgepersona.sdk")
package.__path__ = [sdk_dir]
sys.modules["edgepersona.sdk"] = package
from edgepersona.sdk._store import EncryptedStore, FileKeyProvider
store = EncryptedStore.open(path, FileKeyProvider(path + ".key"))
print("ready", flush=True)
i = start
while True:
    i += 1
    value = str(i).encode()
    store.put_many([("alice", "counter", value * 700), ("bob", "counter", value)])
    print(i, flush=True)
    if i % 5 == 0:
        store.put("temp", "x", value)
        store.forget("temp")
"""


def _check_after_crash(path: Path, acknowledged: int) -> int:
    provider = FileKeyProvider(str(path) + ".key")
    with EncryptedStore.open(path, provider) as store:
        alice, bob = store.get("alice", "counter"), store.get("bob", "counter")
    assert len(provider.load_keys()) == 1
    if alice is None or bob is None:
        assert alice is None and bob is None and acknowledged == 0
        return 0
    value = int(bob)
    assert alice == bob * 700, "the batch was half-applied"
    assert acknowledged <= value <= acknowledged + 1
    return value


def test_killed_writer_never_loses_acknowledged_writes(tmp_path: Path) -> None:
    kills = int(os.environ.get("EDGEPERSONA_KILLS", "40"))
    rng = random.Random(20240611)
    path, sdk_dir = tmp_path / "crash.db", str(Path(store_module.__file__).parent)
    stored = 0
    for _ in range(kills):
        with subprocess.Popen(
            [sys.executable, "-c", _WRITER, sdk_dir, str(path), str(stored)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as writer:
            assert writer.stdout is not None and writer.stderr is not None
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0.0, 0.25))  # anywhere, including while opening
            else:
                assert writer.stdout.readline() == b"ready\n"
                time.sleep(rng.uniform(0.0, 0.06))
            writer.send_signal(signal.SIGKILL)
            # Read through the buffered reader: readline() may already hold later lines.
            out, err = writer.stdout.read(), writer.stderr.read()
        assert writer.returncode == -signal.SIGKILL, err.decode()
        acked = [int(line) for line in out.split(b"\n") if line.strip().isdigit()]
        stored = _check_after_crash(path, max(acked, default=stored))
    assert stored > 0
