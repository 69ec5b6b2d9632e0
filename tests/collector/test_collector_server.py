"""The real thing: uvicorn on a loopback port, and the ``edgepersona serve`` command."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from collector_testkit import APP, OCTETS, CollectorKeys, FakeClock, TestClient, contribution
from fastapi import FastAPI

from edgepersona.sdk import Sealer, day_bucket
from edgepersona.trainer.cli import main
from edgepersona.trainer.collector import (
    CollectorConfig,
    SqliteAggregateStore,
    create_app,
    encode_batch,
    issue_admission_token,
)
from edgepersona.trainer.release.keys import generate_collector_key, generate_signing_key, load_signing_key

DEADLINE = 10.0  # seconds for the server to start or stop


def fetch(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=OCTETS if body is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_uvicorn_on_loopback_serves_sync_bundles_and_metrics(
        tmp_path: Path, sealer: Sealer, collector_keys: CollectorKeys, shared_bundles: Path) -> None:
    store = SqliteAggregateStore(tmp_path / "collector.db")
    app = create_app(CollectorConfig(app_id=APP, bundles_dir=shared_bundles),
                     collector_private_key=collector_keys.private, store=store, clock=FakeClock())
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    # An ephemeral port bound before the server starts (no race). IPPROTO_TCP as uvicorn's own
    # sockets have it: asyncio sets TCP_NODELAY only then (else each response waits ~40 ms).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        while not server.started and time.monotonic() - started < DEADLINE:
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        one = sealer.seal(contribution(sequence=1))
        assert fetch(f"{base}/v1/sync", one)[0] == 200
        status, raw = fetch(f"{base}/v1/sync", encode_batch([one, sealer.seal(contribution(sequence=2))]))
        assert status == 200
        assert [r["status"] for r in json.loads(raw)["results"]] == ["duplicate", "accepted"]
        assert fetch(f"{base}/v1/sync", one[:-1] + bytes([one[-1] ^ 1]))[0] == 400
        status, archive = fetch(f"{base}/v1/bundles/latest")
        assert status == 200 and archive.startswith(b"PK")
        assert fetch(f"{base}/v1/bundles/3")[0] == 404
        counts = json.loads(fetch(f"{base}/v1/metrics")[1])
        assert (counts["accepted"], counts["duplicate"], counts["rejected"]["invalid_envelope"]) == (2, 1, 1)
        assert json.loads(fetch(f"{base}/healthz")[1]) == {"status": "ok"}
    finally:
        server.should_exit = True
        thread.join(DEADLINE)
        listener.close()
        store.close()
    assert not thread.is_alive()


def test_serve_command_wires_store_key_and_bundles(tmp_path: Path, shared_bundles: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys"
    _, public = generate_collector_key(keys)
    seen: dict[str, Any] = {}

    def fake_run(app: FastAPI, **options: Any) -> None:  # drive the app instead of listening
        device = Sealer(public.read_bytes(), app_id="com.example.cli")
        today = day_bucket(time.time())
        response = TestClient(app).post("/v1/sync", headers=OCTETS,
                                        content=device.seal(contribution(day_bucket=today)))
        seen.update(options, status=response.status_code, body=response.json())

    monkeypatch.setattr(uvicorn, "run", fake_run)
    db = tmp_path / "collector.db"
    code = main(["serve", "--db", f"sqlite:///{db}", "--collector-key", str(keys), "--bundles",
                 str(shared_bundles), "--app-id", "com.example.cli", "--port", "8799"])
    assert code == 0
    assert (seen["status"], seen["body"]["accepted"]) == (200, 1)
    assert (seen["host"], seen["port"], seen["access_log"]) == ("127.0.0.1", 8799, False)
    reopened = SqliteAggregateStore(db)
    assert reopened.aggregates(1)[2].count == 1
    reopened.close()


def test_serve_command_reports_a_bad_database_url(tmp_path: Path, shared_bundles: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    generate_collector_key(keys)
    code = main(["serve", "--db", "mysql://db/collector", "--collector-key", str(keys),
                 "--bundles", str(shared_bundles)])
    assert code == 1
    assert "expected sqlite:///PATH" in capsys.readouterr().err


def test_serve_command_requires_admission_and_takes_the_quota_and_k_min(
        tmp_path: Path, shared_bundles: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys"
    _, public = generate_collector_key(keys)
    _, backend_public, _ = generate_signing_key(tmp_path / "backend")
    seen: dict[str, Any] = {}

    def fake_run(app: FastAPI, **options: Any) -> None:  # drive the app instead of listening
        device = Sealer(public.read_bytes(), app_id=APP)
        envelope = device.seal(contribution(day_bucket=day_bucket(time.time())))
        token = issue_admission_token(load_signing_key(tmp_path / "backend"), app_id=APP, quota=1,
                                      now=time.time())
        client = TestClient(app)
        seen["config"] = app.state.collector.config
        seen["without"] = client.post("/v1/sync", headers=OCTETS, content=envelope)
        seen["with"] = client.post("/v1/sync", content=envelope,
                                   headers={**OCTETS, "Authorization": f"Bearer {token}"})

    monkeypatch.setattr(uvicorn, "run", fake_run)
    code = main(["serve", "--db", f"sqlite:///{tmp_path / 'c.db'}", "--collector-key", str(keys),
                 "--bundles", str(shared_bundles), "--app-id", APP, "--require-admission",
                 str(backend_public), "--pseudonym-daily-quota", "0", "--k-min", "7"])
    assert code == 0
    assert (seen["config"].pseudonym_daily_quota, seen["config"].k_min) == (None, 7)
    assert seen["without"].status_code == 401
    assert seen["without"].headers["www-authenticate"].startswith("Bearer")
    assert seen["without"].json()["reason"] == "admission_required"
    assert (seen["with"].status_code, seen["with"].json()["accepted"]) == (200, 1)
