"""Every attack on bundle trust, as one table: refused, and the trusted state never moves.

Each row builds what a malicious or stale repository serves, then attacks a
device (see ``conftest.py``: version 3 active, key rotation #1 applied) twice:

1. ``client.update(bundle)`` on the running client: the row's error, the active
   version, manifest and assignment unchanged;
2. after a restart, ``PersonaClient.open(bundle)`` (rows where that is an attack):
   the same error.

After each step the store is read directly: the persisted trusted version and
trusted-key record are byte for byte what they were, and a restart with the
honest version 3 comes back at version 3 with the rotated keys. The figure
"N/N attacks rejected, trusted state unchanged" is printed in pytest's summary.
The one-file, one-form tamper tests live in ``tests/sdk/test_bundle.py``; this
table is the systematic version against a client with persisted state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import onnxruntime
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import (
    BundleExpiredError,
    ModelIntegrityError,
    PersonaClient,
    RollbackError,
    UntrustedKeyError,
)

from . import graphs, zips
from .conftest import ACTIVE_VERSION, Device
from .repository import (
    BundleRepository,
    EndlessFile,
    drop_file,
    flip_byte,
    mix,
    rename_file,
)

PAYLOAD = ("model.onnx", "cards.md", "cards.json")
EVERY_FILE = ("manifest.json", "signature", *PAYLOAD)
NEXT = ACTIVE_VERSION + 1


@dataclass(frozen=True)
class Keys:
    """The keys an attacker may sign with."""

    current: Ed25519PrivateKey  # the rotated-in key the device trusts
    revoked: Ed25519PrivateKey  # the original key, revoked by rotation #1
    stranger: Ed25519PrivateKey  # never trusted


@dataclass(frozen=True)
class Attack:
    """One row: how to build the bundle, the error it must raise, what else to check."""

    id: str
    build: Callable[[BundleRepository, Keys], Any]
    error: type[Exception]
    match: str | None = None
    at_open: bool = True  # also an attack when passed to PersonaClient.open after a restart
    graph_never_loaded: bool = False  # onnxruntime must not even see the graph


def _release(**options: Any) -> Callable[[BundleRepository, Keys], Any]:
    return lambda repo, keys: repo.release(NEXT, **options)


def _signed_by(which: str, version: int = NEXT) -> Callable[[BundleRepository, Keys], Any]:
    return lambda repo, keys: repo.release(version, key=getattr(keys, which))


def _damaged(damage: Callable[..., Any], *args: Any) -> Callable[[BundleRepository, Keys], Any]:
    return lambda repo, keys: damage(repo.release(NEXT), *args)


def _graph(edit: graphs.GraphEdit, location: str) -> Callable[[BundleRepository, Keys], Any]:
    """Re-signed by the trusted key: only the SDK's graph check can stop it."""
    def build(repo: BundleRepository, keys: Keys) -> Any:
        model = edit(repo.models["A"]["model.onnx"], location)
        return repo.release(NEXT, replace={"model.onnx": model})

    return build


def _endless(repo: BundleRepository, keys: Keys) -> Any:
    files = repo.release(NEXT)
    return {**files, "model.onnx": EndlessFile(files["model.onnx"])}


def _zip(build: Callable[[Any], bytes]) -> Callable[[BundleRepository, Keys], Any]:
    """The next release, served as an archive only one zip reader reads as signed."""
    return lambda repo, keys: build(repo.release(NEXT))


ZIP_ATTACKS: tuple[tuple[str, Callable[[Any], bytes]], ...] = (
    ("zip-duplicate-model-unsigned-first", zips.duplicate("model.onnx", unsigned_first=True)),
    ("zip-duplicate-model-unsigned-last", zips.duplicate("model.onnx", unsigned_first=False)),
    ("zip-duplicate-manifest", zips.duplicate("manifest.json", unsigned_first=True)),
    ("zip-case-twin", zips.case_twin),
    ("zip-path-entry", zips.extra_entry("../model.onnx")),
    ("zip-subfolder-entry", zips.extra_entry("sub/model.onnx")),
    ("zip-backslash-entry", zips.extra_entry("sub\\model.onnx")),
    ("zip-directory-entry", zips.extra_entry("cards/")),
    ("zip-symlink-model", zips.SYMLINK),
    ("zip-dos-directory-model", zips.DIRECTORY_ATTRIBUTE),
    ("zip-unicode-path-field", zips.UNICODE_PATH),
    ("zip-bzip2-model", zips.STORED_AS_BZIP2),
    ("zip-encrypted-flag", zips.flagged(0x0001)),
    ("zip-data-descriptor-flag", zips.flagged(0x0008)),
    ("zip-nul-in-name", zips.nul_in_name),
    ("zip-local-name-differs", zips.local_name_differs),
    ("zip-prepended-bytes", zips.prepended),
    ("zip-comment", zips.commented),
    ("zip-appended-archive", zips.appended),
    ("zip-central-record-overruns", zips.central_record_overruns),
)


def _mixed_manifest(repo: BundleRepository, keys: Keys) -> Any:
    """Version 4's payload under version 5's manifest with version 4's signature."""
    return mix(repo.release(NEXT), repo.release(NEXT + 1), "manifest.json")


def _extra_feature(fields: dict[str, Any]) -> None:
    """One more spec feature (and assigner entry) than the graph takes."""
    fields["spec"]["features"].append({"name": "extra", "event": "x", "aggregate": "count",
                                       "bounds": [0, 1]})
    assigner = fields["assigner"]
    for name, value in (("lower", 0.0), ("upper", 1.0), ("log1p", False), ("center", 0.0),
                        ("scale", 1.0)):
        assigner[name] = [*assigner[name], value]
    assigner["centroids"] = [[*c, 0.0] for c in assigner["centroids"]]


def _extra_persona(fields: dict[str, Any]) -> None:
    """One more persona card and centroid than the graph outputs."""
    assigner = fields["assigner"]
    assigner["centroids"] = [*assigner["centroids"], [9.0] * len(assigner["lower"])]
    fields["personas"] = [*fields["personas"],
                          {**fields["personas"][-1], "id": "PX", "index": len(fields["personas"])}]


def _other_model(fields: dict[str, Any]) -> None:
    fields["model_id"] = "someone-else"


ATTACKS: tuple[Attack, ...] = (
    *(Attack(f"tampered-{name}", _damaged(flip_byte, name), ModelIntegrityError) for name in EVERY_FILE),
    Attack("extra-file", _damaged(lambda f: {**f, "extra.bin": b"hello"}), ModelIntegrityError,
           "unexpected"),
    *(Attack(f"missing-{name}", _damaged(drop_file, name), ModelIntegrityError) for name in EVERY_FILE),
    *(Attack(f"renamed-{name}", _damaged(rename_file, name, name.upper()), ModelIntegrityError)
      for name in EVERY_FILE),
    Attack("wrong-key", _signed_by("stranger"), UntrustedKeyError, "not trusted"),
    Attack("revoked-key", _signed_by("revoked"), UntrustedKeyError, "revoked"),
    Attack("revoked-key-original-v1", lambda repo, keys: repo.models["A"], UntrustedKeyError,
           "revoked"),
    *(Attack(f"rollback-to-v{v}", _signed_by("current", v), RollbackError, "roll back")
      for v in range(1, ACTIVE_VERSION)),
    Attack(f"replay-v{ACTIVE_VERSION}", _signed_by("current", ACTIVE_VERSION), RollbackError,
           at_open=False),  # reopening at the trusted version is allowed
    Attack("freeze-expired", _release(created_at=datetime(2020, 1, 1, tzinfo=UTC),
                                      expires_at=datetime(2021, 1, 1, tzinfo=UTC)),
           BundleExpiredError, "expired"),
    Attack("mix-onnx-of-other-model",
           lambda repo, keys: mix(repo.release(NEXT), repo.models["B"], "model.onnx"),
           ModelIntegrityError, "manifest (declares|digest)"),
    Attack("mix-manifest-of-other-release", _mixed_manifest, ModelIntegrityError, "does not verify"),
    Attack("endless-model-file", _endless, ModelIntegrityError, "larger"),
    *(Attack(f"onnx-external-{place}-{label}", _graph(graphs.EVERY_PLACE[place], location),
             ModelIntegrityError, "external data", graph_never_loaded=True)
      for place, label, location in (("initializer", "traversal", graphs.TRAVERSAL),
                                     ("initializer", "absolute", "/etc/passwd"),
                                     ("initializer", "ort-memory-marker", "*/_ORT_MEM_ADDR_/*"),
                                     ("constant_attribute", "traversal", graphs.TRAVERSAL),
                                     ("if_subgraph", "traversal", graphs.TRAVERSAL))),
    Attack("lying-feature-count", _release(edit=_extra_feature), ModelIntegrityError,
           "does not match its manifest"),
    Attack("lying-persona-count", _release(edit=_extra_persona), ModelIntegrityError,
           "does not match its manifest"),
    Attack("other-model-id", _release(edit=_other_model), ModelIntegrityError, "someone-else",
           at_open=False),  # PersonaClient.open does not pin the model id it trusted before
    *(Attack(name, _zip(build), ModelIntegrityError, graph_never_loaded=True)
      for name, build in ZIP_ATTACKS),
)


@pytest.fixture(scope="module")
def keys(new_signing_key: Ed25519PrivateKey, signing_key: Ed25519PrivateKey,
         other_signing_key: Ed25519PrivateKey) -> Keys:
    return Keys(current=new_signing_key, revoked=signing_key, stranger=other_signing_key)


@pytest.fixture
def graphs_loaded(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every graph handed to onnxruntime."""
    loaded: list[bytes] = []
    real = onnxruntime.InferenceSession

    def spy(model: bytes, *args: Any, **kwargs: Any) -> Any:
        loaded.append(bytes(model))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    return loaded


def observed(client: PersonaClient) -> tuple[Any, ...]:
    """Everything an attack must not change in a running client."""
    runtime = client.runtime
    trust = runtime._trusted
    return (runtime.version, runtime.manifest, client.assign(), trust.ids, trust.revoked,
            trust.rotation)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_attack_is_rejected_and_the_trusted_state_does_not_move(
        attack: Attack, device: Device, repository: BundleRepository, keys: Keys,
        graphs_loaded: list[bytes], record_rejected_attack: Callable[[str], None]) -> None:
    honest = repository.release(ACTIVE_VERSION)
    persisted = device.persisted()
    assert persisted[0] == str(ACTIVE_VERSION).encode()

    client = device.open(honest)
    before = observed(client)
    bundle = attack.build(repository, keys)
    with pytest.raises(attack.error, match=attack.match) as info:
        client.update(bundle)
    assert type(info.value) is attack.error or attack.error is ModelIntegrityError
    assert observed(client) == before
    client.close()
    assert device.persisted() == persisted

    if attack.at_open:  # same error; messages may differ (open does not name revoked keys)
        with pytest.raises(attack.error):
            device.open(attack.build(repository, keys))
        assert device.persisted() == persisted
    _check_side_effects(attack, bundle, graphs_loaded)

    with device.open(honest) as restarted:
        assert observed(restarted) == before
    assert device.persisted() == persisted
    record_rejected_attack(attack.id)


def _check_side_effects(attack: Attack, bundle: Any, graphs_loaded: list[bytes]) -> None:
    """Row-specific checks: how far an endless file was read, whether onnxruntime saw the graph."""
    if isinstance(bundle, bytes):  # an archive: neither graph it holds reached onnxruntime
        assert zips.EVIL_MODEL not in graphs_loaded
        assert len(graphs_loaded) == 1  # only the honest graph, opened before the attack
        return
    if isinstance(bundle.get("model.onnx"), EndlessFile):
        declared = json.loads(bundle["manifest.json"])["files"]["model.onnx"]["size"]
        assert bundle["model.onnx"].furthest == declared + 1
    if attack.graph_never_loaded:
        assert bundle["model.onnx"] not in graphs_loaded
        assert graphs_loaded  # the spy works: the honest graph went through it


def test_the_honest_next_release_is_accepted(device: Device, repository: BundleRepository) -> None:
    # The control: every row above differs from this accepted release by its attack alone.
    client = device.open(repository.release(ACTIVE_VERSION))
    assert client.update(repository.release(NEXT)) == NEXT
    client.close()
    assert device.persisted()[0] == str(NEXT).encode()


def test_the_honest_next_release_is_accepted_as_an_archive(device: Device,
                                                           repository: BundleRepository) -> None:
    # The control of the zip rows: the trainer's archive layout verifies.
    client = device.open(zips.honest(repository.release(ACTIVE_VERSION)))
    assert client.update(zips.honest(repository.release(NEXT))) == NEXT
    client.close()


def test_attacks_in_sequence_on_one_device_leave_it_where_it_was(
        device: Device, repository: BundleRepository, keys: Keys) -> None:
    # A hostile repository serves every attack, one after the other, to one running client.
    client = device.open(repository.release(ACTIVE_VERSION))
    before = observed(client)
    escaped = []
    for attack in ATTACKS:
        try:
            client.update(attack.build(repository, keys))
        except attack.error:
            continue
        escaped.append(attack.id)
    assert escaped == []
    assert observed(client) == before
    assert client.update(repository.release(NEXT)) == NEXT  # and it can still move forward
