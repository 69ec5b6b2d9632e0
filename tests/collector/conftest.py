"""Fixtures for the collector tests: keys, a sealer, a bundles folder, a fake clock, an app.

The bundles folder holds the session's trained test bundle as version 1 (an
archive), re-signed copies as version 2 (a bundle folder) and version 3 (an
archive held back by a ``NEEDS_REVIEW`` marker), so the accepted versions are
{1, 2} and the latest served version is 2.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from collector_testkit import APP, ASSIGNER, MODEL_ID, CollectorKeys, FakeClock, TestClient
from fastapi import FastAPI

from edgepersona.sdk import Sealer
from edgepersona.sdk.protocol.envelope import generate_collector_keypair
from edgepersona.sdk.protocol.manifest import parse_manifest
from edgepersona.trainer.collector import CollectorConfig, SqliteAggregateStore, create_app
from edgepersona.trainer.release.export import write_bundle, zip_bundle


@pytest.fixture(scope="session", autouse=True)
def test_bundle_assigner(bundle_files: Mapping[str, bytes]) -> None:
    """Give collector_testkit the test bundle's assigner, for consistent contributions."""
    if not ASSIGNER:
        ASSIGNER.append(parse_manifest(bundle_files["manifest.json"]).assigner)


@pytest.fixture(scope="session")
def collector_keys() -> CollectorKeys:
    private, public = generate_collector_keypair()
    return CollectorKeys(private, public)


@pytest.fixture(scope="session")
def sealer(collector_keys: CollectorKeys) -> Sealer:
    return Sealer(collector_keys.public, app_id=APP)


@pytest.fixture(scope="session")
def versioned_bundles(bundle_files: Mapping[str, bytes], resign_bundle: Callable[..., dict[str, bytes]]
                      ) -> dict[int, dict[str, bytes]]:
    """The test bundle as versions 1, 2 and 3 (re-signed with the trusted key)."""
    def as_version(version: int) -> dict[str, bytes]:
        return resign_bundle(bundle_files, edit=lambda fields: fields.update(version=version))

    return {1: dict(bundle_files), 2: as_version(2), 3: as_version(3)}


def fill_bundles(root: Path, bundles: Mapping[int, Mapping[str, bytes]]) -> Path:
    """Lay out v1 as an archive, v2 as a folder, v3 as an archive awaiting review."""
    root.mkdir(parents=True, exist_ok=True)
    zip_bundle(bundles[1], root / f"{MODEL_ID}-v1.zip")
    write_bundle(root / f"{MODEL_ID}-v2", bundles[2])
    zip_bundle(bundles[3], root / f"{MODEL_ID}-v3.zip")
    (root / f"{MODEL_ID}-v3.NEEDS_REVIEW").write_text("drift over the gate\n")
    return root


@pytest.fixture(scope="session")
def shared_bundles(tmp_path_factory: pytest.TempPathFactory,
                   versioned_bundles: dict[int, dict[str, bytes]]) -> Path:
    """A bundles folder for tests that only read it."""
    return fill_bundles(tmp_path_factory.mktemp("bundles"), versioned_bundles)


@pytest.fixture
def bundles_dir(tmp_path: Path, shared_bundles: Path) -> Path:
    """A private copy of the bundles folder, for tests that change it."""
    return Path(shutil.copytree(shared_bundles, tmp_path / "bundles"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteAggregateStore]:
    db = SqliteAggregateStore(tmp_path / "collector.db")
    yield db
    db.close()


@pytest.fixture
def make_app(collector_keys: CollectorKeys, shared_bundles: Path, store: SqliteAggregateStore,
             clock: FakeClock) -> Callable[..., FastAPI]:
    """Build an app over the test store and clock; keyword arguments change the config."""
    def build(**changes: Any) -> FastAPI:
        options: dict[str, Any] = {"app_id": APP, "bundles_dir": shared_bundles, **changes}
        return create_app(CollectorConfig(**options), collector_private_key=collector_keys.private,
                          store=store, clock=clock)

    return build


@pytest.fixture
def client(make_app: Callable[..., FastAPI]) -> TestClient:
    return TestClient(make_app())
