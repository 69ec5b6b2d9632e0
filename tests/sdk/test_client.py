"""PersonaClient: events folded on the device, durable encrypted state, safe updates."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgepersona.sdk import (
    ClientOptions,
    EncryptedStore,
    InputError,
    MemoryKeyProvider,
    ModelIntegrityError,
    PersonaClient,
    RollbackError,
    StoreError,
    TrackedEvent,
)
from edgepersona.trainer.release.train import TrainResult

T0 = 1_735_776_000.0  # 2025-01-02, after the test bundles were created


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys() -> MemoryKeyProvider:
    return MemoryKeyProvider()


def open_client(bundle: Mapping[str, bytes], public_key: bytes, path: Path,
                keys: MemoryKeyProvider, clock: Clock | None = None,
                options: ClientOptions | None = None) -> PersonaClient:
    return PersonaClient.open(dict(bundle), trusted_keys=[public_key], store=path / "state.db",
                              key_provider=keys, clock=clock or Clock(), options=options)


def big_spender_events(client: PersonaClient, subject: str = "me") -> None:
    for day in range(20):
        at = T0 - (20 - day) * 86_400
        client.track("session", subject=subject, at=at)
        client.track("purchase", 150.0, subject=subject, at=at + 60)
        client.track("view", subject=subject, at=at + 120, properties={"category": f"c{day}"})


def test_track_then_assign_matches_the_runtime_on_the_folded_features(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path,
        keys: MemoryKeyProvider) -> None:
    with open_client(bundle_files, public_key, tmp_path, keys) as client:
        big_spender_events(client)
        features = client.features()
        result = client.assign()
        assert result == client.runtime.assign(features)
        assert result.determined
        assert features[0] > 0 and features[1] > 0 and features[3] > 0


def test_state_survives_a_restart_and_is_encrypted(bundle_files: Mapping[str, bytes],
                                                   public_key: bytes, tmp_path: Path,
                                                   keys: MemoryKeyProvider) -> None:
    with open_client(bundle_files, public_key, tmp_path, keys) as client:
        big_spender_events(client, subject="alice@example.com")
        before = client.features(subject="alice@example.com")
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"alice@example.com" not in raw
    assert b"category" not in raw and b"c19" not in raw
    with open_client(bundle_files, public_key, tmp_path, keys) as client:
        assert client.features(subject="alice@example.com") == before
        assert client.subjects() == ["alice@example.com"]


def test_bad_input_changes_nothing(bundle_files: Mapping[str, bytes], public_key: bytes,
                                   tmp_path: Path, keys: MemoryKeyProvider) -> None:
    clock = Clock()
    with open_client(bundle_files, public_key, tmp_path, keys, clock) as client:
        client.track("purchase", 10.0, at=T0 - 60)
        before = client.features()
        for call in (
            lambda: client.track("purchase", float("nan")),
            lambda: client.track("purchase", float("inf")),
            lambda: client.track("purchase", "12"),  # type: ignore[arg-type]
            lambda: client.track("purchase", True),  # type: ignore[arg-type]
            lambda: client.track("", 1.0),
            lambda: client.track("purchase", 1.0, at=-5.0),
            lambda: client.track("purchase", 1.0, at=T0 + 3600),  # an hour ahead of the clock
            lambda: client.track_many([TrackedEvent("me", "purchase", 5.0, T0 - 1),
                                       TrackedEvent("me", "purchase", float("nan"), T0)]),
        ):
            with pytest.raises(InputError):
                call()
        assert client.features() == before


def test_unknown_events_are_counted_or_rejected(bundle_files: Mapping[str, bytes],
                                                public_key: bytes, tmp_path: Path,
                                                keys: MemoryKeyProvider,
                                                resign_bundle: Callable[..., dict[str, bytes]]
                                                ) -> None:
    def no_wildcards(manifest: dict[str, Any]) -> None:
        for feature in manifest["spec"]["features"]:
            if feature["event"] == "*":
                feature["event"] = "session"

    bundle = resign_bundle(bundle_files, no_wildcards)
    with open_client(bundle, public_key, tmp_path, keys) as client:
        assert client.track("made-up-event", at=T0 - 1) is False
        assert client.ignored_events == 1
        assert client.features() == client.runtime.fold_plan.new_state().evaluate(T0).tolist()
    strict = ClientOptions(unknown_events="reject")
    with open_client(bundle, public_key, tmp_path, keys, options=strict) as client:
        with pytest.raises(InputError, match="not in the spec"):
            client.track("made-up-event", at=T0 - 1)
        assert client.track("session", at=T0 - 1) is True


def test_too_little_evidence_is_not_determined(bundle_files: Mapping[str, bytes],
                                               public_key: bytes, tmp_path: Path,
                                               keys: MemoryKeyProvider,
                                               resign_bundle: Callable[..., dict[str, bytes]]
                                               ) -> None:
    def needs_five(manifest: dict[str, Any]) -> None:
        manifest["spec"]["min_events"] = 5

    with open_client(resign_bundle(bundle_files, needs_five), public_key, tmp_path, keys) as client:
        first = client.assign()
        assert first.determined is False and first.persona_id  # nearest persona still named
        for i in range(5):
            client.track("session", at=T0 - 100 + i)
        assert client.assign().determined is True


def test_explanations_name_features_in_plain_words(bundle_files: Mapping[str, bytes],
                                                   public_key: bytes, tmp_path: Path,
                                                   keys: MemoryKeyProvider) -> None:
    with open_client(bundle_files, public_key, tmp_path, keys) as client:
        big_spender_events(client)
        result = client.assign(explain=True)
        assert result.reasons
        names = set(client.runtime.spec.names)
        for reason in result.reasons:
            assert reason.feature in names and reason.share > 0
            assert result.name in reason.sentence
            assert "'" not in reason.sentence and "e-" not in reason.sentence  # no quotes, no 1e-14


def test_update_persists_the_trusted_version_against_rollback(
        bundle_files: Mapping[str, bytes], trained_v2: TrainResult, public_key: bytes,
        tmp_path: Path, keys: MemoryKeyProvider) -> None:
    with open_client(bundle_files, public_key, tmp_path, keys) as client:
        big_spender_events(client)
        assert client.update(dict(trained_v2.files)) == 2
        assert client.assign().model_version == 2
        with pytest.raises(RollbackError):
            client.update(dict(bundle_files))
        assert client.runtime.version == 2
    with pytest.raises(RollbackError):  # a restart does not reopen the door
        open_client(bundle_files, public_key, tmp_path, keys)
    with open_client(trained_v2.files, public_key, tmp_path, keys) as client:
        assert client.runtime.version == 2
        assert client.features()[0] > 0  # same spec: folded state carried over


def test_refused_update_keeps_the_last_good_bundle(bundle_files: Mapping[str, bytes],
                                                   trained_v2: TrainResult, public_key: bytes,
                                                   tmp_path: Path,
                                                   keys: MemoryKeyProvider) -> None:
    tampered = dict(trained_v2.files)
    tampered["model.onnx"] = tampered["model.onnx"][:-1] + bytes([tampered["model.onnx"][-1] ^ 1])
    with open_client(bundle_files, public_key, tmp_path, keys) as client:
        with pytest.raises(ModelIntegrityError):
            client.update(tampered)
        assert client.runtime.version == 1
        assert client.assign().model_version == 1


def test_forget_erases_a_subject(bundle_files: Mapping[str, bytes], public_key: bytes,
                                 tmp_path: Path, keys: MemoryKeyProvider) -> None:
    with open_client(bundle_files, public_key, tmp_path, keys) as client:
        big_spender_events(client, subject="bob")
        big_spender_events(client, subject="carol")
        carol = client.features(subject="carol")
        assert client.forget("bob") is True
        assert client.subjects() == ["carol"]
        assert client.features(subject="bob")[0] == 0.0
        assert client.features(subject="carol") == carol


def test_numeric_looking_subjects_are_distinct_text(bundle_files: Mapping[str, bytes],
                                                   public_key: bytes, tmp_path: Path,
                                                   keys: MemoryKeyProvider) -> None:
    with open_client(bundle_files, public_key, tmp_path, keys) as client:
        big_spender_events(client, subject="01")
        client.track("session", subject="1", at=T0 - 60)
        assert sorted(client.subjects()) == ["01", "1"]
        assert client.features(subject="001")[0] == 0.0  # never seen: not "01" or "1"
        assert client.features(subject="01") != client.features(subject="1")


def test_a_failed_commit_loses_nothing_acknowledged(bundle_files: Mapping[str, bytes],
                                                    public_key: bytes, tmp_path: Path,
                                                    keys: MemoryKeyProvider,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with open_client(bundle_files, public_key, tmp_path, keys) as client:
        client.track("purchase", 10.0, at=T0 - 60)
        acknowledged = client.features()

        def disk_full(*_args: object, **_kwargs: object) -> None:
            raise StoreError("disk full")

        monkeypatch.setattr(EncryptedStore, "put_many", disk_full)
        with pytest.raises(StoreError):
            client.track("purchase", 99.0, at=T0 - 30)
        monkeypatch.undo()
        assert client.features() == acknowledged


def test_gateway_serves_many_subjects_from_one_store(bundle_files: Mapping[str, bytes],
                                                     public_key: bytes, tmp_path: Path,
                                                     keys: MemoryKeyProvider) -> None:
    options = ClientOptions(cache_subjects=64)  # most subjects load lazily from the store
    subjects = [f"device-{i:04d}" for i in range(1000)]
    rng = np.random.default_rng(3)
    with open_client(bundle_files, public_key, tmp_path, keys, options=options) as client:
        batch = [TrackedEvent(s, "purchase", float(rng.uniform(5, 500)), T0 - float(rng.uniform(0, 9e5)))
                 for s in subjects for _ in range(3)]
        assert client.track_many(batch) == len(batch)
        expected = {s: client.assign(subject=s).persona_id for s in subjects[::97]}
    with open_client(bundle_files, public_key, tmp_path, keys, options=options) as client:
        assert len(client.subjects()) == len(subjects)
        assert {s: client.assign(subject=s).persona_id for s in expected} == expected


def test_concurrent_track_and_assign_from_threads(bundle_files: Mapping[str, bytes],
                                                  trained_v2: TrainResult, public_key: bytes,
                                                  tmp_path: Path, keys: MemoryKeyProvider) -> None:
    errors: list[BaseException] = []
    with open_client(bundle_files, public_key, tmp_path, keys) as client:
        def worker(n: int) -> None:
            try:
                for i in range(40):
                    client.track("session", subject=f"s{n}", at=T0 - 1000 + i)
                    result = client.assign(subject=f"s{n}")
                    assert len(result.distances) == (4 if result.model_version == 1 else 3)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        client.update(dict(trained_v2.files))
        for t in threads:
            t.join()
        assert not errors
        assert [client.features(subject=f"s{n}")[0] for n in range(4)] == \
            pytest.approx([client.features(subject="s0")[0]] * 4)


def test_pseudonyms_are_keyed_per_device_and_domain(bundle_files: Mapping[str, bytes],
                                                    public_key: bytes, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = open_client(bundle_files, public_key, tmp_path / "a", MemoryKeyProvider())
    second = open_client(bundle_files, public_key, tmp_path / "b", MemoryKeyProvider())
    with first, second:
        sync = first.pseudonym(subject="user-1")
        assert sync == first.pseudonym(subject="user-1")
        assert sync.value != first.pseudonym(subject="user-1", domain="local").value
        assert sync.value != second.pseudonym(subject="user-1").value
        assert "user-1" not in sync.value


def test_at_takes_unix_seconds_iso_8601_strings_and_datetimes(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path,
        keys: MemoryKeyProvider) -> None:
    from datetime import UTC, datetime, timedelta, timezone

    moment = datetime.fromtimestamp(T0 - 3_600, UTC)
    forms: dict[str, object] = {
        "seconds": T0 - 3_600,
        "iso-z": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "iso-offset": moment.astimezone(timezone(timedelta(hours=2))).isoformat(),
        "aware": moment,
        "naive-is-utc": moment.replace(tzinfo=None),
    }
    with open_client(bundle_files, public_key, tmp_path, keys) as client:
        for subject, at in forms.items():
            client.track("purchase", 12.0, subject=subject, at=at)  # type: ignore[arg-type]
        expected = client.features(subject="seconds")
        for subject, at in forms.items():
            assert client.features(subject=subject) == expected
            assert client.features(subject=subject, at=at) == client.features(  # type: ignore[arg-type]
                subject="seconds", at=T0 - 3_600)
        assert client.assign(subject="aware", at="2025-01-02T00:00:00+00:00").model_version >= 1
        with pytest.raises(InputError, match="not ISO 8601"):
            client.track("purchase", 1.0, at="yesterday")
        with pytest.raises(InputError, match="ISO 8601 string or a datetime"):
            client.assign(at=[T0])  # type: ignore[arg-type]


def test_ignored_events_is_a_read_only_counter(
        bundle_files: Mapping[str, bytes], public_key: bytes, tmp_path: Path,
        keys: MemoryKeyProvider) -> None:
    with open_client(bundle_files, public_key, tmp_path, keys) as client:
        client.track("session", at=T0 - 10)
        assert client.ignored_events == 0
        with pytest.raises(AttributeError):
            client.ignored_events = 5  # type: ignore[misc]
