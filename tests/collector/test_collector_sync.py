"""POST /v1/sync: acceptance, exactly-once counting, every rejection, batches, metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from collector_testkit import (
    APP,
    ASSIGNER,
    LOWER,
    OCTETS,
    TODAY,
    UPPER,
    CollectorKeys,
    FakeClock,
    TestClient,
    cells,
    contribution,
    persona_of,
    post,
    pseudonym_of,
)
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings, strategies as st

from edgepersona.sdk import Sealer
from edgepersona.sdk.protocol.envelope import generate_collector_keypair
from edgepersona.trainer.collector import (
    CollectorConfig,
    SqliteAggregateStore,
    create_app,
    encode_batch,
    nearest_personas,
)

QUOTA = CollectorConfig(app_id=APP, model_versions=frozenset({1})).pseudonym_daily_quota or 0


def tampered(envelope: bytes, offset: int = -1) -> bytes:
    flipped = bytearray(envelope)
    flipped[offset] ^= 0x01
    return bytes(flipped)


def metrics(client: TestClient) -> dict[str, Any]:
    response = client.get("/v1/metrics")
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def test_one_envelope_is_added_to_its_cell(client: TestClient, sealer: Sealer,
                                           store: SqliteAggregateStore) -> None:
    item = contribution()
    response = post(client, sealer.seal(item))
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "duplicate": 0, "rejected": 0, "retry": 0,
                               "results": [{"index": 0, "status": "accepted", "reason": None}]}
    [cell] = store.daily_aggregates(1)
    assert (cell.day_bucket, cell.persona_index, cell.aggregate.count) == (TODAY, 2, 1)
    assert cell.aggregate.sums.tolist() == list(item.features)
    assert cell.aggregate.sumsq.tolist() == [x * x for x in item.features]


def test_a_replay_is_acknowledged_and_counted_once(client: TestClient, sealer: Sealer,
                                                   store: SqliteAggregateStore) -> None:
    item = contribution()
    envelope = sealer.seal(item)
    assert post(client, envelope).json()["accepted"] == 1
    again = post(client, envelope)
    resealed = post(client, sealer.seal(item))  # other bytes, same (pseudonym, sequence)
    for response in (again, resealed):
        assert response.status_code == 200
        assert response.json()["results"] == [{"index": 0, "status": "duplicate", "reason": None}]
    assert store.aggregates(1)[2].count == 1
    assert store.dedupe_size() == 1
    assert (metrics(client)["accepted"], metrics(client)["duplicate"]) == (1, 2)


def test_same_sequence_of_another_device_is_not_a_replay(client: TestClient, sealer: Sealer,
                                                         store: SqliteAggregateStore) -> None:
    post(client, sealer.seal(contribution()))
    other = post(client, sealer.seal(contribution(pseudonym=pseudonym_of(1))))
    assert other.json()["accepted"] == 1
    assert store.aggregates(1)[2].count == 2


def _other_key_envelope() -> bytes:
    return Sealer(generate_collector_keypair()[1], app_id=APP).seal(contribution())


Make = Callable[[Sealer, bytes], bytes]  # (session sealer, collector public key) -> body
REJECTIONS: dict[str, tuple[Make, int, str]] = {
    "tampered ciphertext": (lambda s, _: tampered(s.seal(contribution())), 400, "invalid_envelope"),
    "tampered header": (lambda s, _: tampered(s.seal(contribution()), 9), 400, "invalid_envelope"),
    "truncated": (lambda s, _: s.seal(contribution())[:-20], 400, "invalid_envelope"),
    "wrong key": (lambda s, _: _other_key_envelope(), 400, "invalid_envelope"),
    "other app id": (lambda _, public: Sealer(public, app_id="com.example.other").seal(contribution()),
                     400, "invalid_envelope"),
    "garbage": (lambda s, _: b"EP\x01" + bytes(300), 400, "invalid_envelope"),
    "unknown version": (lambda s, _: s.seal(contribution(model_version=9)), 422,
                        "unknown_model_version"),
    "held-back version": (lambda s, _: s.seal(contribution(model_version=3)), 422,
                          "unknown_model_version"),
    "stale day": (lambda s, _: s.seal(contribution(day_bucket=TODAY - 7)), 422, "stale_day_bucket"),
    "future day": (lambda s, _: s.seal(contribution(day_bucket=TODAY + 2)), 422, "future_day_bucket"),
    "unknown persona": (lambda s, _: s.seal(contribution(persona_index=4)), 422, "unknown_persona"),
    "five features": (lambda s, _: s.seal(contribution(features=(1.0,) * 5)), 422,
                      "wrong_feature_count"),
    "over a bound": (lambda s, _: s.seal(contribution(features=(*UPPER[:5], UPPER[5] + 0.5))), 422,
                     "features_out_of_bounds"),
    "under a bound": (lambda s, _: s.seal(contribution(features=(-1e-9, *LOWER[1:]))), 422,
                      "features_out_of_bounds"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_rejections_leave_aggregates_and_ledger_unchanged(
        case: str, client: TestClient, sealer: Sealer, collector_keys: CollectorKeys,
        store: SqliteAggregateStore) -> None:
    post(client, sealer.seal(contribution(sequence=99)))  # one accepted cell to compare against
    before, ledger = cells(store), store.dedupe_size()
    make, status, reason = REJECTIONS[case]
    response = post(client, make(sealer, collector_keys.public))
    assert response.status_code == status
    assert response.json()["results"] == [{"index": 0, "status": "rejected", "reason": reason}]
    assert cells(store) == before
    assert store.dedupe_size() == ledger
    assert metrics(client)["rejected"][reason] == 1


def test_day_window_edges(client: TestClient, sealer: Sealer) -> None:
    """Today and the 6 days before it, and tomorrow, are inside a 7-day window."""
    outcomes = {}
    for sequence, day in enumerate([TODAY - 7, TODAY - 6, TODAY, TODAY + 1, TODAY + 2]):
        response = post(client, sealer.seal(contribution(sequence=sequence, day_bucket=day)))
        outcomes[day - TODAY] = response.json()["results"][0]["reason"] or "accepted"
    assert outcomes == {-7: "stale_day_bucket", -6: "accepted", 0: "accepted", 1: "accepted",
                        2: "future_day_bucket"}


def test_oversize_bodies_get_413(client: TestClient, sealer: Sealer,
                                                   make_app: Callable[..., FastAPI]) -> None:
    small = TestClient(make_app(max_body_bytes=1024))
    envelopes = [sealer.seal(contribution(sequence=n)) for n in range(8)]  # ~245 bytes each
    declared = post(small, encode_batch(envelopes))
    streamed = small.post("/v1/sync", content=iter([encode_batch(envelopes)]), headers=OCTETS)
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["reason"] == "body_too_large"
    assert post(small, encode_batch(envelopes[:3])).json()["accepted"] == 3
    assert metrics(small)["rejected"]["body_too_large"] == 2
    default_limit = post(client, bytes(65_537))
    assert default_limit.status_code == 413


def test_other_media_types_get_415(client: TestClient, sealer: Sealer) -> None:
    response = client.post("/v1/sync", content=sealer.seal(contribution()),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert response.json()["reason"] == "unsupported_media_type"
    assert metrics(client)["accepted"] == 0


@pytest.mark.parametrize("body", [b"", b"EPB", b"EPB\x02\x00\x01", b"EPB\x01\x00\x00",
                                  b"EPB\x01\x00\x01\x00\x00\x00\x05abc",
                                  encode_batch([b"x"]) + b"trailing"])
def test_malformed_bodies_get_400(client: TestClient, body: bytes) -> None:
    response = post(client, body)
    assert response.status_code == 400
    assert response.json()["reason"] == "malformed_body"


def test_too_many_envelopes_get_413(make_app: Callable[..., FastAPI], sealer: Sealer,
                                    store: SqliteAggregateStore) -> None:
    small = TestClient(make_app(max_batch_envelopes=4))
    envelopes = [sealer.seal(contribution(sequence=n)) for n in range(5)]
    response = post(small, encode_batch(envelopes))
    assert (response.status_code, response.json()["reason"]) == (413, "too_many_envelopes")
    assert store.dedupe_size() == 0


def test_a_mixed_batch_lists_each_envelope(client: TestClient, sealer: Sealer,
                                           store: SqliteAggregateStore) -> None:
    first = sealer.seal(contribution(sequence=1))
    batch = [first, tampered(sealer.seal(contribution(sequence=2))),
             sealer.seal(contribution(sequence=3, day_bucket=TODAY - 30)), first,
             sealer.seal(contribution(sequence=4, model_version=7)),
             sealer.seal(contribution(sequence=5, persona_index=0, model_version=2))]
    response = post(client, encode_batch(batch))
    assert response.status_code == 200
    body = response.json()
    assert [(r["status"], r["reason"]) for r in body["results"]] == [
        ("accepted", None), ("rejected", "invalid_envelope"), ("rejected", "stale_day_bucket"),
        ("duplicate", None), ("rejected", "unknown_model_version"), ("accepted", None)]
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 1, 3)
    assert store.aggregates(1)[2].count == 1
    assert store.aggregates(2)[0].count == 1


def test_metrics_count_every_outcome(client: TestClient, sealer: Sealer) -> None:
    good = sealer.seal(contribution())
    post(client, encode_batch([good, good, sealer.seal(contribution(sequence=2, day_bucket=0))]))
    post(client, good)
    post(client, tampered(good))
    post(client, b"EPB")
    data = metrics(client)
    assert (data["accepted"], data["duplicate"]) == (1, 2)
    assert {k: v for k, v in data["rejected"].items() if v} == {
        "stale_day_bucket": 1, "invalid_envelope": 1, "malformed_body": 1}
    assert data["ledger_keys"] == 1
    assert data["accepted_versions"] == [1, 2]


def test_dedupe_keys_expire_with_the_window(client: TestClient, sealer: Sealer, clock: FakeClock,
                                            store: SqliteAggregateStore) -> None:
    old = sealer.seal(contribution(sequence=1, day_bucket=TODAY - 6))
    new = sealer.seal(contribution(sequence=2, day_bucket=TODAY + 1))
    post(client, encode_batch([old, new]))
    assert store.dedupe_size() == 2
    clock.advance_days(1)
    post(client, sealer.seal(contribution(sequence=3, day_bucket=TODAY + 1)))  # purge on write
    assert store.dedupe_size() == 2  # the old key went, the new one came
    assert post(client, old).json()["results"][0]["reason"] == "stale_day_bucket"
    assert post(client, new).json()["results"][0]["status"] == "duplicate"
    clock.advance_days(7)
    post(client, sealer.seal(contribution(sequence=4, day_bucket=TODAY + 8)))
    assert store.dedupe_size() == 1
    assert store.aggregates(1)[2].count == 4


def test_configured_versions_without_bundles(collector_keys: CollectorKeys, sealer: Sealer,
                                             store: SqliteAggregateStore, clock: FakeClock) -> None:
    app = create_app(CollectorConfig(app_id=APP, model_versions=frozenset({5})),
                     collector_private_key=collector_keys.private, store=store, clock=clock)
    client = TestClient(app)
    wide = post(client, sealer.seal(contribution(model_version=5, persona_index=40)))
    narrow = post(client, sealer.seal(contribution(model_version=5, sequence=2, features=(1.0, 2.0))))
    unknown = post(client, sealer.seal(contribution(model_version=1, sequence=3)))
    assert wide.json()["accepted"] == 1  # no bundle: persona and bounds are not known
    assert narrow.json()["results"][0]["reason"] == "wrong_feature_count"  # the stored width wins
    assert unknown.json()["results"][0]["reason"] == "unknown_model_version"
    assert client.get("/v1/bundles/latest").status_code == 404


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) >= {"/v1/sync", "/v1/bundles/latest", "/v1/bundles/{version}",
                                    "/healthz", "/v1/metrics"}
    body = schema["paths"]["/v1/sync"]["post"]["requestBody"]["content"]
    assert list(body) == ["application/octet-stream"]


# --- the property: aggregates are exactly the sums of the accepted contributions -------------

ENVELOPE = st.tuples(
    st.integers(0, 3),  # device
    st.sampled_from([None, None, 0, 1, 2, 3]),  # persona claimed (None: the one the features give)
    st.integers(-8, 3),  # day offset from today
    st.sampled_from([1, 1, 2, 3, 9]),  # model version (3 is held back, 9 unknown)
    st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6),  # position within the bounds
    st.sampled_from(["new", "new", "new", "replay", "tamper"]),
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(ENVELOPE, min_size=1, max_size=6), min_size=1, max_size=4))
def test_aggregates_equal_the_sum_of_accepted_contributions(
        batches: list[list[Any]], sealer: Sealer, collector_keys: CollectorKeys,
        shared_bundles: Any) -> None:
    store = SqliteAggregateStore(":memory:")
    client = TestClient(create_app(CollectorConfig(app_id=APP, bundles_dir=shared_bundles),
                                   collector_private_key=collector_keys.private, store=store,
                                   clock=FakeClock()))
    expected: dict[tuple[int, int, int], list[Any]] = {}  # (version, persona, day) -> count, sums, sumsq
    last: dict[int, tuple[bytes, Any]] = {}
    sequences = [0, 0, 0, 0]
    quota: Counter[tuple[int, int, int]] = Counter()  # accepted per (device, version, day)
    seen: set[tuple[int, int]] = set()
    for batch in batches:
        envelopes, wanted = [], []
        for device, persona, offset, version, position, action in batch:
            if action == "replay" and device in last:
                envelope, item = last[device]
            else:
                sequences[device] += 1
                features = tuple(lo + p * (hi - lo) for p, lo, hi in zip(position, LOWER, UPPER, strict=True))
                item = contribution(pseudonym=pseudonym_of(device), sequence=sequences[device],
                                    day_bucket=TODAY + offset, model_version=version,
                                    persona_index=persona_of(features) if persona is None else persona,
                                    features=features)
                envelope = sealer.seal(item)
                last[device] = (envelope, item)
            if action == "tamper":
                envelope, outcome = tampered(envelope), "invalid_envelope"
            elif item.model_version not in (1, 2):
                outcome = "unknown_model_version"
            elif not -6 <= item.day_bucket - TODAY <= 1:
                outcome = "stale_day_bucket" if item.day_bucket < TODAY else "future_day_bucket"
            elif item.persona_index not in nearest_personas(ASSIGNER[0], item.features):
                outcome = "inconsistent_persona"
            elif (device, item.sequence) in seen:
                outcome = "duplicate"
            elif quota[(device, item.model_version, item.day_bucket)] >= QUOTA:
                outcome = "quota_exceeded"
            else:
                seen.add((device, item.sequence))
                quota[(device, item.model_version, item.day_bucket)] += 1
                outcome = "accepted"
                cell = expected.setdefault((item.model_version, item.persona_index, item.day_bucket),
                                           [0, [0.0] * 6, [0.0] * 6])
                cell[0] += 1
                cell[1] = [s + x for s, x in zip(cell[1], item.features, strict=True)]
                cell[2] = [s + x * x for s, x in zip(cell[2], item.features, strict=True)]
            envelopes.append(envelope)
            wanted.append(outcome)
        results = post(client, encode_batch(envelopes)).json()["results"]
        assert [r["reason"] or r["status"] for r in results] == wanted
    stored = {(version, c.persona_index, c.day_bucket): [c.aggregate.count, c.aggregate.sums.tolist(),
                                                         c.aggregate.sumsq.tolist()]
              for version in (1, 2) for c in store.daily_aggregates(version)}
    assert stored == expected  # exact: the store adds in arrival order, as this loop does
    for version in (1, 2):
        for persona, total in store.aggregates(version).items():
            days = [v for k, v in expected.items() if k[:2] == (version, persona)]
            assert total.count == sum(d[0] for d in days)
            assert total.sums.tolist() == pytest.approx([sum(d[1][i] for d in days) for i in range(6)])
    store.close()
