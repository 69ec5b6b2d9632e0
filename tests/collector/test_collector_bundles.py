"""Bundle endpoints: only approved bundles are served; latest is the highest approved."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from collector_testkit import APP, MODEL_ID, CollectorKeys, FakeClock, TestClient, contribution, post
from fastapi import FastAPI

from edgepersona.sdk import Sealer
from edgepersona.sdk.protocol.bundle import bundle_source, verify_bundle
from edgepersona.sdk.protocol.trust import TrustedKeys
from edgepersona.trainer.collector import (
    BundleShelf,
    CollectorConfig,
    SqliteAggregateStore,
    create_app,
)
from edgepersona.trainer.release.export import write_bundle, zip_bundle


@pytest.fixture
def live(bundles_dir: Path, collector_keys: CollectorKeys, store: SqliteAggregateStore,
         clock: FakeClock) -> TestClient:
    """A client over a bundles folder the test may change."""
    return TestClient(create_app(CollectorConfig(app_id=APP, bundles_dir=bundles_dir),
                                 collector_private_key=collector_keys.private, store=store, clock=clock))


def served_version(client: TestClient, path: str) -> int | None:
    response = client.get(path)
    if response.status_code == 404:
        assert response.json()["reason"] == "not_found"
        return None
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert "manifest.json" in archive.namelist()
    return int(response.headers["x-edgepersona-model-version"])


def test_only_approved_bundles_are_served(client: TestClient, shared_bundles: Path) -> None:
    assert served_version(client, "/v1/bundles/latest") == 2
    assert served_version(client, "/v1/bundles/1") == 1
    assert served_version(client, "/v1/bundles/2") == 2
    assert served_version(client, "/v1/bundles/3") is None  # NEEDS_REVIEW beside it
    assert served_version(client, "/v1/bundles/4") is None
    assert client.get("/v1/bundles").json() == {"versions": [1, 2], "latest": 2}
    assert client.get("/v1/bundles/0").status_code == 422
    archive = client.get("/v1/bundles/1")
    assert archive.content == (shared_bundles / f"{MODEL_ID}-v1.zip").read_bytes()
    assert archive.headers["x-edgepersona-model-id"] == MODEL_ID


def test_a_served_folder_bundle_verifies_on_a_device(client: TestClient, public_key: bytes,
                                                     bundle_now: datetime) -> None:
    data = client.get("/v1/bundles/2").content
    verified = verify_bundle(bundle_source(data), TrustedKeys([public_key]), now=bundle_now)
    assert verified.manifest.version == 2
    assert client.get("/v1/bundles/2").content == data  # the same archive every time


def test_approval_and_holds_take_effect_on_the_next_request(live: TestClient, bundles_dir: Path,
                                                            sealer: Sealer) -> None:
    held = sealer.seal(contribution(model_version=3))
    assert post(live, held).json()["results"][0]["reason"] == "unknown_model_version"
    (bundles_dir / f"{MODEL_ID}-v3.NEEDS_REVIEW").unlink()  # `edgepersona approve`
    assert served_version(live, "/v1/bundles/latest") == 3
    assert post(live, held).json()["accepted"] == 1
    (bundles_dir / f"{MODEL_ID}-v3.zip.REJECTED").write_text("")
    (bundles_dir / f"{MODEL_ID}-v2" / "NEEDS_REVIEW").write_text("")
    assert served_version(live, "/v1/bundles/latest") == 1
    assert live.get("/v1/metrics").json()["accepted_versions"] == [1]


def test_etag_and_not_modified(client: TestClient) -> None:
    first = client.get("/v1/bundles/latest")
    etag = first.headers["etag"]
    again = client.get("/v1/bundles/latest", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/v1/bundles/1", headers={"if-none-match": etag}).status_code == 200


def test_conflicting_or_mislabelled_bundles_are_not_served(
        bundles_dir: Path, versioned_bundles: dict[int, dict[str, bytes]],
        caplog: pytest.LogCaptureFixture) -> None:
    zip_bundle(versioned_bundles[1], bundles_dir / "other-model-v1.zip")  # claims v1 too
    zip_bundle(versioned_bundles[2], bundles_dir / f"{MODEL_ID}-v7.zip")  # manifest says v2
    (bundles_dir / f"{MODEL_ID}-v8.zip").write_bytes(b"not a zip")
    (bundles_dir / "notes.txt").write_text("ignored")
    approved = BundleShelf(bundles_dir).approved()
    assert sorted(approved) == [2]
    assert "claimed by model ids" in caplog.text and "manifest says" in caplog.text


def test_an_archive_wins_over_a_folder_of_the_same_name(
        bundles_dir: Path, versioned_bundles: dict[int, dict[str, bytes]]) -> None:
    zip_bundle(versioned_bundles[2], bundles_dir / f"{MODEL_ID}-v2.zip")
    write_bundle(bundles_dir / f"{MODEL_ID}-v1", versioned_bundles[1])
    approved = BundleShelf(bundles_dir).approved()
    assert approved[2].path.name == f"{MODEL_ID}-v2.zip"
    assert approved[1].path.name == f"{MODEL_ID}-v1.zip"
    assert (approved[1].shape.personas, len(approved[1].shape.lower)) == (4, 6)


def test_a_missing_bundles_folder_is_an_error(make_app: Callable[..., FastAPI], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        make_app(bundles_dir=tmp_path / "nope")
