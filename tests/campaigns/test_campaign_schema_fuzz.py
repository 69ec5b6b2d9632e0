"""Campaign 6: schemathesis against the collector's OpenAPI schema on loopback.

The collector app (real bundles folder, SQLite store, the real clock) runs
under uvicorn on 127.0.0.1; schemathesis loads ``/openapi.json`` from it and
generates requests for every operation. Every response must pass
schemathesis' checks: no 5xx, a documented status code, a documented content
type and headers, and a body matching the schema of that status. One check is
left out: ``positive_data_acceptance`` expects a 2xx for any schema-valid
request, but the schema of a sync body is "binary" and random bytes are not
sealed envelopes, so the documented 400 is the right answer there.

Needs ``schemathesis`` (the test extra; skipped without it). Sizes: short 25
examples per operation (derandomized, as every property test here), long 500::

    EDGEPERSONA_CAMPAIGN=long HYPOTHESIS_PROFILE=explore python -m pytest \\
        tests/campaigns/test_campaign_schema_fuzz.py

or against a running ``edgepersona serve --port 8787`` with the CLI::

    schemathesis run http://127.0.0.1:8787/openapi.json --max-examples 1000 \\
        --exclude-checks positive_data_acceptance
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from campaign_testkit import APP, CollectorFiles, sized
from hypothesis import HealthCheck, settings

from edgepersona.sdk.protocol.envelope import generate_collector_keypair
from edgepersona.trainer.collector import CollectorConfig, LoopbackServer, SqliteAggregateStore, create_app

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra")
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402 - after importorskip

EXAMPLES = sized(25, 500)  # per operation
OPERATIONS = {"/v1/sync", "/v1/bundles", "/v1/bundles/latest", "/v1/bundles/{version}", "/healthz",
              "/v1/metrics"}


def collector_openapi() -> dict[str, Any]:
    """The collector's OpenAPI document; it depends on no key, bundle or database."""
    private, _ = generate_collector_keypair()
    store = SqliteAggregateStore(":memory:")
    try:
        app = create_app(CollectorConfig(app_id=APP, model_versions=frozenset({1})),
                         collector_private_key=private, store=store)
        document: dict[str, Any] = app.openapi()
    finally:
        store.close()
    return document


# Loaded eagerly: schemathesis.pytest.from_fixture (the lazy loader) fails on pytest 9
# ("'Function' object has no attribute '_nodeid'"); the server it calls is the fixture below.
schema = schemathesis.openapi.from_dict(collector_openapi())


@pytest.fixture(scope="module")
def collector_url(collector_files: CollectorFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = SqliteAggregateStore(tmp_path_factory.mktemp("schema-fuzz") / "collector.db")
    app = create_app(CollectorConfig(app_id=APP, bundles_dir=collector_files.bundles),
                     collector_private_key=collector_files.private, store=store)
    with LoopbackServer(app) as server:
        yield server.url
    store.close()


def test_the_fuzzed_schema_is_the_served_one_and_covers_every_operation(collector_url: str) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{collector_url}/openapi.json", timeout=10) as reply:
        served = json.loads(reply.read())
    assert served == collector_openapi()
    assert set(served["paths"]) == OPERATIONS


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_collector_response_matches_its_schema_and_none_is_a_server_error(
        case: Any, collector_url: str) -> None:
    case.call_and_validate(base_url=collector_url, excluded_checks=[positive_data_acceptance])
