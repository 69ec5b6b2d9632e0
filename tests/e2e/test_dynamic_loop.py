"""The dynamic-persona loop end to end: real HTTP, real collector, refit, update, no leaks."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from edgepersona.sdk import PersonaRuntime
from edgepersona.sdk.protocol.envelope import Opener
from edgepersona.sdk.protocol.framing import decode_batch
from edgepersona.trainer.collector import CollectorConfig, LoopbackServer, create_app, open_store
from edgepersona.trainer.release.dynamic_loop import APP_ID, LoopResult, SimulatedClock, run_dynamic_loop


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoopResult, list[str]]:
    logs: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logs.append(self.format(record))

    handler = Keep(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        result = run_dynamic_loop(tmp_path_factory.mktemp("loop"), customers=240, say=logs.append)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return result, logs


def opened_contributions(result: LoopResult) -> list[tuple[int, int, np.ndarray]]:
    opener = Opener((result.work / "keys" / "collector_key.pem").read_bytes())
    out = []
    for body in result.bodies:
        for envelope in decode_batch(body):
            c = opener.open(envelope, app_id=APP_ID)
            out.append((c.model_version, c.persona_index, np.array(c.features)))
    return out


def test_at_least_200_devices_synced_twice_and_updated(loop: tuple[LoopResult, list[str]]) -> None:
    result, _ = loop
    assert result.devices >= 200
    assert result.synced == {"accepted": 2 * result.devices, "duplicates": 0, "rejected": 0}
    assert result.v2 is not None and result.v2.version == result.v1.version + 1
    assert len(result.after) == result.devices


def test_aggregates_equal_the_sum_of_accepted_contributions(loop: tuple[LoopResult, list[str]]
                                                            ) -> None:
    result, _ = loop
    expected: dict[int, list[np.ndarray]] = defaultdict(list)
    for version, persona, features in opened_contributions(result):
        assert version == 1
        expected[persona].append(features)
    store = open_store(f"sqlite:///{result.db_path}")
    try:
        cells = store.aggregates(1)
    finally:
        store.close()
    assert sorted(cells) == sorted(expected)
    for persona, rows in expected.items():
        stacked = np.vstack(rows)
        assert cells[persona].count == len(rows)
        np.testing.assert_allclose(cells[persona].sums, stacked.sum(axis=0), rtol=1e-12)
        np.testing.assert_allclose(cells[persona].sumsq, (stacked**2).sum(axis=0), rtol=1e-12)


def test_replayed_and_tampered_envelopes_change_nothing(loop: tuple[LoopResult, list[str]]) -> None:
    result, _ = loop
    store = open_store(f"sqlite:///{result.db_path}")
    try:
        before = {p: (a.count, a.sums.tolist()) for p, a in store.aggregates(1).items()}
        # The collector's clock at the last sync, so the replayed day buckets are in the window.
        last_day = max(c.day_bucket for c in store.daily_aggregates(1))
        app = create_app(CollectorConfig(app_id=APP_ID, bundles_dir=result.work / "bundles",
                                         model_versions=frozenset({1, 2})),
                         collector_private_key=(result.work / "keys" / "collector_key.pem").read_bytes(),
                         store=store, clock=SimulatedClock(last_day * 86_400.0 + 3600))
        with LoopbackServer(app) as server:
            replies = []
            body = result.bodies[-1]
            tampered = body[:-1] + bytes([body[-1] ^ 0x01])
            for data in (body, tampered):
                request = urllib.request.Request(f"{server.url}/v1/sync", data=data, method="POST",
                                                 headers={"Content-Type": "application/octet-stream"})
                with urllib.request.urlopen(request, timeout=10) as reply:
                    replies.append(reply.read())
        replayed, broken = (json.loads(r) for r in replies)
        assert replayed["accepted"] == 0 and replayed["duplicate"] == len(decode_batch(body))
        assert broken["accepted"] == 0 and broken["results"][-1]["status"] == "rejected"
        after = {p: (a.count, a.sums.tolist()) for p, a in store.aggregates(1).items()}
    finally:
        store.close()
    assert after == before


def test_persona_ids_stay_stable(loop: tuple[LoopResult, list[str]]) -> None:
    result, _ = loop
    assert result.v2 is not None and result.drift is not None
    old_ids = {p.id for p in result.v1.personas}
    assert set(result.v2.id_map) <= old_ids
    for pid, move in zip(result.drift.ids, result.drift.moves, strict=True):
        assert result.v2.id_map[pid] == pid
        if move < result.drift.threshold:
            assert pid in {p.id for p in result.v2.personas}
    runtime = PersonaRuntime.open(result.work / "bundles" / "retail-personas-v2",
                                  trusted_keys=[(result.work / "keys" / "signing_key.pub.pem").read_bytes()],
                                  now=result.v2.created_at)
    assert runtime.version == 2


def test_no_raw_id_leaves_a_device_or_reaches_the_collector(loop: tuple[LoopResult, list[str]]
                                                            ) -> None:
    result, logs = loop
    wire = b"".join(result.bodies)
    stored = b"".join(p.read_bytes() for p in result.work.glob("collector.db*"))
    text = "\n".join(logs).encode()
    assert result.raw_ids
    for raw in result.raw_ids:
        token = raw.encode()
        assert token not in wire
        assert token not in stored
        assert token not in text


def test_quickstart_dynamic_runs_the_loop_from_the_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgepersona.trainer.cli import main

    work = tmp_path / "demo"
    assert main(["quickstart", "--dynamic", "--dir", str(work), "--customers", "120"]) == 0
    out = capsys.readouterr().out
    assert "pulled and verified v2" in out and "Drift v1" in out
    assert (work / "bundles" / "retail-personas-v2").is_dir()
    assert not (work / "bundles" / "retail-personas-v2.NEEDS_REVIEW").exists()  # approved
