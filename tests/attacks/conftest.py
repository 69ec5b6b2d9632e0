"""Fixtures for the attack suite: a rotated-in key, the repository, a device in a known state.

The device under attack went through a realistic history: it opened version 1
signed by the original key, applied key rotation #1 (original -> new key),
then updated to version 2 (another model) and version 3, both signed by the new
key. Its store is built once per session and copied for every test, so each
attack starts from exactly the same trusted state.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import EncryptedStore, MemoryKeyProvider, PersonaClient
from edgepersona.sdk.protocol.rotation import build_rotation_statement

from .repository import BundleRepository

ACTIVE_VERSION = 3  # the version the device runs when an attack starts
DEVICE_EVENTS = (("session", None), ("purchase", 120.0), ("view", None))
_RESULTS = pytest.StashKey[list[str]]()


class Clock:
    """A settable clock for PersonaClient (unix seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class Device:
    """A device's store folder and master key; opens PersonaClients on it like an app would.

    The app ships only the ORIGINAL public key: trust in the new key comes from
    the rotation persisted in the store.
    """

    folder: Path
    master_key: bytes
    app_keys: list[bytes]
    now: float
    opened: list[PersonaClient] = field(default_factory=list)

    @property
    def store_path(self) -> Path:
        return self.folder / "state.db"

    def open(self, bundle: Any, *, app_keys: list[bytes] | None = None) -> PersonaClient:
        client = PersonaClient.open(bundle, trusted_keys=self.app_keys if app_keys is None else app_keys,
                                    store=self.store_path,
                                    key_provider=MemoryKeyProvider(self.master_key),
                                    clock=Clock(self.now))
        self.opened.append(client)
        return client

    def persisted(self) -> tuple[bytes | None, bytes | None]:
        """(trusted version record, trusted keys record), read with every client closed."""
        with EncryptedStore.open(self.store_path, MemoryKeyProvider(self.master_key)) as store:
            return store.get(EncryptedStore.GLOBAL, "trusted_version"), \
                store.get(EncryptedStore.GLOBAL, "trusted_keys")

    def copy_to(self, folder: Path) -> Device:
        shutil.copytree(self.folder, folder)
        return Device(folder, self.master_key, list(self.app_keys), self.now)


@pytest.fixture(scope="session")
def new_signing_key() -> Ed25519PrivateKey:
    """The key the original signing key rotates to."""
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def rotation_statement(signing_key: Ed25519PrivateKey, new_signing_key: Ed25519PrivateKey,
                       bundle_now: datetime) -> bytes:
    """Rotation #1: original key -> new key, valid for 60 years from the test clock."""
    return build_rotation_statement(signing_key, new_signing_key, counter=1,
                                    now=bundle_now - timedelta(hours=1),
                                    valid_for=timedelta(days=365 * 60))


@pytest.fixture(scope="session")
def repository(bundle_files: Mapping[str, bytes], trained_v2: Any,
               new_signing_key: Ed25519PrivateKey) -> BundleRepository:
    """Model A (k=4, version 1's content) and model B (k=3), honest releases signed by the new key."""
    return BundleRepository({"A": bundle_files, "B": dict(trained_v2.files)}, new_signing_key)


@pytest.fixture(scope="session")
def device_template(tmp_path_factory: pytest.TempPathFactory, bundle_files: Mapping[str, bytes],
                    public_key: bytes, rotation_statement: bytes, repository: BundleRepository,
                    bundle_now: datetime) -> Device:
    """A device at version 3 after rotation #1 (see the module docstring); never opened by tests."""
    device = Device(tmp_path_factory.mktemp("device") / "template", bytes(range(32)),
                    [public_key], bundle_now.timestamp())
    device.folder.mkdir()
    with device.open(dict(bundle_files)) as client:
        for offset, (event, value) in enumerate(DEVICE_EVENTS):
            client.track(event, value, at=device.now - 3600 + offset,
                         properties={"category": "books"} if event == "view" else None)
        client.rotate_key(rotation_statement)
        client.update(repository.release(2, model="B"))
        assert client.update(repository.release(ACTIVE_VERSION)) == ACTIVE_VERSION
    return device


@pytest.fixture
def device(device_template: Device, tmp_path: Path) -> Iterator[Device]:
    """A fresh copy of the device template; clients left open are closed afterwards."""
    copy = device_template.copy_to(tmp_path / "device")
    yield copy
    for client in copy.opened:
        client.close()


@pytest.fixture
def record_rejected_attack(request: pytest.FixtureRequest) -> Any:
    """Count an attack as rejected with the trusted state unchanged (for the summary line)."""
    results = request.config.stash.setdefault(_RESULTS, [])
    return results.append


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print "N/M attacks rejected, trusted state unchanged" when the attack table ran."""
    from .test_attack_table import ATTACKS

    results = config.stash.get(_RESULTS, [])
    if results:
        terminalreporter.write_line(
            f"attack table: {len(set(results))}/{len(ATTACKS)} attacks rejected,"
            " trusted state unchanged")
